"""Training recipes: YAML sections override dataclass fields; unknown keys fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.training.recipe import build_recipe, load_recipe, parse_overrides, with_trainer

CONFIGS = Path(__file__).resolve().parents[3] / "Resources" / "configs"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("kind: tokenizer\nmodel: {preset: tiny, bogus_width: 3}\n", "bogus_width"),
    ("kind: tokenizer\ndata: {natral: 0.5}\n", "natral"),
    ("kind: tokenizer\noptim: {learning_rate: 0.1}\n", "learning_rate"),
    ("kind: transformer\ntrainer: {max_step: 3}\n", "max_step"),
    ("kind: transformer\nmodle: {dim: 3}\n", "modle"),
    ("kind: transformer\nloss: {l1: 1.0}\n", "allowed: ['change_weight']"),
    ("kind: vae\n", "'kind'"),
    ("kind: tokenizer\nmodel: {preset: nonexistent}\n", "nonexistent"),
])
def test_bad_key_names_key_and_file(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(MedLVMError) as info:
        load_recipe(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_sections_override_preset(tmp_path):
    path = _write(tmp_path, "kind: transformer\nmodel: {preset: tiny, n_layer: 3}\noptim: {lr: 0.01}\n"
                            "data: {ct_seeds: [0, 10]}\n")
    recipe = load_recipe(path, ["trainer.max_steps=7", "model.dim=32"])
    assert (recipe.model.n_layer, recipe.model.dim, recipe.model.vocab_size) == (3, 32, 80)
    assert recipe.optim.lr == 0.01 and recipe.trainer.max_steps == 7
    assert recipe.data.ct_seeds == (0, 10)


def test_override_syntax_and_cli_flags():
    assert parse_overrides(["a.b=[1, 2]", "a.c=x"]) == {"a": {"b": [1, 2], "c": "x"}}
    with pytest.raises(MedLVMError, match="section.key=value"):
        parse_overrides(["max_steps=3"])
    recipe = with_trainer(build_recipe({"kind": "tokenizer", "model": {"preset": "tiny"}}), max_steps=5, devices=None)
    assert recipe.trainer.max_steps == 5 and recipe.trainer.devices == 1


def test_kind_mismatch_is_reported(tmp_path):
    path = _write(tmp_path, "kind: tokenizer\n")
    with pytest.raises(MedLVMError, match="medlvm train tokenizer"):
        load_recipe(path, expect_kind="transformer")


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_bundled_configs_validate(name):
    recipe = load_recipe(CONFIGS / name)
    assert recipe.kind in ("tokenizer", "transformer")
    if recipe.kind == "transformer":
        assert recipe.data.n_images * 64 <= recipe.model.block_size or recipe.model.block_size >= 4096
        assert recipe.data.ct_seeds[1] <= 1000  # held-out phantom seeds never trained on


@pytest.mark.parametrize("override, needle", [
    ("trainer.max_steps=0", "max_steps must be a whole number >= 1, got 0"),
    ("trainer.batch_size=2.5", "batch_size must be a whole number"),
    ("trainer.max_minutes=-1", "max_minutes must be a number >= 0"),
    ("trainer.accumulate=true", "accumulate must be a whole number"),
    ("optim.lr=0", "lr must be a number > 0"),
    ("optim.lr=.nan", "lr must be a number > 0, got nan"),
    ("optim.beta2=1.5", "beta2 must be a number >= 0 and <= 1"),
    ("optim.min_lr_ratio=-0.1", "min_lr_ratio"),
])
def test_out_of_range_numbers_are_refused_with_the_key(override, needle):
    path = Path(__file__).resolve().parents[3] / "Resources" / "configs" / "transformer_tiny_ct.yaml"
    assert load_recipe(path, ["trainer.max_steps=5", "optim.lr=1e-4"]).trainer.max_steps == 5  # in range: fine
    with pytest.raises(MedLVMError, match=needle):
        load_recipe(path, [override])


def test_out_of_range_command_line_flags_are_refused():
    recipe = build_recipe({"kind": "transformer"})
    assert with_trainer(recipe, max_minutes=0.5, batch_size=2).trainer.batch_size == 2
    for values in (dict(max_steps=-3), dict(batch_size=0), dict(max_minutes=float("inf")), dict(num_nodes=0)):
        with pytest.raises(MedLVMError, match="command line: .* must be"):
            with_trainer(recipe, **values)
