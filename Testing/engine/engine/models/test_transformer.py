"""Transformer: HF LlamaForCausalLM key layout and equivalence, KV-cache decoding equals full recomputation."""

from __future__ import annotations

import pytest
import torch

from MedLVMLib.engine.checkpoints.formats import load_hf_llama
from MedLVMLib.engine.config import TransformerConfig
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.errors import InputError

transformers = pytest.importorskip("transformers")


def hf_model(config: TransformerConfig, seed: int = 0):
    """A random HF LlamaForCausalLM of the same shape, with weights large enough that greedy argmax has margins."""
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.dim, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head, num_key_value_heads=config.n_head,
        max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_base})
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.15)
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(HF model, our model) loaded from the SAME safetensors file written by HF save_pretrained."""
    config = TransformerConfig.from_name("tiny")
    hf = hf_model(config)
    folder = tmp_path_factory.mktemp("hf_tiny")
    hf.save_pretrained(folder, safe_serialization=True)
    ours = load_hf_llama(folder, codebook_size=config.codebook_size)
    assert ours.config == config
    return hf, ours


def test_state_dict_uses_hf_names_and_shapes(pair):
    hf, ours = pair
    hf_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items() if "rotary" not in k}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == hf_shapes


def test_logits_equal_hf(pair):
    hf, ours = pair
    idx = torch.randint(0, 80, (2, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)
    assert got.shape == (2, 300, 80)
    assert (got - expected).abs().max().item() < 1e-4


def test_greedy_512_tokens_identical_to_hf_generate(pair):
    from MedLVMLib.engine.generate import generate_images

    hf, ours = pair
    prompt = torch.randint(0, 64, (2, 128), generator=torch.Generator().manual_seed(1))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=512, min_new_tokens=512,
                           do_sample=False, eos_token_id=None, pad_token_id=64,
                           suppress_tokens=list(range(64, 80)))[:, 128:]
    got = generate_images(ours, prompt, 8, 64, greedy=True).reshape(2, 512)
    assert torch.equal(got, expected)


def test_state_dict_round_trip_and_no_shared_storage():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny")).eval()
    state = model.state_dict()
    pointers = [v.untyped_storage().data_ptr() for v in state.values()]
    assert len(set(pointers)) == len(pointers)  # safetensors refuses tensors sharing storage
    clone = Transformer(model.config).eval()
    clone.load_state_dict(state, strict=True)
    idx = torch.randint(0, 80, (1, 50))
    with torch.no_grad():
        assert torch.equal(clone(idx), model(idx))


@pytest.mark.parametrize("splits", [[100], [60, 1, 39], [1] * 10 + [90], [33, 33, 34]])
def test_kv_cache_decode_equals_full_recompute(splits):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 80, (3, sum(splits)))
    model.setup_caches(3, 128)
    pieces, start = [], 0
    with torch.no_grad():
        full = model(idx)
        for size in splits:
            pieces.append(model(idx[:, start:start + size], torch.arange(start, start + size)))
            start += size
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_last_only_returns_last_position():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 80, (2, 20))
    with torch.no_grad():
        assert torch.allclose(model(idx, last_only=True)[:, 0], model(idx)[:, -1], atol=1e-6)


def test_bf16_cache_close_to_fp32():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 80, (2, 40))
    model.setup_caches(2, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        cached = model(idx, torch.arange(40))
        full = model(idx)
    assert model.model.layers[0].self_attn.kv_cache.k.dtype == torch.bfloat16
    assert (cached - full).abs().max().item() < 0.05 * full.abs().max().item()


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_weights_on_cpu_run_in_mixed_mode(half):
    """bf16/fp16 weights on CPU: matmuls in half, activations, logits and KV cache in fp32, close to fp32."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny")).eval()
    idx = torch.randint(0, 64, (2, 40))
    with torch.no_grad():
        ref = model(idx)
        model.to(half)
        assert model.lm_head.weight.dtype == half and model.compute_dtype() == torch.float32
        full = model(idx)
        model.setup_caches(2, 64)
        cached = torch.cat([model(idx[:, :32], 0), model(idx[:, 32:], 32)], dim=1)
    assert model.model.layers[0].self_attn.kv_cache.k.dtype == torch.float32
    assert full.dtype == torch.float32 and cached.dtype == torch.float32
    assert torch.allclose(cached, full, atol=1e-5)  # the cache is exact in mixed mode
    tolerance = 0.05 if half == torch.bfloat16 else 0.01  # bf16 keeps 8 mantissa bits, fp16 11
    assert (full - ref).abs().max().item() < tolerance * ref.abs().max().item()
    assert (full - ref).abs().max().item() > 0  # the matmuls really ran in half precision


def test_activation_dtype_overrides_the_cpu_rule():
    model = Transformer(TransformerConfig.from_name("tiny")).eval().to(torch.bfloat16)
    model.activation_dtype = torch.bfloat16
    with torch.no_grad():
        assert model(torch.zeros(1, 4, dtype=torch.long)).dtype == torch.bfloat16


def test_errors():
    model = Transformer(TransformerConfig.from_name("tiny"))
    with pytest.raises(InputError, match="block_size"):
        model(torch.zeros(1, 1025, dtype=torch.long))
    with pytest.raises(InputError, match="setup_caches"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.arange(4))
    with pytest.raises(InputError, match="block_size"):
        model.setup_caches(1, 2048)


def test_rope_base_is_used(tmp_path):
    config = TransformerConfig.from_name("tiny")
    config = type(config).from_dict({"rope_base": 500.0, "n_layer": 1}, base=config)
    hf = hf_model(config, seed=1)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_hf_llama(tmp_path, codebook_size=64)
    assert ours.config.rope_base == 500.0
    idx = torch.randint(0, 80, (1, 200))
    with torch.no_grad():
        assert (ours(idx) - hf(idx).logits).abs().max().item() < 1e-4
