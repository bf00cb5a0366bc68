"""LightningModules: a few optimizer steps on a fixed batch really lower the loss; dead codes restart."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pytorch_lightning")

from MedLVMLib.engine.config import TokenizerConfig, TransformerConfig
from MedLVMLib.training.recipe import Optim, TokenizerLoss, TransformerLoss  # noqa: E402
from MedLVMLib.training.systems import (  # noqa: E402
    TokenizerSystem,
    TransformerSystem,
    codebook_stats,
    cosine_lambda,
)


def _steps(system, batch, n: int, loss_fn):
    opt = system.configure_optimizers()["optimizer"]
    losses = []
    for _ in range(n):
        loss = loss_fn(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def test_tokenizer_steps_lower_loss_on_fixed_batch():
    torch.manual_seed(0)
    system = TokenizerSystem(TokenizerConfig.from_name("tiny"), TokenizerLoss(), Optim(lr=2e-3, warmup_steps=0), 100)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    batch = torch.stack([(torch.sin(6 * xx * (i + 1)) * yy + 1) / 2 for i in range(4)])[:, None].repeat(1, 3, 1, 1)
    losses = _steps(system, batch, 12, lambda b: system.compute_losses(b)["loss"])
    assert losses[-1] < 0.7 * losses[0]
    assert bool(system.initialised)  # codebook initialised from encoder outputs


def test_transformer_steps_lower_loss_on_fixed_batch():
    torch.manual_seed(0)
    config = TransformerConfig.from_name("tiny")
    system = TransformerSystem(config, Optim(lr=3e-3, warmup_steps=0, weight_decay=0.1), 100)
    gen = torch.Generator().manual_seed(1)
    image = torch.randint(0, config.codebook_size, (2, 64), generator=gen)
    batch = image.repeat(1, 4)  # (2, 256): the same image 4 times, so the continuation is learnable
    losses = _steps(system, batch, 10, lambda b: system.compute_loss(b)["loss"])
    assert losses[-1] < 0.8 * losses[0]
    assert int(batch.max()) < config.codebook_size


def test_dead_codes_restart_from_encoder_outputs():
    system = TokenizerSystem(TokenizerConfig.from_name("tiny"), TokenizerLoss(restart_min_usage=0.5))
    system.window.zero_()
    system.window[:4] = 100.0  # only 4 of 64 codes used
    system._recent = torch.full((10, system.model.config.embed_dim), 7.0)
    before = system.model.quantize.embedding.weight.detach().clone()
    n = system.restart_dead_codes()
    after = system.model.quantize.embedding.weight.detach()
    assert n == 60
    assert torch.equal(after[:4], before[:4]) and torch.all(after[4:] == 7.0)


def test_codebook_stats_and_schedule():
    usage, perplexity = codebook_stats(torch.tensor([5.0, 5.0, 0.0, 0.0]))
    assert usage == 0.5 and abs(perplexity - 2.0) < 1e-5
    fn = cosine_lambda(10, 110, 0.1)
    assert fn(0) == pytest.approx(0.1) and fn(9) == pytest.approx(1.0)
    assert fn(60) == pytest.approx(0.55) and fn(110) == pytest.approx(0.1) and fn(500) == pytest.approx(0.1)


def test_changed_tokens_are_those_that_differ_one_image_earlier():
    system = TransformerSystem(TransformerConfig.from_name("tiny"), tokens_per_image=2)
    tokens = torch.tensor([[1, 2, 1, 3, 4, 3]])  # images [1, 2], [1, 3], [4, 3]
    # targets are tokens 1..5; targets 2..5 have an earlier image: 1=1 (same), 3!=2, 4!=1, 3=3
    assert system.changed(tokens).tolist() == [[False, False, True, True, False]]
    assert TransformerSystem(TransformerConfig.from_name("tiny")).changed(tokens) is None


@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_change_weight_weights_the_cross_entropy(weight):
    torch.manual_seed(0)
    config = TransformerConfig.from_name("tiny")
    system = TransformerSystem(config, loss=TransformerLoss(change_weight=weight), tokens_per_image=64)
    tokens = torch.randint(0, config.codebook_size, (2, 64)).repeat(1, 3)
    tokens[:, 140:150] = (tokens[:, 140:150] + 1) % config.codebook_size  # ten codes move in the last image
    out = system.compute_loss(tokens)
    logits = system.model(tokens[:, :-1]).float()
    per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
    changed = system.changed(tokens)
    assert int(changed.sum()) == 2 * 10  # the moved codes of both rows
    expected = (per_token + (weight - 1.0) * per_token * changed).sum() / (per_token.numel() + (weight - 1.0) *
                                                                           changed.sum())
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert 0.0 <= float(out["acc_changed"]) <= 1.0


def test_change_weight_needs_the_image_length():
    with pytest.raises(ValueError, match="tokens_per_image"):
        TransformerSystem(TransformerConfig.from_name("tiny"), loss=TransformerLoss(change_weight=3.0))
