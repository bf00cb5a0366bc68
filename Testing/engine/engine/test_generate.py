"""Generation: equals full recomputation (also when the window slides), batching, sampling rules, progress."""

from __future__ import annotations

import pytest
import torch

from MedLVMLib.engine.config import TransformerConfig
from MedLVMLib.engine.generate import _top_p_filter, generate_images, prompt_vocabulary, sample
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.errors import Cancelled, InputError
from MedLVMLib.progress import CallbackProgress

TPI = 64  # tokens per image of the tiny preset


def random_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    config = TransformerConfig.from_dict(overrides, base=TransformerConfig.from_name("tiny"))
    m = Transformer(config).eval()
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.15)
    return m


@pytest.fixture(scope="module")
def model():
    return random_model()


@pytest.fixture(scope="module")
def short_model():
    """A 256-token window (16 images of 16 tokens) so the sliding-window cases stay cheap to recompute."""
    return random_model(block_size=256)


def naive_greedy(model, prompt, n_images, max_context, tpi):
    """Reference: full forward per token, no cache; LVM's window of the last max_context images."""
    sentence = prompt.clone()
    with torch.no_grad():
        for _ in range(n_images):
            context = sentence if sentence.shape[1] + tpi <= model.config.block_size else \
                sentence[:, -max_context * tpi:]
            for _ in range(tpi):
                token = model(context)[:, -1, :model.config.codebook_size].argmax(-1, keepdim=True)
                context = torch.cat([context, token], dim=1)
            sentence = torch.cat([sentence, context[:, -tpi:]], dim=1)
    return sentence[:, prompt.shape[1]:].reshape(len(prompt), n_images, tpi)


@pytest.mark.parametrize("prompt_images,n_images,max_context", [
    (2, 2, None),  # fits in one window
    (14, 3, None),  # slides: 15 context images kept, as LVM does
    (5, 2, 3),  # an explicit smaller window only applies once the sentence outgrows block_size
    (15, 2, 4),  # ... and then keeps only that many images
    (17, 1, None),  # prompt longer than the window
])
def test_greedy_equals_full_recompute(short_model, prompt_images, n_images, max_context):
    tpi = 16
    prompt = torch.randint(0, 64, (2, prompt_images * tpi), generator=torch.Generator().manual_seed(3))
    got = generate_images(short_model, prompt, n_images, tpi, greedy=True, max_context_images=max_context)
    expected = naive_greedy(short_model, prompt, n_images, max_context or 15, tpi)
    assert got.shape == (2, n_images, tpi)
    assert torch.equal(got, expected)


def test_greedy_equals_full_recompute_tiny_preset(model):
    prompt = torch.randint(0, 64, (2, 2 * TPI), generator=torch.Generator().manual_seed(3))
    expected = naive_greedy(model, prompt, 1, 15, TPI)
    assert torch.equal(generate_images(model, prompt, 1, TPI, greedy=True), expected)


def test_batched_equals_single(model):
    prompt = torch.randint(0, 64, (4, 3 * TPI), generator=torch.Generator().manual_seed(4))
    batched = generate_images(model, prompt, 2, TPI, greedy=True)
    singles = torch.cat([generate_images(model, prompt[i:i + 1], 2, TPI, greedy=True) for i in range(4)])
    assert torch.equal(batched, singles)


def test_special_tokens_never_sampled_and_no_eos_stop(model):
    bias = torch.zeros(80)
    bias[64:] = 50.0  # specials would always win
    bias[2] = 40.0  # then id 2 (HF's eos_token_id), which must not stop generation
    handle = model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    try:
        prompt = torch.randint(0, 64, (2, TPI))
        greedy = generate_images(model, prompt, 2, TPI, greedy=True)
        sampled = generate_images(model, prompt, 2, TPI, seed=0)
    finally:
        handle.remove()
    assert greedy.shape == (2, 2, TPI) and bool((greedy == 2).all())
    assert int(sampled.max()) < 64


def test_seed_reproducible(model):
    prompt = torch.randint(0, 64, (3, TPI))
    a = generate_images(model, prompt, 1, TPI, seed=7)
    b = generate_images(model, prompt, 1, TPI, seed=7)
    c = generate_images(model, prompt, 1, TPI, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kwargs", [dict(top_p=1e-6), dict(temperature=0.0)])
def test_degenerate_sampling_is_greedy(model, kwargs):
    prompt = torch.randint(0, 64, (2, TPI))
    assert torch.equal(generate_images(model, prompt, 1, TPI, seed=0, **kwargs),
                       generate_images(model, prompt, 1, TPI, greedy=True))


def test_prompt_vocabulary_per_position_and_neighbourhood():
    first = torch.arange(TPI).reshape(8, 8) % 60  # code = position (mod 60) in the first image
    second = torch.full((8, 8), 61)
    second[0, 0] = 62
    prompt = torch.stack([first, second]).reshape(1, -1)
    same = prompt_vocabulary(prompt, TPI, 64, radius=0)
    assert same.shape == (1, TPI, 64)
    assert set(torch.nonzero(same[0, 0]).ravel().tolist()) == {0, 62}
    assert set(torch.nonzero(same[0, 9]).ravel().tolist()) == {9, 61}
    near = prompt_vocabulary(prompt, TPI, 64, radius=1)
    assert set(torch.nonzero(near[0, 0]).ravel().tolist()) == {0, 1, 8, 9, 61, 62}  # a corner: 4 positions
    assert set(torch.nonzero(near[0, 9]).ravel().tolist()) == {0, 1, 2, 8, 9, 10, 16, 17, 18, 61, 62}
    for bad in (torch.zeros(1, TPI + 3, dtype=torch.long), torch.full((1, TPI), 70)):
        with pytest.raises(InputError):
            prompt_vocabulary(bad, TPI, 64, radius=1)
    with pytest.raises(InputError, match="square"):
        prompt_vocabulary(torch.zeros(1, 48, dtype=torch.long), 48, 64, radius=0)


def test_generation_restricted_to_the_prompt_codes(model):
    bias = torch.zeros(80)
    bias[5] = 50.0  # unrestricted, code 5 would always win
    handle = model.lm_head.register_forward_hook(lambda mod, inp, out: out + bias)
    try:
        prompt = torch.randint(10, 64, (2, 2 * TPI))
        free = generate_images(model, prompt, 2, TPI, greedy=True)
        allowed = prompt_vocabulary(prompt, TPI, 64, radius=0)
        kept = generate_images(model, prompt, 2, TPI, greedy=True, allowed=allowed)
        sampled = generate_images(model, prompt, 2, TPI, seed=0, allowed=allowed)
    finally:
        handle.remove()
    assert bool((free == 5).all())
    for out in (kept, sampled):
        taken = torch.nn.functional.one_hot(out, 64).bool()  # (B, images, TPI, 64)
        assert bool((taken <= allowed[:, None]).all())  # each token one of its position's prompt codes
    everything = torch.ones(2, TPI, 64, dtype=torch.bool)
    assert torch.equal(generate_images(model, prompt, 2, TPI, greedy=True, allowed=everything),
                       generate_images(model, prompt, 2, TPI, greedy=True))
    with pytest.raises(InputError, match="allowed must be"):
        generate_images(model, prompt, 1, TPI, allowed=everything[:1])


def test_a_bad_code_in_any_row_is_refused_before_generating(monkeypatch):
    from MedLVMLib.engine import lvm

    model = lvm.random_model("tiny")
    prompt = torch.randint(0, 64, (3, 2 * TPI))
    prompt[2, 5] = model.transformer.config.codebook_size  # a special token, only in the last row
    calls = []
    monkeypatch.setattr(lvm, "generate_images", lambda *args, **kwargs: calls.append(args))
    with pytest.raises(InputError, match="image codes in"):
        lvm.generate(model, prompt, 1, greedy=True, batch_size=1, prompt_radius=1)
    assert calls == []  # no batch was generated before the refusal


def test_top_p_keeps_smallest_set_reaching_mass():
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    assert torch.allclose(_top_p_filter(probs, 0.7), torch.tensor([[0.0, 0.5, 0.0, 0.3]]))
    assert torch.allclose(_top_p_filter(probs, 0.85), torch.tensor([[0.15, 0.5, 0.0, 0.3]]))


def test_sample_follows_distribution():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.7, 1e-9]))[None].repeat(20000, 1)
    draws = sample(logits, codebook_size=3, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    assert torch.allclose(freq, torch.tensor([0.1, 0.2, 0.7]), atol=0.015)
    hot = sample(logits, codebook_size=3, temperature=0.1, generator=torch.Generator().manual_seed(0))
    assert (hot == 2).float().mean() > 0.99


def test_progress_stage_per_image_and_cancel(model):
    events = []
    progress = CallbackProgress(lambda stage, done, total: events.append((stage, done, total)))
    generate_images(model, torch.randint(0, 64, (1, TPI)), 3, TPI, greedy=True, progress=progress)
    stages = sorted({e[0] for e in events})
    assert stages == [f"generating image {i}/3" for i in (1, 2, 3)]
    assert all(e[1] <= TPI for e in events) and ("generating image 3/3", TPI, TPI) in events
    cancelling = CallbackProgress(lambda *a: None, should_cancel=lambda: True)
    with pytest.raises(Cancelled):
        generate_images(model, torch.randint(0, 64, (1, TPI)), 1, TPI, progress=cancelling)


@pytest.mark.parametrize("prompt,kwargs", [
    (torch.rand(1, 10), {}),
    (torch.full((1, 10), 80), {}),
    (torch.zeros(10, dtype=torch.long), {}),
    (torch.zeros(1, 0, dtype=torch.long), {}),
    (torch.zeros(1, 10, dtype=torch.long), dict(max_context_images=16)),
])
def test_bad_inputs(model, prompt, kwargs):
    with pytest.raises(InputError):
        generate_images(model, prompt, 1, TPI, **kwargs)
