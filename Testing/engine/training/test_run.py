"""fit(): checkpoint -> resume keeps the step and optimizer state; exports load as MedLVM models."""

from __future__ import annotations

import copy

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")

from MedLVMLib.engine.checkpoints.formats import load_checkpoint  # noqa: E402
from MedLVMLib.errors import MedLVMError  # noqa: E402
from MedLVMLib.training.recipe import build_recipe  # noqa: E402
from MedLVMLib.training.run import fit  # noqa: E402


def _tokenizer_recipe(out, **trainer):
    return build_recipe({
        "kind": "tokenizer",
        "model": {"preset": "tiny"},
        "data": {"images_per_epoch": 64, "masks": 0.2},
        "loss": {"restart_every": 2},
        "optim": {"lr": 1e-3, "warmup_steps": 1},
        "trainer": {"max_steps": 2, "batch_size": 2, "accelerator": "cpu", "checkpoint_every": 1,
                    "log_every_n_steps": 1, "out": str(out), **trainer},
    }, "test")


class _Capture(pl.Callback):
    def on_train_start(self, trainer, module):
        self.step = trainer.global_step
        self.optimizer = copy.deepcopy(trainer.optimizers[0].state_dict())


def _same_state(a, b) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k][n], b[k][n]) if torch.is_tensor(a[k][n]) else a[k][n] == b[k][n]
               for k in a for n in a[k])


def test_resume_restores_step_and_optimizer(tmp_path, monkeypatch):
    first = fit(_tokenizer_recipe(tmp_path / "a"), enable_progress_bar=False, export=False)
    assert first.global_step == 2
    ckpt_path = tmp_path / "a" / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    capture = _Capture()
    import MedLVMLib.training.run as run_mod

    original = run_mod.make_trainer

    def with_capture(recipe, run_dir, enable_progress_bar=True):
        trainer = original(recipe, run_dir, enable_progress_bar)
        trainer.callbacks.append(capture)
        return trainer

    monkeypatch.setattr(run_mod, "make_trainer", with_capture)
    second = fit(_tokenizer_recipe(tmp_path / "b", max_steps=3), resume=str(ckpt_path), enable_progress_bar=False,
                 export=False)
    assert capture.step == saved["global_step"] == 2
    assert second.global_step == 3
    assert _same_state(capture.optimizer["state"], saved["optimizer_states"][0]["state"])


def test_tokenizer_then_transformer_export_loads(tmp_path):
    tok = fit(_tokenizer_recipe(tmp_path / "tok", max_steps=1), enable_progress_bar=False)
    ckpt = load_checkpoint(tok.export_dir)
    assert ckpt.tokenizer is not None and ckpt.transformer is None
    recipe = build_recipe({
        "kind": "transformer",
        "model": {"preset": "tiny", "block_size": 256},
        "data": {"tokenizer": str(tok.export_dir), "n_sentences": 4, "n_images": 4, "video": 0.5, "pairs": 0.5},
        "trainer": {"max_steps": 1, "batch_size": 2, "accelerator": "cpu", "out": str(tmp_path / "tr"),
                    "export_dtype": "float16", "export_id": "test-model"},
    }, "test")
    result = fit(recipe, enable_progress_bar=False)
    both = load_checkpoint(result.export_dir, dtype=torch.float32)
    assert both.tokenizer is not None and both.transformer is not None and both.model_id == "test-model"
    assert (tmp_path / "tr" / "tokens.npz").is_file() and (tmp_path / "tr" / "recipe.yaml").is_file()


def test_missing_resume_file_fails_early(tmp_path):
    with pytest.raises(MedLVMError, match="no such checkpoint"):
        fit(_tokenizer_recipe(tmp_path), resume=str(tmp_path / "nope.ckpt"))


@pytest.mark.parametrize("flags, accelerator, precision, expected", [
    ({"avx2", "fma"}, "cpu", "bf16-mixed", "32"),          # the AMD EPYC this was measured on
    ({"avx2"}, "cpu", "bf16-true", "32"),
    ({"avx2", "amx_bf16"}, "cpu", "bf16-mixed", "bf16-mixed"),
    ({"avx512_bf16"}, "cpu", "bf16-mixed", "bf16-mixed"),
    (set(), "cpu", "bf16-mixed", "bf16-mixed"),             # flags unknown (not Linux): left alone
    ({"avx2"}, "gpu", "bf16-mixed", "bf16-mixed"),
    ({"avx2"}, "cpu", "32", "32"),
])
def test_bf16_falls_back_to_fp32_on_a_cpu_without_bf16(monkeypatch, tmp_path, flags, accelerator, precision,
                                                        expected):
    import MedLVMLib.training.run as run_mod

    monkeypatch.setattr(run_mod, "cpu_flags", lambda: flags)
    recipe = _tokenizer_recipe(tmp_path, accelerator=accelerator, precision=precision)
    changed, warning = run_mod.cpu_precision(recipe)
    assert changed.trainer.precision == expected
    assert bool(warning) == (expected != precision)
    if warning:
        assert warning.startswith(f"trainer.precision {precision}: this CPU has no bf16 instructions")


def test_the_fp32_fallback_is_what_trains_and_is_recorded(monkeypatch, tmp_path, caplog):
    import MedLVMLib.training.run as run_mod

    monkeypatch.setattr(run_mod, "cpu_flags", lambda: {"avx2"})
    with caplog.at_level("WARNING"):
        fit(_tokenizer_recipe(tmp_path, max_steps=1, precision="bf16-mixed"), enable_progress_bar=False, export=False)
    assert "precision: '32'" in (tmp_path / "recipe.yaml").read_text(encoding="utf-8")
    assert any("no bf16 instructions" in r.getMessage() for r in caplog.records)
