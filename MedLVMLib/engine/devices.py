"""Device choice and memory-safe batching."""

from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

import torch

from MedLVMLib.errors import MedLVMError

log = logging.getLogger(__name__)


def resolve_device(device: Any = "auto") -> torch.device:
    """"auto" -> cuda if available, else cpu; "cpu", "cuda", "cuda:N", "mps" or a torch.device as given.

    Raises MedLVMError if the requested accelerator is not available.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise MedLVMError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MedLVMError(f"device {name!r} requested but CUDA is not available (torch {torch.__version__}); "
                              "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MedLVMError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise MedLVMError("device 'mps' requested but it is not available; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise MedLVMError(f"unsupported device {name!r}: use auto, cpu, cuda or cuda:N")
    return dev


def default_dtype(device: torch.device) -> torch.dtype:
    """Transformer weights: bf16 on CUDA (where supported), fp16 on MPS, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def parse_dtype(dtype: Any) -> Optional[torch.dtype]:
    """None, a torch.dtype, or one of "fp32"/"float32", "bf16"/"bfloat16", "fp16"/"float16"."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}
    key = str(dtype).lower().replace("torch.", "")
    if key not in names:
        raise MedLVMError(f"unknown dtype {dtype!r}; use one of fp32, bf16, fp16")
    return names[key]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{device} ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    return f"{device} ({torch.get_num_threads()} threads)"


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def chunked(fn: Callable[[slice], Any], n_items: int, batch_size: Optional[int] = None) -> List[Any]:
    """Call fn(slice) over 0..n_items in batches and return the results in order.

    On a CUDA out-of-memory error the batch size is halved and the failed batch retried; at batch size 1 a
    MedLVMError says what to do. batch_size None = everything in one batch.
    """
    size = max(1, batch_size or n_items)
    results: List[Any] = []
    start = 0
    while start < n_items:
        stop = min(n_items, start + size)
        try:
            results.append(fn(slice(start, stop)))
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if size == 1:
                raise MedLVMError("out of memory even with batch size 1: use a smaller model, "
                                  "--device cpu, or free GPU memory") from exc
            size = max(1, (stop - start) // 2)
            log.warning("out of memory with batch %d; retrying with batch %d", stop - start, size)
            continue
        start = stop
    return results
