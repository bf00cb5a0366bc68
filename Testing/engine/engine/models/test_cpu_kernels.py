"""MedLVM's CPU decode kernels against PyTorch's operators, the model with and without them, and the fallback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from MedLVMLib.engine.config import TransformerConfig
from MedLVMLib.engine.models import cpu_kernels
from MedLVMLib.engine.models.transformer import DecoderLayer, KVCache, RMSNorm, Transformer, apply_rope, rope_tables


@pytest.fixture(scope="module")
def ops():
    """torch.ops.medlvm, compiled for this machine. Where the machine supports them they must load."""
    reason = cpu_kernels.unsupported_reason()
    if reason:
        pytest.skip(f"CPU kernels unsupported here: {reason}")
    assert cpu_kernels.load(), cpu_kernels.status()
    return torch.ops.medlvm


def rand(*shape, dtype=torch.float32, seed=0, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


@pytest.fixture
def two_threads():
    """The kernels split work across threads; the suite runs single-threaded, so some tests use two."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("k, n", [(70, 37), (1, 5), (17, 9), (33, 1)])  # tails, shorter than a vector block
def test_gemv_equals_linear(ops, dtype, rows, k, n):
    x, w, add = rand(rows, k, seed=1), rand(n, k, dtype=dtype, seed=2), rand(rows, n, seed=3)
    expected = F.linear(x, w.float())  # fp32 activations times the weights' exact values
    torch.testing.assert_close(ops.gemv(x, w), expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ops.gemv(x, w, add), expected + add, atol=2e-5, rtol=1e-5)
    got = ops.gemv(x.view(rows, 1, k), w)  # leading dimensions are kept
    assert got.shape == (rows, 1, n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemv_split_across_threads(ops, dtype, two_threads):
    x, w = rand(3, 1030, seed=1), rand(2051, 1030, dtype=dtype, seed=2)  # many blocks: both threads get work
    torch.testing.assert_close(ops.gemv(x, w), F.linear(x, w.float()), atol=1e-4, rtol=1e-5)


def test_gemv_takes_strided_inputs(ops):
    x, w = rand(2, 40, seed=1)[:, ::2], rand(20, 64, seed=2).t()  # (2, 20) every other column; (64, 20) transposed
    assert not x.is_contiguous() and not w.is_contiguous()
    torch.testing.assert_close(ops.gemv(x, w), F.linear(x, w), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_uses_the_blas_beyond_a_few_rows(ops, dtype):
    x, w, add = rand(3, 5, 64, seed=1), rand(48, 64, dtype=dtype, seed=2), rand(3, 5, 48, seed=3)
    expected = F.linear(x.to(dtype), w).float() + add  # the BLAS path computes in the weights' dtype
    got = ops.linear(x, w, add)
    assert got.shape == (3, 5, 48) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-4 if dtype == torch.float32 else 2e-2, rtol=1e-3)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [16, 32, 48, 64, 80, 96, 112, 128])
@pytest.mark.parametrize("length", [1, 17, 100])
def test_decode_attention_equals_sdpa(ops, cache_dtype, head_dim, length):
    b, h = 2, 3
    k = rand(b + 1, h, 120, head_dim, seed=1, scale=2.0).to(cache_dtype)  # a larger cache than the batch
    v = rand(b + 1, h, 120, head_dim, seed=2).to(cache_dtype)
    q = rand(b, h, head_dim, seed=3, scale=2.0)
    expected = F.scaled_dot_product_attention(q[:, :, None], k[:b, :, :length].float(), v[:b, :, :length].float())
    torch.testing.assert_close(ops.decode_attention(q, k, v, length), expected[:, :, 0], atol=2e-6, rtol=1e-5)


def test_decode_attention_split_across_threads_and_nan_propagates(ops, two_threads):
    k, v, q = rand(5, 4, 300, 64, seed=1), rand(5, 4, 300, 64, seed=2), rand(5, 4, 64, seed=3)
    expected = F.scaled_dot_product_attention(q[:, :, None], k[:, :, :257], v[:, :, :257])[:, :, 0]
    torch.testing.assert_close(ops.decode_attention(q, k, v, 257), expected, atol=2e-6, rtol=1e-5)
    k[0, 0, 1, 0] = float("nan")  # like SDPA, a NaN key poisons its head instead of vanishing in the softmax
    got = ops.decode_attention(q, k, v, 257)
    assert got[0, 0].isnan().all() and not got[0, 1:].isnan().any() and not got[1:].isnan().any()


def test_empty_inputs(ops):
    linear = torch.nn.Linear(16, 8, bias=False)
    with torch.no_grad():
        assert ops.linear(torch.zeros(0, 16), linear.weight).shape == (0, 8)
    with pytest.raises(RuntimeError, match="even and positive"):
        ops.silu_mul(torch.zeros(3, 0))
    with pytest.raises(RuntimeError, match="weight of 0"):
        ops.rms_norm(torch.zeros(3, 0), torch.zeros(0), 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_equals_the_module(ops, dtype):
    norm = RMSNorm(70, 1e-5)
    with torch.no_grad():
        norm.weight.copy_(rand(70, seed=4))
    norm = norm.to(dtype)
    x = rand(3, 2, 70, seed=5, scale=3.0)
    with cpu_kernels.disabled():
        expected = norm(x)
    got = ops.rms_norm(x, norm.weight, norm.eps)
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
def test_rope_cache_rotates_q_and_k_and_fills_one_cache_slot(ops, cache_dtype):
    config = TransformerConfig.from_name("tiny")  # 4 heads of 16
    b, h, d, pos = 2, config.n_head, config.head_dim, 9
    cos, sin = rope_tables(config)
    qkv = rand(b, 1, 3 * h * d, seed=6)
    k_cache = torch.zeros(3, h, 20, d, dtype=cache_dtype)
    v_cache = torch.zeros(3, h, 20, d, dtype=cache_dtype)
    q = ops.rope_cache(qkv, cos[pos:pos + 1], sin[pos:pos + 1], k_cache, v_cache, pos)
    q_ref, k_ref, v_ref = qkv.view(b, 1, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, 1, D)
    q_ref, k_ref = apply_rope(q_ref, cos[pos:pos + 1], sin[pos:pos + 1]), apply_rope(k_ref, cos[pos:pos + 1],
                                                                                    sin[pos:pos + 1])
    torch.testing.assert_close(q, q_ref[:, :, 0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(k_cache[:b, :, pos], k_ref[:, :, 0].to(cache_dtype), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(v_cache[:b, :, pos], v_ref[:, :, 0].to(cache_dtype), atol=1e-6, rtol=1e-6)
    untouched = torch.ones(3, h, 20, dtype=torch.bool)
    untouched[:b, :, pos] = False
    assert k_cache.abs().sum(-1)[untouched].max() == 0 and v_cache.abs().sum(-1)[untouched].max() == 0


def test_silu_mul_equals_swiglu_gate(ops):
    gate_up = rand(3, 2 * 70, seed=7, scale=4.0)
    gate_up[0, :4] = torch.tensor([-100.0, -30.0, 30.0, 100.0])  # both tails of the sigmoid
    gate, up = gate_up.split(70, dim=-1)
    torch.testing.assert_close(ops.silu_mul(gate_up), F.silu(gate) * up, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batch", [1, 3, 6])  # 6 rows go to the BLAS
def test_decode_layer_equals_the_module(ops, dtype, cache_dtype, batch):
    torch.manual_seed(0)
    config = TransformerConfig.from_name("tiny")
    layer = DecoderLayer(config).to(dtype)
    cos, sin = rope_tables(config)
    x = rand(batch, 1, config.dim, seed=8)
    results = {}
    for use_kernels in (False, True):
        cache = KVCache(batch + 2, config.n_head, 32, config.head_dim, cache_dtype, "cpu")  # larger than the batch
        cache.k.copy_(rand(*cache.k.shape, seed=1))
        cache.v.copy_(rand(*cache.v.shape, seed=2))
        layer.self_attn.kv_cache = cache
        cpu_kernels.set_enabled(use_kernels)
        try:
            with torch.inference_mode():
                results[use_kernels] = (layer(x, cos[20:21], sin[20:21], 20), cache.k, cache.v)
        finally:
            cpu_kernels.set_enabled(True)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2  # bf16 weights: the fallback rounds activations too
    for got, expected in zip(results[True], results[False]):
        torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("batch", [1, 6])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_decoding_with_kernels_equals_pytorch_operators(ops, batch, dtype):
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny")).eval().to(dtype)
    idx = torch.randint(0, 64, (batch, 40))
    logits = {}
    for use_kernels in (True, False):
        cpu_kernels.set_enabled(use_kernels)
        try:
            model.setup_caches(batch, 64)
            with torch.inference_mode():
                steps = [model(idx[:, :30], 0)] + [model(idx[:, i:i + 1], i) for i in range(30, 40)]
            logits[use_kernels] = torch.cat(steps, dim=1)
        finally:
            cpu_kernels.set_enabled(True)
    assert cpu_kernels.ACTIVE
    tolerance = 1e-4 if dtype == torch.float32 else 5e-2  # bf16: the fallback rounds activations, gemv does not
    torch.testing.assert_close(logits[True], logits[False], atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("case", ["head_dim 24", "fp16 cache", "fp16 weights"])
def test_layers_the_kernels_cannot_take_fall_back(ops, case):
    """With the kernels active, a model they do not fit still decodes, on PyTorch's operators."""
    torch.manual_seed(0)
    config = TransformerConfig.from_name("tiny")
    if case == "head_dim 24":
        config = type(config).from_dict({"dim": 48, "n_head": 2}, base=config)
    model = Transformer(config).eval()
    if case == "fp16 weights":
        model = model.to(torch.float16)
    idx = torch.randint(0, 64, (2, 12))
    with torch.inference_mode():
        full = model(idx)[:, -1]
        model.setup_caches(2, 16, dtype=torch.float16 if case == "fp16 cache" else None)
        model(idx[:, :11], 0)
        last = model(idx[:, 11:], 11)[:, -1]
    assert cpu_kernels.ACTIVE
    torch.testing.assert_close(last, full, atol=2e-2 if case.startswith("fp16") else 1e-5, rtol=1e-2)


def test_training_never_takes_the_kernels(ops):
    """The kernels have no backward: with autograd on, the model runs PyTorch's operators and gradients flow."""
    torch.manual_seed(0)
    model = Transformer(TransformerConfig.from_name("tiny"))
    model.setup_caches(1, 16)  # loads the kernels
    model.clear_caches()
    loss = model(torch.randint(0, 64, (1, 8)))[:, :, :64].logsumexp(-1).mean()
    loss.backward()
    assert model.model.layers[0].self_attn.qkv_proj.weight.grad.abs().sum() > 0


def test_kernel_errors_name_the_problem(ops):
    with pytest.raises(RuntimeError, match="rows"):
        ops.gemv(torch.zeros(5, 16), torch.zeros(8, 16))
    with pytest.raises(RuntimeError, match="columns"):
        ops.gemv(torch.zeros(1, 16), torch.zeros(8, 17))
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        ops.gemv(torch.zeros(1, 16), torch.zeros(8, 16, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="head_dim"):
        ops.decode_attention(torch.zeros(1, 2, 100), torch.zeros(1, 2, 8, 100), torch.zeros(1, 2, 8, 100), 4)
    with pytest.raises(RuntimeError, match="length"):
        ops.decode_attention(torch.zeros(1, 2, 16), torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 16), 9)
    with pytest.raises(RuntimeError, match="residual"):
        ops.gemv(torch.zeros(2, 16), torch.zeros(8, 16), torch.zeros(8, 2))
    with pytest.raises(RuntimeError, match="position"):
        ops.rope_cache(torch.zeros(1, 96), torch.zeros(16), torch.zeros(16), torch.zeros(1, 2, 8, 16),
                       torch.zeros(1, 2, 8, 16), 8)


def test_switches(ops, monkeypatch):
    assert cpu_kernels.status() == "in use"
    with cpu_kernels.disabled():
        assert not cpu_kernels.ACTIVE and cpu_kernels.status() == "loaded, disabled"
    assert cpu_kernels.ACTIVE
    monkeypatch.setenv(cpu_kernels.ENV_SWITCH, "0")
    assert "MEDLVM_CPU_KERNELS=0" in cpu_kernels.unsupported_reason()


def test_a_failed_build_is_reported_not_raised(tmp_path, monkeypatch):
    if cpu_kernels.unsupported_reason():
        pytest.skip("no toolchain to fail with")
    broken = tmp_path / "cpu_kernels.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_kernels, "SOURCE", broken)
    monkeypatch.setenv("MEDLVM_CACHE", str(tmp_path / "cache"))
    ok, reason = cpu_kernels._compile_and_load()
    assert not ok and "compiling cpu_kernels.cpp failed" in reason


def test_a_missing_source_is_a_logged_reason_and_decoding_goes_on(tmp_path, monkeypatch, caplog):
    """An install without cpu_kernels.cpp (MedLVM issue 13): the kernels are unavailable, nothing raises."""
    monkeypatch.setattr(cpu_kernels, "SOURCE", tmp_path / "cpu_kernels.cpp")
    for name, value in (("_loaded", None), ("_reason", "not loaded yet"), ("ACTIVE", False)):
        monkeypatch.setattr(cpu_kernels, name, value)
    monkeypatch.delenv(cpu_kernels.ENV_SWITCH, raising=False)
    assert cpu_kernels.unsupported_reason() == f"their source cpu_kernels.cpp is missing from {tmp_path}"
    assert cpu_kernels.status().startswith("not available: their source cpu_kernels.cpp is missing")
    model = Transformer(TransformerConfig.from_name("tiny")).eval()
    with caplog.at_level("INFO", logger=cpu_kernels.log.name):
        model.setup_caches(1, 8)  # what a prediction on CPU calls first
    assert "CPU kernels not used: their source cpu_kernels.cpp is missing" in caplog.text
    assert not cpu_kernels.ACTIVE and cpu_kernels.load() is False
    with torch.no_grad():
        assert model(torch.zeros(1, 1, dtype=torch.long), 0).shape[:2] == (1, 1)


@pytest.mark.slow
def test_the_avx2_build_passes_these_tests(tmp_path):
    """This machine may have AVX-512; the AVX2 path (two 8-lane halves per vector) is built and tested too."""
    if cpu_kernels.unsupported_reason() or "avx512f" not in cpu_kernels.cpu_flags():
        pytest.skip("needs a toolchain and an AVX-512 machine (where native already is the AVX2 path)")
    env = dict(os.environ, **{cpu_kernels.ENV_MARCH: "x86-64-v3", "MEDLVM_CACHE": str(tmp_path)})
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                             "not avx2 and not failed_build"], env=env, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[4], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout
    built = list(tmp_path.glob("kernels/*/*.so"))
    assert len(built) == 1
    if shutil.which("objdump"):  # no AVX-512 register in the build
        assert "zmm" not in subprocess.run(["objdump", "-d", str(built[0])], capture_output=True, text=True).stdout
