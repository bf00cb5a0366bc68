"""`medlvm info [--model PATH|ID]`: versions, device, registered models; with --model, load it and describe it."""

from __future__ import annotations

import argparse
import platform
import sys

HELP = "show versions, the compute device and the available models (--model: load one and describe it)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH|ID", help="a checkpoint folder or registry id to load and describe")
    parser.add_argument("--tokenizer", metavar="PATH", help="open-muse tokenizer folder for an HF LLaMA folder")
    parser.add_argument("--device", default="cpu", help="device to load --model on (default: cpu)")


def _row(label: str, value: str) -> str:
    return f"{label:<18} {value}"


def _versions() -> list:
    import numpy
    import torch

    from MedLVMLib import __version__

    lines = [_row("medlvm", __version__), _row("python", f"{sys.version.split()[0]} ({platform.platform()})"),
             _row("torch", torch.__version__), _row("numpy", numpy.__version__)]
    from importlib import metadata

    for name in ("transformers", "pytorch-lightning", "SimpleITK", "safetensors", "slicer-core"):
        try:  # metadata only: importing transformers or lightning would take seconds
            lines.append(_row(name, metadata.version(name)))
        except metadata.PackageNotFoundError:
            lines.append(_row(name, "not installed"))
    return lines


def _device_lines() -> list:
    import torch

    from MedLVMLib.engine.devices import describe_device, resolve_device
    from MedLVMLib.engine.models import cpu_kernels

    dev = resolve_device("auto")
    lines = [_row("device", f"{describe_device(dev)} (auto)")]
    if not torch.cuda.is_available():
        lines.append(_row("", "CUDA not available: models run on the CPU"))
    lines.append(_row("CPU kernels", cpu_kernels.status()))
    return lines


def model_rows() -> list:
    """(id, status, location) for every registered model."""
    from MedLVMLib.engine.checkpoints.registry import default_mark, is_available, load_registry, model_location

    registry = load_registry()
    rows = []
    for entry in registry.models.values():
        folder = model_location(entry, registry)
        status = "available" if is_available(folder) else (
            "MISSING (train it: medlvm train ...)" if entry.bundled else "not downloaded")
        mark = default_mark(registry, entry.id)
        rows.append((entry.id + mark, status, str(folder)))
    return rows


def describe_model(target: str, tokenizer: str = None, device: str = "cpu") -> list:
    from MedLVMLib.engine.checkpoints.formats import load_checkpoint
    from MedLVMLib.engine.checkpoints.registry import load_registry, resolve_model_folder
    from MedLVMLib.engine.config import count_params
    from MedLVMLib.engine.devices import resolve_device

    folder = resolve_model_folder(target, load_registry())
    ckpt = load_checkpoint(folder, resolve_device(device), None, tokenizer)
    lines = [_row("model", f"{ckpt.model_id} ({ckpt.format}) at {folder}")]
    if ckpt.description:
        lines.append(_row("", ckpt.description))
    for name, module in (("tokenizer", ckpt.tokenizer), ("transformer", ckpt.transformer)):
        if module is None:
            lines.append(_row(name, "none"))
            continue
        cfg = module.config
        lines.append(_row(name, f"{count_params(module):,} parameters"))
        lines.append(_row("", ", ".join(f"{k}={v}" for k, v in cfg.to_dict().items())))
        if name == "tokenizer":
            lines.append(_row("", f"{cfg.resolution}x{cfg.resolution} images -> {cfg.latent_size}x"
                              f"{cfg.latent_size} = {cfg.tokens_per_image} tokens (f{cfg.downsample_factor})"))
    lines.append(_row("preprocess", f"HU window [{ckpt.preprocess.hu_min:g}, {ckpt.preprocess.hu_max:g}]"))
    return lines


def run(args: argparse.Namespace, progress=None) -> int:
    lines = _versions() + _device_lines() + ["", "models:"]
    lines += [f"  {mid:<28} {status:<38} {where}" for mid, status, where in model_rows()]
    if args.model:
        lines += [""] + describe_model(args.model, args.tokenizer, args.device)
    print("\n".join(lines))
    return 0
