"""`medlvm evaluate denoise [DATA] --out REPORT`: MedLVM against total variation, non-local means, bilateral.

Low-dose CT is simulated from each case at the --photons levels; see `MedLVMLib.evaluate_tasks`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands.evaluate_segment import add_common_arguments, check_report_folder, config_from_args

HELP = "evaluate zero-shot denoising against classic filters (CSV + figures + HTML)"
METHODS = ("medlvm", "tv", "nlm", "bilateral")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, METHODS)
    parser.add_argument("--photons", default="5e4,1e4", help="incident photons per ray, comma list")
    parser.add_argument("--slices", type=int, default=3, help="axial slices per case (default 3)")


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib import evaluate_tasks
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.progress import TqdmProgress

    try:
        photons = tuple(float(p) for p in args.photons.split(","))
    except ValueError:
        raise MedLVMError(f"--photons: cannot read '{args.photons}'") from None
    if not photons or min(photons) <= 0 or args.slices < 1:
        raise MedLVMError("--photons must be positive numbers and --slices >= 1")
    config = config_from_args(args, METHODS, photons=photons, n_slices=args.slices)
    check_report_folder(args.out, args.overwrite)
    progress = progress or TqdmProgress()
    rows = evaluate_tasks.evaluate_denoise(args.out, config, progress)
    progress.close()
    print(f"{len(rows)} rows; report: {Path(args.out) / 'report.html'}")
    return 0
