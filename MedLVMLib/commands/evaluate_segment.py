"""`medlvm evaluate segment [DATA] --out REPORT`: MedLVM against nearest-slice copying and registration.

DATA is a folder with the real CT files of the shared data set (totalseg_abdomen_*, 4dlung_p113_phase40*);
missing files are skipped, and phantoms (seeds 1000+) are always evaluated. REPORT is a folder:
segment_metrics.csv, figures and report.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands import flags

HELP = "evaluate zero-shot segmentation / contour propagation against baselines (CSV + figures + HTML)"
TASK = "segment"


def add_common_arguments(parser: argparse.ArgumentParser, methods: tuple) -> None:
    """Flags shared by the three task evaluations."""
    parser.add_argument("data", type=Path, nargs="?", default=None,
                        help="folder with the real CT files (default: ../shared/data when present)")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--methods", default=",".join(methods), help=f"comma list of {', '.join(methods)}")
    parser.add_argument("--phantoms", type=flags.NON_NEGATIVE_INT, default=2,
                        help="phantom cases (seeds 1000, 1001, ...; default 2)")
    parser.add_argument("--no-real", action="store_true", help="phantoms only")
    parser.add_argument("--model", default=None, help="model id or folder (default: bundled)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--examples", type=flags.POSITIVE_INT, default=3, help="example pairs per sentence")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing report folder (one MedLVM wrote, holding nothing else)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, ("medlvm", "nearest", "registration"))
    parser.add_argument("--every", type=flags.whole(2), default=4, help="label every n-th slice (default 4)")
    parser.add_argument("--phases", type=flags.POSITIVE_INT, default=3, help="phases of the 4D cases (default 3)")


def config_from_args(args: argparse.Namespace, allowed: tuple, **extra):
    """The evaluation's config; MedLVMError for unknown methods, a missing DATA folder or no cases at all."""
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation.common import TaskEvalConfig, check_cases

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in allowed]
    if unknown or not methods:
        raise MedLVMError(f"--methods: unknown {unknown or 'empty list'}; choose from {', '.join(allowed)}")
    if args.data is not None and not Path(args.data).is_dir():
        raise MedLVMError(f"DATA '{args.data}' is not a folder")
    config = TaskEvalConfig(methods=methods, model=args.model, device=args.device, n_phantoms=args.phantoms,
                            shared_data=args.data, real=not args.no_real, n_examples=args.examples, **extra)
    check_cases(config)
    return config


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.evaluation.segment import evaluate_segment

    config = config_from_args(args, ("medlvm", "nearest", "registration"), every=args.every, n_phases=args.phases)
    return write_report(evaluate_segment, args, config, progress)


def write_report(evaluate, args: argparse.Namespace, config, progress=None) -> int:
    """Shared tail of the task evaluations: check the report folder, run `evaluate` into a temporary folder that
    becomes the report when complete (a failed run leaves nothing), say where the report is."""
    from MedLVMLib.outputs import atomic_path, check_output_path
    from MedLVMLib.progress import TqdmProgress

    out = Path(args.out)
    overwrite = args.overwrite or (out.is_dir() and not any(out.iterdir()))  # an empty folder holds nothing to lose
    check_output_path(out, overwrite)
    progress = progress or TqdmProgress()
    with atomic_path(out, overwrite) as tmp:
        tmp.mkdir()
        rows = evaluate(tmp, config, progress)
    progress.close()
    print(f"{len(rows)} rows; report: {out / 'report.html'}")
    return 0
