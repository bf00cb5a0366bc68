"""MedLVM's own CPU decode kernels (`cpu_kernels.cpp`), compiled once per machine and loaded on demand.

A decode step at small batch reads every weight and the whole KV cache once; its speed is the memory
bandwidth of two operations: the matrix-vector products of the linear layers and the attention of one new
query over the cache. PyTorch's CPU GEMV (through MKL) streams weights at a third of the bandwidth on some
CPUs (11 GB/s of 33 GB/s on the AMD EPYC this project is measured on), and a step of ~40 small operators per
layer costs more in Python than in arithmetic. So MedLVM ships its own operators (listed in the .cpp), chiefly

    torch.ops.medlvm.gemv(x (..., K) fp32, w (N, K) fp32|bf16, add=None) -> (..., N) fp32    1..4 rows
    torch.ops.medlvm.decode_attention(q (B, H, D), k, v (Bc, H, Tc, D) fp32|bf16, length) -> (B, H, D)
    torch.ops.medlvm.decode_layer(x (B, 1, C), weights..., k, v, cos, sin, pos, eps) -> (B, 1, C)

`load()` compiles them with the machine's C++ compiler through `torch.utils.cpp_extension` (about 10 s, once;
the build is cached under `<MEDLVM_CACHE>/kernels/`), for x86-64 Linux CPUs with AVX2+FMA or AVX-512 (for the
machine it runs on; `MEDLVM_CPU_KERNELS_MARCH=x86-64-v3` builds the AVX2 path anywhere). Where
that is not possible (no compiler, no ninja, another OS or CPU), or with `MEDLVM_CPU_KERNELS=0`, the model
runs on PyTorch's own operators, which give the same results to rounding. One difference is by design: with
bf16 weights, `gemv` keeps the activations in fp32, where PyTorch's mixed mode (and the BLAS path for more than
4 rows) rounds them to bf16, so bf16 logits differ slightly (~5e-3) between those paths. The transformer asks
for them only on CPU in inference (no autograd): `Transformer.setup_caches` calls `load()`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import torch

log = logging.getLogger(__name__)

ENV_SWITCH = "MEDLVM_CPU_KERNELS"  # "0": never use them
ENV_MARCH = "MEDLVM_CPU_KERNELS_MARCH"  # the -march to compile for (default native; x86-64-v3 = the AVX2 path)
SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
MAX_GEMV_ROWS = 4  # kMaxGemvRows in cpu_kernels.cpp
MAX_HEAD_DIM = 128  # kMaxHeadVectors * 16 in cpu_kernels.cpp
KERNEL_DTYPES = (torch.float32, torch.bfloat16)

_loaded: Optional[bool] = None  # None: not tried yet
_reason = "not loaded yet"
_enabled = True
ACTIVE = False  # loaded and enabled: what the model's fast paths check


def cpuinfo(field: str) -> Optional[str]:
    """The first `field` line of /proc/cpuinfo ("flags", "model name"), or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags() -> set:
    """The CPU feature flags (empty where /proc/cpuinfo has none)."""
    return set((cpuinfo("flags") or "").split())


def unsupported_reason() -> Optional[str]:
    """Why the kernels cannot be built on this machine, or None."""
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return f"disabled by {ENV_SWITCH}=0"
    if not SOURCE.is_file():  # e.g. an installed extension that did not package the .cpp
        return f"their source {SOURCE.name} is missing from {SOURCE.parent}"
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"built only on x86-64 Linux, not {platform.system()} {platform.machine()}"
    flags = cpu_flags()
    if "avx512f" not in flags and not {"avx2", "fma"} <= flags:
        return "the CPU has neither AVX-512 nor AVX2 with FMA"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler (c++ or $CXX) on PATH"
    _put_pip_ninja_on_path()
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def _put_pip_ninja_on_path() -> None:
    """torch builds with the `ninja` on PATH; the pip package's lies in an environment that may not be active."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def build_tag() -> str:
    """Identifies a build: the source, the torch version and the CPU it is compiled for (-march=native)."""
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update(torch.__version__.encode())
    h.update(" ".join(sorted(cpu_flags())).encode())
    h.update(march().encode())
    return h.hexdigest()[:16]


def march() -> str:
    return os.environ.get(ENV_MARCH, "").strip() or "native"


def build_dir() -> Path:
    from MedLVMLib.paths import cache_dir

    return cache_dir() / "kernels" / build_tag()


def load() -> bool:
    """Compile (first time on this machine) and load the kernels; True when they are ready to use."""
    global _loaded, _reason, ACTIVE
    if _loaded is None:
        _loaded, _reason = False, unsupported_reason() or ""
        if not _reason:
            _loaded, _reason = _compile_and_load()
        if not _loaded:
            log.info("MedLVM CPU kernels not used: %s", _reason)
        ACTIVE = _loaded and _enabled
    return _loaded


def _compile_and_load() -> tuple:
    from torch.utils.cpp_extension import load as load_extension

    try:  # build_dir() reads the source: it may have gone since unsupported_reason() looked
        folder = build_dir()
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return False, f"cannot prepare their build folder: {exc}"
    name = f"medlvm_cpu_kernels_{folder.name}"  # the folder is named by the build tag
    if not (folder / f"{name}.so").exists():
        log.warning("compiling MedLVM's CPU decode kernels for this machine (once, about 10 s) in %s", folder)
    try:
        load_extension(name=name, sources=[str(SOURCE)], build_directory=str(folder), is_python_module=False,
                       extra_cflags=["-O3", f"-march={march()}", "-fopenmp"], extra_ldflags=["-fopenmp"],
                       verbose=False)
    except Exception as exc:  # a failed build only costs speed: the model falls back to PyTorch's operators
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        errors = [line for line in lines if "error:" in line]  # the compiler's first diagnostic
        return False, f"compiling {SOURCE.name} failed: {(errors or lines or [type(exc).__name__])[0][:300]}"
    return True, ""


def status() -> str:
    """One line for `medlvm info`: whether the kernels are in use, and if not, why."""
    if _loaded is None:
        reason = unsupported_reason()
        if reason:
            return f"not available: {reason}"
        folder = build_dir()
        built = any(folder.glob("*.so"))
        return f"available ({'built in ' + str(folder) if built else 'compiled on first CPU decode'})"
    if not _loaded:
        return f"not available: {_reason}"
    return "in use" if _enabled else "loaded, disabled"


def set_enabled(flag: bool) -> None:
    """Switch the kernels on or off for this process (benchmarks compare both); loading is separate."""
    global _enabled, ACTIVE
    _enabled = bool(flag)
    ACTIVE = bool(_loaded) and _enabled


@contextmanager
def disabled() -> Iterator[None]:
    """Run a block on PyTorch's operators only."""
    before = _enabled
    set_enabled(False)
    try:
        yield
    finally:
        set_enabled(before)
