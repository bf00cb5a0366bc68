"""Batched decode speed: MedLVM's generate vs HF `LlamaForCausalLM.generate` on the same weights.

For each batch size it times, on random weights of a transformer preset:
  - ours:       MedLVMLib.engine.generate.generate_images (static KV cache, greedy)
  - HF default: generate(do_sample=False) with its default DynamicCache
  - HF static:  generate(..., cache_implementation="static")
Decode tokens/s = B * (N - 1) / (time from the end of the prefill to the end), marked the same way for all
three (see DecodeClock). It also measures the memory bandwidth (tensor copy) and prints the bandwidth bound:
B tokens per (weights + average KV cache bytes) / bandwidth. Prints a Markdown table; the cpu/wall column
(CPU time / wall time while decoding) well below the thread count means other processes competed for the CPU.

    python benchmarks/decode.py                                   # lvm-100m, prompt 1280, 256 new, B = 1 and 32
    python benchmarks/decode.py --batch 1 4 --new-tokens 32 --prompt 256 --threads 1   # quick
    python benchmarks/decode.py --dtype fp32 bf16                 # ours in fp32 and in CPU mixed mode, HF in fp32
    python benchmarks/decode.py --kernels on                      # ours only with MedLVM's CPU kernels
    python benchmarks/decode.py --device cuda --dtype bf16        # on a GPU (HF static compiled, as HF does there)
    python benchmarks/decode.py --device cuda --dtype bf16 --config lvm-7b --hf-compile off   # HF eager only

On CPU each of our rows is timed twice by default: with MedLVM's CPU decode kernels (models/cpu_kernels.py)
and with PyTorch's operators only, so the kernels' gain is measured in the same run. On a GPU every model is
built there in its own dtype (a 7B model never lands in CPU memory), and HF `generate` with a static cache
compiles the model (torch.compile, CUDA graphs) unless `--hf-compile off`; compiled HF is warmed up on the
timed shapes, so compilation is not timed. Rows are printed as each batch size finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch

try:
    from MedLVMLib.engine.config import TransformerConfig
except ImportError:  # run from a checkout without installing
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.engine.config import TransformerConfig
from MedLVMLib.engine.generate import generate_images
from MedLVMLib.engine.models import cpu_kernels
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.progress import Progress

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 1) -> float:
    """Best wall time of `repeats` runs."""
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def cpu_name() -> str:
    """The CPU model as the OS names it (figures differ between CPU generations)."""
    return cpu_kernels.cpuinfo("model name") or platform.processor() or platform.machine()


def _buffer_megabytes(device: torch.device) -> int:
    """Big enough that one copy takes far longer than the timer's resolution (an H200 copies 512 MB in 0.2 ms)."""
    return 2048 if device.type == "cuda" else 512


def measure_bandwidth(device: torch.device, megabytes: Optional[int] = None) -> float:
    """Copy bandwidth in GB/s, counting bytes read plus bytes written: the bound's yardstick."""
    n = (megabytes or _buffer_megabytes(device)) * 2**20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    seconds = timed(lambda: dst.copy_(src), device, repeats=5)
    return 2 * n * 4 / seconds / 1e9


def measure_read_bandwidth(device: torch.device, megabytes: Optional[int] = None) -> float:
    """Read-only bandwidth in GB/s (a sum over the tensor): a decode step only reads, and reads can run faster
    than copies, so speeds above the copy-rate bound are possible; printed beside it."""
    src = torch.ones((megabytes or _buffer_megabytes(device)) * 2**20 // 4, device=device)
    return src.numel() * 4 / timed(lambda: src.sum(), device, repeats=5) / 1e9


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Modules built inside get `dtype` parameters (with `torch.device(...)`: built there, never copied)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_models(config: TransformerConfig, device: torch.device, dtypes: list,
                 hf_dtype: Optional[torch.dtype]):
    """Ours in each of `dtypes` ({name: model}) and HF in `hf_dtype` (None: no HF), with the same random weights,
    plus the fp32 model's `_agreement_logits`, the reference for `accuracy_line`.

    Every model is built on `device` in its own dtype; the fp32 source is freed before returning (a 7B model:
    27 GB fp32 once, then 13.5 GB per bf16 copy, all on the GPU).
    """
    torch.manual_seed(0)
    with torch.device(device):
        base = Transformer(config)
    with torch.no_grad():
        for p in base.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.02)
    base = base.eval()
    reference = _agreement_logits(base)
    weights = base.state_dict()  # HF key names (q/k/v split)
    ours = {name: _built_in(lambda: Transformer(config), DTYPES[name], device, weights) for name in dtypes}
    hf = None if hf_dtype is None else _built_in(lambda: _hf_model(config), hf_dtype, device, weights, strict=False)
    del base, weights
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return ours, hf, reference


def _built_in(make: Callable[[], torch.nn.Module], dtype: torch.dtype, device: torch.device, weights: dict,
              strict: bool = True) -> torch.nn.Module:
    """`make()` built on `device` in `dtype`, then loaded with `weights` (cast on copy)."""
    with torch.device(device), default_dtype(dtype):
        model = make()
    model.load_state_dict(weights, strict=strict)  # strict=False for HF: its rotary buffers are not in ours
    return model.eval()


def _hf_model(config: TransformerConfig):
    import transformers

    transformers.logging.set_verbosity_error()
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.dim, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.n_layer, num_attention_heads=config.n_head, num_key_value_heads=config.n_head,
        max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_base})
    return transformers.LlamaForCausalLM(hf_config)


@torch.inference_mode()
def _agreement_logits(model: Transformer, tokens: int = 256) -> torch.Tensor:
    """Logits of a fixed random sentence (no cache), fp32."""
    gen = torch.Generator().manual_seed(1234)
    idx = torch.randint(0, model.config.codebook_size, (1, tokens), generator=gen)
    return model(idx.to(model.lm_head.weight.device))[0, :, :model.config.codebook_size].float()


def accuracy_line(name: str, ours: Transformer, ref: torch.Tensor) -> str:
    """How far the cast model's logits lie from fp32's (`ref`): top-1 agreement and the largest difference."""
    got = _agreement_logits(ours)
    agree = (ref.argmax(-1) == got.argmax(-1)).float().mean().item()
    return (f"Accuracy of ours {name} against fp32 on {ref.shape[0]} positions: top-1 agreement "
            f"{100 * agree:.1f} %, max |logit difference| {(ref - got).abs().max().item():.3g} "
            f"(logit std {ref.std().item():.3g}).")


class DecodeClock:
    """Marks when decoding starts: our first progress stage, or HF's first logits-processor call.

    Both come right after the prefill forward and before the first token is sampled, so decode time =
    end - start covers N - 1 decode forwards and N samples in both implementations.
    """

    def __init__(self, device: torch.device):
        self.device, self.start = device, None

    def mark(self) -> None:
        if self.start is None:
            _sync(self.device)
            self.start = (time.perf_counter(), time.process_time())


class _OurClock(Progress):
    def __init__(self, clock: DecodeClock):
        self.clock = clock

    def stage(self, name, total=None) -> None:
        self.clock.mark()


def run_ours(model, prompt: torch.Tensor, n: int, clock: DecodeClock):
    return generate_images(model, prompt, 1, n, greedy=True, progress=_OurClock(clock))


def run_hf(hf, prompt: torch.Tensor, n: int, clock: DecodeClock, codebook_size: int, static: bool,
           compile_static: bool = True):
    from transformers import LogitsProcessor, LogitsProcessorList

    class _HFClock(LogitsProcessor):
        def __call__(self, input_ids, scores):
            clock.mark()
            return scores

    extra = {"cache_implementation": "static", "disable_compile": not compile_static} if static else {}
    with torch.inference_mode():  # LVM's settings: specials suppressed, no EOS
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, eos_token_id=None, pad_token_id=codebook_size,
                           suppress_tokens=list(range(codebook_size, hf.config.vocab_size)),
                           logits_processor=LogitsProcessorList([_HFClock()]), **extra)


def decode_rate(run: Callable[[int, DecodeClock], object], batch: int, new_tokens: int, device, repeats: int,
                full_warmup: bool = False):
    """Best of `repeats`: (decode tokens/s, prefill seconds, cpu/wall ratio during decode).

    The warm-up (allocations, first-call overheads) is a short run, or with `full_warmup` one of the timed
    shape: a compiled model recompiles for every new cache length, and that must not be timed.
    """
    if full_warmup:
        run(new_tokens, DecodeClock(device))
    else:
        run(2, DecodeClock(device), warmup=True)
    best = (0.0, 0.0, 0.0)
    for _ in range(repeats):
        clock = DecodeClock(device)
        _sync(device)
        t0 = time.perf_counter()
        run(new_tokens, clock)
        _sync(device)
        wall, cpu = time.perf_counter() - clock.start[0], time.process_time() - clock.start[1]
        rate = batch * (new_tokens - 1) / max(wall, 1e-9)
        if rate > best[0]:
            best = (rate, clock.start[0] - t0, cpu / max(wall, 1e-9))
    return best


def bound_tokens_per_s(config: TransformerConfig, batch: int, context: float, weight_elem: int, kv_elem: int,
                       bandwidth: float) -> float:
    """Bandwidth bound: every decode step reads all weights but the embedding table, plus the KV cache."""
    weights = (config.n_layer * (4 * config.dim**2 + 3 * config.dim * config.intermediate_size)
               + config.vocab_size * config.dim) * weight_elem
    kv = 2 * config.n_layer * batch * context * config.dim * kv_elem
    return batch / ((weights + kv) / (bandwidth * 1e9))


HF_CACHES = {"default": (("hf_default", False),), "static": (("hf_static", True),),
             "both": (("hf_default", False), ("hf_static", True))}


def hf_compiles(args, device: torch.device) -> bool:
    """Whether HF's static-cache `generate` compiles: HF does so by default on accelerators, never on CPU."""
    return args.hf_compile == "auto" and device.type != "cpu"


def bench_batch(args, config, ours: dict, hf, batch: int, device, bandwidth: float) -> list:
    """One row per dtype of ours, all against the same HF timings of this batch size."""
    gen = torch.Generator().manual_seed(batch)
    prompt = torch.randint(0, config.codebook_size, (batch, args.prompt), generator=gen).to(device)

    def prompt_for(warmup: bool) -> torch.Tensor:  # the warm-up needs the code paths, not the long prefill
        return prompt[:, :64] if warmup else prompt

    hf_row = {}
    compiled = hf_compiles(args, device)
    for key, static in HF_CACHES[args.hf_cache] if hf is not None else ():
        hf_row[key], hf_row[key + "_prefill"], _ = decode_rate(
            lambda n, c, warmup=False, s=static: run_hf(hf, prompt_for(warmup), n, c, config.codebook_size, s,
                                                        compiled),
            batch, args.new_tokens, device, args.repeats, full_warmup=static and compiled)
    rows = []
    for (name, model), kernels in ((item, k) for item in ours.items() for k in args.kernel_modes):
        row = {"B": batch, "dtype": name, "ops": "kernels" if kernels else "torch ops", **hf_row}
        cpu_kernels.set_enabled(kernels)
        try:
            row["ours"], row["prefill"], row["cpu"] = decode_rate(
                lambda n, c, warmup=False, m=model: run_ours(m, prompt_for(warmup), n, c), batch, args.new_tokens,
                device, args.repeats)
        finally:
            cpu_kernels.set_enabled(True)
        model.clear_caches()
        weight_elem = model.lm_head.weight.element_size()
        kv_dtype = model.compute_dtype()  # the KV cache's
        kv_elem = torch.tensor([], dtype=kv_dtype).element_size()
        row["kv"] = str(kv_dtype).replace("torch.", "")
        row["bound"] = bound_tokens_per_s(config, batch, args.prompt + args.new_tokens / 2, weight_elem, kv_elem,
                                          bandwidth)
        rows.append(row)
    return rows


def header(args, config: TransformerConfig, bandwidth: float, read_bandwidth: float, device) -> str:
    """The run's settings and the table head; `row_line` gives the rows."""
    static = "compiled (torch.compile, as HF does here)" if hf_compiles(args, device) else "eager"
    hf = "none" if args.skip_hf else f"{args.hf_dtype or args.dtype[0]}, static cache {static}"
    return "\n".join([
        f"Decode benchmark: preset {args.config} ({config.dim}d, {config.n_layer} layers, vocab "
        f"{config.vocab_size}), prompt {args.prompt}, {args.new_tokens} new tokens, HF {hf}, {device_name(device)}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {cpu_name()}; copy bandwidth "
        f"{bandwidth:.1f} GB/s (the bound's), read-only {read_bandwidth:.1f} GB/s",
        "",
        "| B | ours (weights / KV, ops) | ours tok/s | HF default tok/s | HF static tok/s | ours / HF default "
        "| ours / HF static | bound tok/s | ours % of bound | prefill s: ours / HF | cpu/wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|"])


def row_line(r: dict) -> str:
    def rate(value: Optional[float]) -> str:
        return f"{value:.1f}" if value else "-"

    def ratio(a: Optional[float], b: Optional[float]) -> str:
        return f"{a / b:.2f}x" if a and b else "-"

    hd, hs = r.get("hf_default"), r.get("hf_static")
    hf_prefill = r.get("hf_default_prefill", r.get("hf_static_prefill", 0.0))
    return (f"| {r['B']} | {r['dtype']} / {r['kv']}, {r['ops']} | {r['ours']:.1f} | {rate(hd)} | {rate(hs)} | "
            f"{ratio(r['ours'], hd)} | {ratio(r['ours'], hs)} | {r['bound']:.1f} | "
            f"{100 * r['ours'] / r['bound']:.0f} % | {r['prefill']:.2f} / {hf_prefill:.2f} | {r['cpu']:.2f} |")


def device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="lvm-100m", help="transformer preset (default lvm-100m, 117M params)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32], help="batch sizes (default 1 32)")
    parser.add_argument("--prompt", type=int, default=1280, help="prompt tokens (default 1280 = 5 images)")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens generated (default 256 = 1 image)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["fp32"],
                        help="our weights' dtype(s), each timed in this run (on CPU bf16/fp16 run in mixed mode: "
                        "fp32 activations and KV cache)")
    parser.add_argument("--hf-dtype", choices=sorted(DTYPES), default=None,
                        help="HF's dtype (default: the first --dtype)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings (default 1)")
    parser.add_argument("--skip-hf", action="store_true", help="time only MedLVM's decode")
    parser.add_argument("--hf-cache", choices=sorted(HF_CACHES), default="both",
                        help="HF caches to time: default (DynamicCache), static, or both (default)")
    parser.add_argument("--hf-compile", choices=["auto", "off"], default="auto",
                        help="auto: HF's own choice (its static cache compiles on accelerators; the warm-up runs the "
                        "timed shape, so compile time is not timed); off: eager (generate(disable_compile=True))")
    parser.add_argument("--kernels", choices=["both", "on", "off"], default="both",
                        help="on CPU, time ours with MedLVM's CPU kernels, with PyTorch's operators only, or both "
                        "(default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    config = TransformerConfig.from_name(args.config)
    if args.prompt + args.new_tokens > config.block_size:
        parser.error(f"prompt + new tokens exceed block_size {config.block_size}")
    hf_dtype = None if args.skip_hf else DTYPES[args.hf_dtype or args.dtype[0]]
    args.kernel_modes = {"both": [True, False], "on": [True], "off": [False]}[args.kernels]
    if device.type != "cpu" or not cpu_kernels.load():
        if args.kernels != "off" and device.type == "cpu":
            print(f"MedLVM CPU kernels {cpu_kernels.status()}; timing PyTorch's operators only")
        args.kernel_modes = [False]
    ours, hf, reference = build_models(config, device, args.dtype, hf_dtype)
    bandwidth, read_bandwidth = measure_bandwidth(device), measure_read_bandwidth(device)
    print(header(args, config, bandwidth, read_bandwidth, device), flush=True)
    for b in args.batch:  # each batch's rows as soon as they are measured: a time limit keeps what was done
        for row in bench_batch(args, config, ours, hf, b, device, bandwidth):
            print(row_line(row), flush=True)
    for name, model in ours.items():
        if DTYPES[name] != torch.float32:
            print("\n" + accuracy_line(name, model, reference))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
