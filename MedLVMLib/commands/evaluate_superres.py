"""`medlvm evaluate superres [DATA] --out REPORT`: MedLVM against nearest, linear and cubic interpolation.

Thin slices are averaged --factor at a time into thick slabs and restored; see `MedLVMLib.evaluation`.
"""

from __future__ import annotations

import argparse

from MedLVMLib.commands import flags
from MedLVMLib.commands.evaluate_segment import add_common_arguments, config_from_args, write_report

HELP = "evaluate zero-shot super-resolution (thick to thin slices) against interpolation (CSV + figures + HTML)"
METHODS = ("medlvm", "nearest", "linear", "cubic")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, METHODS)
    parser.add_argument("--factor", type=flags.FINITE, default=2, help="slices per thick slab (default 2)")
    parser.add_argument("--planes", type=flags.POSITIVE_INT, default=8,
                        help="coronal planes restored and scored per case (default 8)")


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.evaluation.superres import evaluate_superres
    from MedLVMLib.tasks.superres import check_factor

    factor = check_factor(args.factor, "z")
    config = config_from_args(args, METHODS, factor=factor, n_planes=args.planes)
    return write_report(evaluate_superres, args, config, progress)
