"""`medlvm evaluate denoise [DATA] --out REPORT`: MedLVM against total variation, non-local means, bilateral.

Low-dose CT is simulated from each case at the --photons levels; see `MedLVMLib.evaluation`.
"""

from __future__ import annotations

import argparse

from MedLVMLib.commands import flags
from MedLVMLib.commands.evaluate_segment import add_common_arguments, config_from_args, write_report

HELP = "evaluate zero-shot denoising against classic filters (CSV + figures + HTML)"
METHODS = ("medlvm", "tv", "nlm", "bilateral")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, METHODS)
    parser.add_argument("--photons", default="5e4,1e4", help="incident photons per ray, comma list")
    parser.add_argument("--slices", type=flags.POSITIVE_INT, default=3, help="axial slices per case (default 3)")


def run(args: argparse.Namespace, progress=None) -> int:
    import math

    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation.denoise import evaluate_denoise

    try:
        photons = tuple(float(p) for p in args.photons.split(","))
    except ValueError:
        raise MedLVMError(f"--photons: cannot read '{args.photons}'; give numbers such as 5e4,1e4") from None
    if not photons or not all(math.isfinite(p) and p > 0 for p in photons):
        raise MedLVMError(f"--photons must be positive numbers, got '{args.photons}'")
    config = config_from_args(args, METHODS, photons=photons, n_slices=args.slices)
    return write_report(evaluate_denoise, args, config, progress)
