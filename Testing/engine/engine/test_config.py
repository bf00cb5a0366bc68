"""Presets, derived values, dict round trips and parameter counts (analytic and built)."""

from __future__ import annotations

import dataclasses

import pytest

from MedLVMLib.engine.config import (
    PreprocessConfig,
    TokenizerConfig,
    TransformerConfig,
    count_params,
    transformer_param_count,
)
from MedLVMLib.errors import MedLVMError

# Parameter counts of LVM's EasyLM configs (reference/lvm.md 2.1), in billions, 3 decimals.
LVM_PARAMS_B = [("lvm-100m", 0.117), ("lvm-300m", 0.291), ("lvm-600m", 0.648), ("lvm-1b", 1.147),
                ("lvm-3b", 3.275), ("lvm-7b", 6.544)]


@pytest.mark.parametrize("name,billions", LVM_PARAMS_B)
def test_lvm_param_counts(name, billions):
    cfg = TransformerConfig.from_name(name)
    assert transformer_param_count(cfg) / 1e9 == pytest.approx(billions, rel=1e-3 if name == "lvm-7b" else 5e-3)
    assert (cfg.vocab_size, cfg.block_size, cfg.codebook_size) == (8292, 4096, 8192)
    assert cfg.norm_eps == 1e-6 and cfg.rope_base == 1e4


def test_lvm_7b_shape():
    cfg = TransformerConfig.from_name("lvm-7b")
    assert (cfg.dim, cfg.intermediate_size, cfg.n_layer, cfg.n_head, cfg.head_dim) == (4096, 11008, 32, 32, 128)


@pytest.mark.parametrize("name", ["tiny", "medlvm-tiny"])
def test_analytic_count_matches_built_model(name):
    from MedLVMLib.engine.models.transformer import Transformer

    cfg = TransformerConfig.from_name(name)
    assert count_params(Transformer(cfg)) == transformer_param_count(cfg)


def test_analytic_count_matches_built_lvm_shaped_model():
    from MedLVMLib.engine.models.transformer import Transformer

    cfg = TransformerConfig(dim=128, intermediate_size=344, n_layer=3, n_head=2)  # LVM vocab, small width
    assert count_params(Transformer(cfg)) == transformer_param_count(cfg)


def test_muse_f16_8192_built_param_count():
    from MedLVMLib.engine.models.vqgan import VQGAN

    with __import__("torch").device("meta"):
        model = VQGAN(TokenizerConfig.from_name("muse-f16-8192"))
    assert count_params(model) == 146_244_675  # 146.24M, matches the 585 MB official pytorch_model.bin
    assert len(model.state_dict()) == 277


@pytest.mark.parametrize("name,factor,latent,tokens", [
    ("muse-f16-8192", 16, 16, 256), ("tiny", 4, 8, 64), ("medlvm-tiny", 8, 8, 64)])
def test_tokenizer_derived(name, factor, latent, tokens):
    cfg = TokenizerConfig.from_name(name)
    assert (cfg.downsample_factor, cfg.latent_size, cfg.tokens_per_image) == (factor, latent, tokens)


@pytest.mark.parametrize("name", ["tiny", "medlvm-tiny"])
def test_small_presets_pair_up(name):
    tok, tr = TokenizerConfig.from_name(name), TransformerConfig.from_name(name)
    assert tr.codebook_size == tok.codebook_size
    assert tr.vocab_size == tok.codebook_size + 16
    assert tr.block_size == 16 * tok.tokens_per_image


@pytest.mark.parametrize("cls,name", [(TokenizerConfig, "muse-f16-8192"), (TransformerConfig, "lvm-7b"),
                                      (TokenizerConfig, "tiny"), (TransformerConfig, "medlvm-tiny")])
def test_dict_round_trip(cls, name):
    cfg = cls.from_name(name)
    assert cls.from_dict(cfg.to_dict()) == cfg


def test_from_dict_overrides_base_and_rejects_unknown_keys():
    base = TransformerConfig.from_name("tiny")
    assert TransformerConfig.from_dict({"n_layer": 5}, base=base).n_layer == 5
    with pytest.raises(MedLVMError, match="n_layers"):
        TransformerConfig.from_dict({"n_layers": 5}, base=base)
    with pytest.raises(MedLVMError, match="hu_centre"):
        PreprocessConfig.from_dict({"hu_centre": 0})


@pytest.mark.parametrize("make", [
    lambda: TransformerConfig(dim=100, n_head=3),
    lambda: TransformerConfig(vocab_size=100, codebook_size=200),
    lambda: TokenizerConfig(resolution=250),
    lambda: TokenizerConfig(hidden_channels=20),
    lambda: PreprocessConfig(hu_min=10, hu_max=0),
    lambda: TransformerConfig.from_name("lvm-9b"),
    lambda: TokenizerConfig.from_name("nope"),
])
def test_invalid_configs_raise(make):
    with pytest.raises(MedLVMError):
        make()


def test_configs_are_frozen():
    cfg = TransformerConfig.from_name("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 3
