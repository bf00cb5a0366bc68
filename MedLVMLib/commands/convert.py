"""`medlvm convert`: any supported checkpoint folder (official LVM / HF LLaMA + open-muse) -> MedLVM's format."""

from __future__ import annotations

import argparse

from MedLVMLib.commands import flags

HELP = "convert an official LVM checkpoint (HF LLaMA folder + open-muse tokenizer) to MedLVM's single folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="checkpoint folder (HF LLaMA files, optionally with a vqvae/ subfolder)")
    parser.add_argument("out", help="output folder (MedLVM format: config.json + model.safetensors)")
    parser.add_argument("--tokenizer", metavar="PATH", help="open-muse tokenizer folder if not SOURCE/vqvae")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="cast the transformer weights")
    parser.add_argument("--model-id", help="id stored in config.json (default: the output folder name)")
    parser.add_argument("--description", default="", help="description stored in config.json")
    parser.add_argument("--hu-min", type=flags.FINITE, default=-1000.0, help="HU window low end (default -1000)")
    parser.add_argument("--hu-max", type=flags.FINITE, default=1000.0, help="HU window high end (default 1000)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace, progress=None) -> int:
    from pathlib import Path

    from MedLVMLib.engine.checkpoints.formats import load_checkpoint, save_checkpoint
    from MedLVMLib.engine.config import PreprocessConfig
    from MedLVMLib.engine.devices import parse_dtype
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.outputs import check_output_path

    out = check_output_path(args.out, args.overwrite)
    if not args.hu_min < args.hu_max:
        raise MedLVMError(f"--hu-min {args.hu_min:g} must be below --hu-max {args.hu_max:g}")
    preprocess = PreprocessConfig(args.hu_min, args.hu_max)
    ckpt = load_checkpoint(args.source, "cpu", parse_dtype(args.dtype), args.tokenizer)
    if ckpt.format == "medlvm" and ckpt.preprocess != PreprocessConfig():
        preprocess = ckpt.preprocess
    save_checkpoint(out, tokenizer=ckpt.tokenizer, transformer=ckpt.transformer, preprocess=preprocess,
                                model_id=args.model_id or Path(out).name,
                                description=args.description or ckpt.description, overwrite=args.overwrite)
    parts = [p for p, m in (("tokenizer", ckpt.tokenizer), ("transformer", ckpt.transformer)) if m is not None]
    print(f"converted {ckpt.format} checkpoint ({' + '.join(parts)}) to {out}")
    return 0
