"""`medlvm evaluate segment [DATA] --out REPORT`: MedLVM against nearest-slice copying and registration.

DATA is a folder with the real CT files of the shared data set (totalseg_abdomen_*, 4dlung_p113_phase40*);
missing files are skipped, and phantoms (seeds 1000+) are always evaluated. REPORT is a folder:
segment_metrics.csv, figures and report.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "evaluate zero-shot segmentation / contour propagation against baselines (CSV + figures + HTML)"
TASK = "segment"


def add_common_arguments(parser: argparse.ArgumentParser, methods: tuple) -> None:
    """Flags shared by the three task evaluations."""
    parser.add_argument("data", type=Path, nargs="?", default=None,
                        help="folder with the real CT files (default: ../shared/data when present)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--methods", default=",".join(methods), help=f"comma list of {', '.join(methods)}")
    parser.add_argument("--phantoms", type=int, default=2, help="phantom cases (seeds 1000, 1001, ...)")
    parser.add_argument("--no-real", action="store_true", help="phantoms only")
    parser.add_argument("--model", default=None, help="model id or folder (default: bundled)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--examples", type=int, default=3, help="example pairs per sentence")
    parser.add_argument("--overwrite", action="store_true", help="write into an existing report folder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, ("medlvm", "nearest", "registration"))
    parser.add_argument("--every", type=int, default=4, help="label every n-th slice (default 4)")
    parser.add_argument("--phases", type=int, default=3, help="phases of the 4D cases (default 3)")


def config_from_args(args: argparse.Namespace, allowed: tuple, **extra):
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation.common import TaskEvalConfig

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in allowed]
    if unknown or not methods:
        raise MedLVMError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(allowed)}")
    if args.phantoms < 0:
        raise MedLVMError("--phantoms must be >= 0")
    if args.data is not None and not Path(args.data).is_dir():
        raise MedLVMError(f"DATA '{args.data}' is not a folder")
    return TaskEvalConfig(methods=methods, model=args.model, device=args.device, n_phantoms=args.phantoms,
                          shared_data=args.data, real=not args.no_real, n_examples=args.examples, **extra)


def check_report_folder(out: Path, overwrite: bool) -> None:
    from MedLVMLib.errors import MedLVMError

    if Path(out).exists() and any(Path(out).iterdir()) and not overwrite:
        raise MedLVMError(f"report folder '{out}' is not empty; choose another --out or pass --overwrite")


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation.segment import evaluate_segment

    if args.every < 2 or args.phases < 1:
        raise MedLVMError("--every must be >= 2 and --phases >= 1")
    config = config_from_args(args, ("medlvm", "nearest", "registration"), every=args.every, n_phases=args.phases)
    return write_report(evaluate_segment, args, config, progress)


def write_report(evaluate, args: argparse.Namespace, config, progress=None) -> int:
    """Shared tail of the task evaluations: refuse an existing folder, run `evaluate`, say where the report is."""
    from MedLVMLib.progress import TqdmProgress

    check_report_folder(args.out, args.overwrite)
    progress = progress or TqdmProgress()
    rows = evaluate(args.out, config, progress)
    progress.close()
    print(f"{len(rows)} rows; report: {Path(args.out) / 'report.html'}")
    return 0
