"""`medlvm train tokenizer|transformer` as the README and tools/train_bundled.sh run them: the real recipe files,
shrunk by `--set` overrides to a few seconds, and the exported models loaded with `api.load_model`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pytorch_lightning")

from MedLVMLib import api  # noqa: E402
from MedLVMLib.cli import main  # noqa: E402
from MedLVMLib.engine import lvm  # noqa: E402
from MedLVMLib.engine.checkpoints.registry import load_registry, resolve_model_folder  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[3] / "Resources" / "configs"
# Shrink without touching the rest of the recipe: tiny networks, a handful of images, fp32 (bf16 on a CPU
# without bf16 instructions is ~20x slower), a checkpoint every step.
SMALL = ["trainer.batch_size=2", "trainer.precision=32", "trainer.checkpoint_every=1", "trainer.log_every_n_steps=1"]
TOKENIZER = ["model.preset=tiny", "model.channel_mult=[1,2,2]", "model.codebook_size=64", "model.embed_dim=8",
             "data.images_per_epoch=8"]
TRANSFORMER = ["model.dim=32", "model.n_layer=1", "model.n_head=2", "model.intermediate_size=64",
               "model.block_size=256", "data.n_sentences=4", "data.n_images=4"]
TINY_CODES = ["model.vocab_size=80", "model.codebook_size=64"]


def train(kind: str, config: str, out: Path, *extra: str, sets=()) -> int:
    overrides = [arg for item in [*SMALL, *sets] for arg in ("--set", item)]
    return main(["train", kind, "--config", str(CONFIGS / config), "--out", str(out), *overrides, *extra])


def round_trip(model) -> np.ndarray:
    """Decoded frames of the model's own codes for two grey ramps (shape checks the model is usable)."""
    frames = np.linspace(0, 1, 2 * model.image_size ** 2, dtype=np.float32).reshape(2, model.image_size, -1)
    return lvm.decode_codes(model, lvm.encode_images(model, frames))


@pytest.mark.slow
def test_bundled_recipes_train_and_export_as_in_train_bundled_sh(tmp_path, capsys):
    """tokenizer -> zero-shot transformer -> resumed with the token cache -> CT fine-tune, each exported and loaded."""
    tok, zs, ct = tmp_path / "tokenizer_tiny", tmp_path / "transformer_tiny_zs", tmp_path / "transformer_tiny_ct"
    assert train("tokenizer", "tokenizer_tiny.yaml", tok, "--max-steps", "2", sets=TOKENIZER) == 0
    zs_sets = [*TRANSFORMER, *TINY_CODES, f"data.tokenizer={tok / 'model'}"]
    assert train("transformer", "transformer_tiny_zs.yaml", zs, sets=[*zs_sets, "trainer.max_steps=2"]) == 0
    assert train("transformer", "transformer_tiny_zs.yaml", zs, "--resume", str(zs / "checkpoints" / "last.ckpt"),
                 "--max-steps", "3", sets=[*zs_sets, f"data.cache={zs / 'tokens.npz'}"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    assert train("transformer", "transformer_tiny_ct.yaml", ct, "--max-steps", "2",
                 sets=[*TRANSFORMER, *TINY_CODES, f"trainer.init_from={zs / 'model'}", "data.ct_seeds=[0,2]"]) == 0
    for run, model_id in ((zs, "medlvm-tiny-zs"), (ct, "medlvm-tiny-ct")):
        model = api.load_model(str(run / "model"), device="cpu")
        assert model.model_id == model_id and model.tokenizer.config.codebook_size == 64
        assert model.transformer.config.dim == 32 and round_trip(model).shape == (2, 32, 32)


def test_transformer_on_the_bundled_tokenizer_by_registry_id(tmp_path):
    """`--set data.tokenizer=medlvm-tiny-zs`: the id is resolved through the registry (this raised AttributeError)."""
    if resolve_model_folder("medlvm-tiny-zs", load_registry()) is None:
        pytest.skip("the bundled model medlvm-tiny-zs is not installed")
    out = tmp_path / "zs"
    assert train("transformer", "transformer_tiny_zs.yaml", out, "--max-steps", "1",
                 sets=[*TRANSFORMER, "data.tokenizer=medlvm-tiny-zs"]) == 0
    model = api.load_model(str(out / "model"), device="cpu")
    assert model.tokenizer.config.codebook_size == 1024 and round_trip(model).shape == (2, 64, 64)


def test_a_missing_tokenizer_is_one_line_naming_the_field(tmp_path, monkeypatch, capsys):
    """As written in the README, before the tokenizer was trained: runs/tokenizer_tiny/model does not exist."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "transformer", "--config", str(CONFIGS / "transformer_tiny_zs.yaml"),
                 "--max-steps", "1", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medlvm: error: data.tokenizer 'runs/tokenizer_tiny/model'") and "\n" not in err
    assert "medlvm train tokenizer" in err and "medlvm-tiny-zs" in err


def test_a_transformer_without_any_tokenizer_is_refused(tmp_path, capsys):
    assert train("transformer", "transformer_tiny_ct.yaml", tmp_path / "x", "--max-steps", "1",
                 sets=[*TRANSFORMER, *TINY_CODES, "trainer.init_from="]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medlvm: error: no token cache and no tokenizer: set data.tokenizer") and err.count("\n") == 1
    assert not (tmp_path / "x" / "model").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_recipe_without_a_gpu_fails_before_building_its_data(tmp_path, capsys):
    """README: transformer_300m.yaml on 8 GPUs x 2 nodes; here it used to tokenise 50,000 sentences first."""
    assert main(["train", "transformer", "--config", str(CONFIGS / "transformer_300m.yaml"), "--accelerator", "gpu",
                 "--devices", "8", "--num-nodes", "2", "--strategy", "ddp", "--precision", "bf16-mixed",
                 "--accumulate", "4", "--out", str(tmp_path / "x"), "--set", "data.tokenizer=medlvm-tiny-zs"]) == 2
    assert "trainer.accelerator gpu: no CUDA GPU is available here" in capsys.readouterr().err
    assert not (tmp_path / "x" / "tokens.npz").exists()
