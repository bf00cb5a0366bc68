"""Seconds per 4D CT for MedLVM motion prediction, per stage (read, tokenize, generate, decode, write), and tokens/s.

Default: the demo case (phantom.demo_case(), 10 phases of 48 x 64 x 64, 5 observed, 5 predicted) with the
bundled default model (random weights until it is trained). With presets it builds a model of random
weights (speed does not depend on the values) and a synthetic 10-phase case whose sentence axis has
--slices slices of --size x --size pixels:

    python benchmarks/motion.py                                   # demo size, bundled model, CPU
    python benchmarks/motion.py --preset medlvm-tiny --threads 1  # same size, random weights, one thread
    python benchmarks/motion.py --preset tiny --slices 16 --size 32 --phases 6 --observed 3   # seconds
    python benchmarks/motion.py --codes any    # the generate stage without the vocabulary restriction
    # clinical size: a real CT at its native grid with synthetic breathing, the model's working grid against
    # every native slice, each in its own process (seconds per stage and peak memory side by side):
    python benchmarks/motion.py --real ../shared/data/4dlung_p113_phase40.nii.gz --grid both --render warp
    python benchmarks/motion.py --real ../shared/data/4dlung_p113_phase40.nii.gz --real-shape 140,512,512 \
        --grid model --render warp
    # the issue's GPU case (goal: <= 40 s per patient on one H100):
    python benchmarks/motion.py --preset lvm-7b --tokenizer muse-f16-8192 --dtype bf16 --device cuda \
        --slices 128 --size 256 --batch-size 48

Prints one Markdown table: stage, seconds, share; then tokens/s, the generate stage against its memory-bandwidth
bound (weights + KV cache bytes read per decode step over the measured copy bandwidth, as benchmarks/decode.py
computes it), the process's peak resident memory and (CUDA) peak GPU memory. With --grid both, one table with a
column per grid (each run in a fresh process, so that each peak memory is its own).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

try:
    from MedLVMLib.engine import lvm
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.engine import lvm
from MedLVMLib.engine.config import PreprocessConfig, TokenizerConfig, TransformerConfig
from MedLVMLib.engine.devices import resolve_device
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.imaging.phases_io import read_phases, write_phases
from MedLVMLib.imaging.volume import Phases
from MedLVMLib.synthetic import phantom
from MedLVMLib.tasks import common, motion

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _load_decode_benchmark():
    """benchmarks/decode.py, the home of the bandwidth measurement and bound shared by both benchmarks."""
    spec = importlib.util.spec_from_file_location("medlvm_bench_decode", Path(__file__).with_name("decode.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


decode_bench = _load_decode_benchmark()


def random_model(preset: str, tokenizer: str, device: torch.device, dtype: torch.dtype) -> lvm.MedLVMModel:
    """Random weights built directly on the device (a 7B model never touches CPU memory)."""
    torch.manual_seed(0)
    with torch.device(device):
        tokenizer_model = VQGAN(TokenizerConfig.from_name(tokenizer)).eval()
        with decode_bench.default_dtype(dtype):
            transformer = Transformer(TransformerConfig.from_name(preset)).eval()
    return lvm.MedLVMModel(tokenizer_model, transformer, PreprocessConfig(), f"{preset}+{tokenizer} (random)",
                           device, dtype)


def synthetic_case(n_phases: int, slices: int, size: int, axis: str) -> Phases:
    """Phantom anatomy resampled so that slicing along `axis` gives `slices` frames of size x size."""
    shape = {"axial": (slices, size, size), "coronal": (size, slices, size), "sagittal": (size, size, slices)}[axis]
    small = phantom.make_phantom(seed=0, n_phases=n_phases, shape=tuple(min(s, 64) for s in shape))
    from scipy import ndimage

    zoom = [1.0] + [t / s for t, s in zip(shape, small.phases.shape)]
    array = ndimage.zoom(small.phases.array, zoom, order=1).astype(np.float32)
    return Phases(array, small.phases.geometry)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def record_generate_calls(transformer: Transformer) -> list:
    """(batch, cache length) of every generate call, as its KV cache is set up: the batches the engine really
    used (it halves them on out-of-memory). Wraps this model object's method; nothing else changes."""
    calls: list = []
    setup = transformer.setup_caches

    def recording(max_batch_size: int, max_seq_length: int, dtype=None) -> None:
        setup(max_batch_size, max_seq_length, dtype)
        calls.append((max_batch_size, max_seq_length))

    transformer.setup_caches = recording
    return calls


def generate_bound_s(transformer: Transformer, calls: list, steps: int, bandwidth: float) -> float:
    """Seconds the decode steps of `calls` take at the memory-bandwidth bound (prefill not counted).

    Each call decodes `steps` tokens per sentence; its cache holds the prompt plus those steps, so a step reads
    the weights and, on average, length - steps / 2 positions of KV cache per sentence.
    """
    weight_elem = transformer.lm_head.weight.element_size()
    kv_elem = torch.tensor([], dtype=transformer.compute_dtype()).element_size()
    return sum(batch * steps / decode_bench.bound_tokens_per_s(transformer.config, batch, length - steps / 2,
                                                              weight_elem, kv_elem, bandwidth)
               for batch, length in calls)


def run_once(args, model, path: Path, out: Path) -> dict:
    device = model.device
    calls = record_generate_calls(model.transformer)
    t0 = time.perf_counter()
    phases = read_phases(path)
    t_read = time.perf_counter() - t0
    result = motion.predict_motion(phases, args.observed, n_future=args.future, model=model, axis=args.axis,
                                   batch_size=args.batch_size, seed=0, greedy=args.greedy, render=args.render,
                                   grid=args.grid, codes=args.codes)
    _sync(device)
    t1 = time.perf_counter()
    write_phases(result.predicted, out, overwrite=True)
    t_write = time.perf_counter() - t1
    stages = {"read": t_read, "resample": result.timings.get("resample", 0.0),
              **{k: result.timings.get(k, 0.0) for k in ("tokenize", "generate", "decode")},
              f"render ({args.render})": result.timings.get("render", 0.0), "write": t_write}
    n_future = result.predicted.n_phases
    del model.transformer.setup_caches  # the recording wrapper: back to the class's method
    return {"stages": stages, "tokens": result.tokens_generated, "shape": phases.array.shape,
            "n_slices": common.n_slices(result.working_shape, args.axis), "calls": calls,
            "steps": n_future * model.tokens_per_image, "working_shape": result.working_shape}


def print_table(args, model, report: dict, device: torch.device, build_s: float, bandwidth: float) -> None:
    stages, total = report["stages"], sum(report["stages"].values())
    print(f"\nMedLVM motion benchmark: model {model.model_id}, device {device}, dtype {args.dtype}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"case {report['shape']} (phases, Z, Y, X); grid {args.grid}: the model works on "
          f"{tuple(report['working_shape'])}; {args.axis} sentences: {report['n_slices']} slices, "
          f"{args.observed} observed -> {report['shape'][0] - args.observed if args.future is None else args.future} "
          f"predicted; model built/loaded in {build_s:.1f} s\n")
    print("| stage | seconds | share |\n|---|---:|---:|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.2f} | {100 * seconds / max(total, 1e-9):.0f} % |")
    print(f"| **total per 4D CT** | **{total:.2f}** | |")
    print(f"\ngenerated {report['tokens']} tokens: {report['tokens'] / max(stages['generate'], 1e-9):.0f} tokens/s")
    bound = generate_bound_s(model.transformer, report["calls"], report["steps"], bandwidth)
    batches = ", ".join(str(b) for b, _ in report["calls"])
    print(f"bandwidth bound of the generate stage: {bound:.3g} s (weights + KV cache read per decode step at "
          f"{bandwidth:.1f} GB/s copy bandwidth; batches {batches}); measured {stages['generate']:.3g} s, prefill "
          f"included: **{100 * bound / max(stages['generate'], 1e-9):.0f} % of the bandwidth bound**")
    print(f"peak resident memory of the process: {peak_rss_gib():.2f} GiB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB "
              f"({torch.cuda.get_device_name(device)})")


def peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def real_case(ct: Path, shape: Optional[str], n_phases: int) -> Phases:
    """A real CT with synthetic breathing at its native grid (or resampled to `shape` = "Z,Y,X" first)."""
    from MedLVMLib.imaging.volume_io import read_volume
    from MedLVMLib.synthetic.realct import breathe_real_ct

    native = read_volume(ct).array.shape
    case = breathe_real_ct(ct, seed=0, n_phases=n_phases, max_shape=tuple(native))
    if not shape:
        return case.phases
    from MedLVMLib.imaging import resample

    target = tuple(int(v) for v in shape.split(","))
    grid = resample.grid_over(resample.Grid(case.phases.shape, case.phases.geometry), target)
    array = resample.resample_volumes(case.phases.array, target)
    return Phases(array, grid.geometry)


def compare_grids(argv: list, path: Path) -> None:
    """Each grid in a fresh process on the same case file; one table with both."""
    reports = {}
    for grid in ("native", "model"):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
            report_path = Path(handle.name)
        command = [sys.executable, __file__, *argv, "--grid", grid, "--input", str(path), "--json", str(report_path)]
        subprocess.run(command, check=True)
        reports[grid] = json.loads(report_path.read_text())
        report_path.unlink()
    native, model = reports["native"], reports["model"]
    print("\n## working grid against every native slice (same case, same model, one process each)\n")
    print(f"case {tuple(native['shape'])}; native grid {tuple(native['working_shape'])}, "
          f"model grid {tuple(model['working_shape'])}\n")
    print("| stage | native grid s | model grid s | speed-up |\n|---|---:|---:|---:|")
    for name in native["stages"]:
        a, b = native["stages"][name], model["stages"].get(name, 0.0)
        ratio = f"{a / b:.1f}x" if a > 1e-3 and b > 1e-3 else "-"
        print(f"| {name} | {a:.2f} | {b:.2f} | {ratio} |")
    ta, tb = sum(native["stages"].values()), sum(model["stages"].values())
    print(f"| **total per 4D CT** | **{ta:.2f}** | **{tb:.2f}** | **{ta / max(tb, 1e-9):.1f}x** |")
    print(f"| peak resident memory (GiB) | {native['peak_rss_gib']:.2f} | {model['peak_rss_gib']:.2f} | |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=None, help="transformer preset with random weights (default: bundled)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer preset (default: same name as --preset)")
    parser.add_argument("--model", default=None, help="a model id or folder instead of random weights")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=None, help="synthetic case: slices along the sentence axis")
    parser.add_argument("--size", type=int, default=None, help="synthetic case: in-plane pixels per slice")
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--observed", type=int, default=5)
    parser.add_argument("--future", type=int, default=None)
    parser.add_argument("--axis", default="coronal", choices=("coronal", "sagittal", "axial"))
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per generate call")
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--codes", default="nearby", choices=("any", "nearby", "same"),
                        help="the codes a predicted image may take (predict motion --codes; default nearby)")
    parser.add_argument("--render", default="direct", choices=("direct", "warp"),
                        help="direct (the model's own cost, default here) or warp (adds the registrations)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--grid", default="model", choices=("model", "native", "both"),
                        help="the model's working grid, every native slice, or both in separate processes")
    parser.add_argument("--real", type=Path, default=None,
                        help="a real CT (NIfTI, NRRD...): breathed synthetically at its native grid")
    parser.add_argument("--real-shape", default=None, help="with --real: resample the 4D CT to Z,Y,X first")
    parser.add_argument("--input", type=Path, default=None, help="a 4D CT file to run on (instead of a made case)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--warmup", action="store_true", help="run once untimed first (CUDA kernels, caches)")
    args = parser.parse_args(argv)
    if args.grid == "both":
        raw = list(sys.argv[1:] if argv is None else argv)
        passed = [a for i, a in enumerate(raw) if a not in ("--grid", "--grid=both")
                  and not (i and raw[i - 1] == "--grid")]  # the children get --grid and --input (wins over --real)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "ct.seq.nrrd"
            write_phases(make_case(args, None), path)
            compare_grids(passed, path)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bandwidth = decode_bench.measure_bandwidth(device)  # before the model: its buffers are freed again
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if args.preset:
        model = random_model(args.preset, args.tokenizer or args.preset, device, DTYPES[args.dtype])
    else:
        model = lvm.load_model(args.model, device=device, dtype=DTYPES[args.dtype])
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = args.input
        if path is None:
            path = Path(tmp) / "ct.seq.nrrd"
            write_phases(make_case(args, model.image_size), path)
        if args.warmup:
            run_once(args, model, path, Path(tmp) / "warm.seq.nrrd")
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
        report = run_once(args, model, path, Path(tmp) / "pred.seq.nrrd")
    print_table(args, model, report, device, build_s, bandwidth)
    if args.json:
        figures = {k: report[k] for k in ("stages", "tokens", "shape", "working_shape")}
        args.json.write_text(json.dumps({**figures, "peak_rss_gib": peak_rss_gib(), "build_s": build_s}))
    return 0


def make_case(args, image_size: Optional[int]) -> Phases:
    if args.real:
        return real_case(args.real, args.real_shape, args.phases)
    if args.slices or args.size:
        return synthetic_case(args.phases, args.slices or 64, args.size or image_size or 64, args.axis)
    return phantom.demo_case().phases


if __name__ == "__main__":
    sys.exit(main())
