"""`medlvm evaluate motion`: MedLVM against the baselines on a set of 4D CT cases (the paper's protocol).

Writes into REPORT (a folder): motion_metrics.csv (case, phase, method, organ, metric, value),
dsc_per_phase.png (the paper's Figure 3), mae_per_phase.png, difference_<case>.png (Figure 5-like
heatmaps) and report.html (tables + pictures, self-contained).
Launched by torchrun (`torchrun --nproc_per_node N -m MedLVMLib evaluate motion DATA --out REPORT ...`), the cases
are spread over the processes; each case's part is kept in REPORT/cases/<case>/, finished cases are skipped on a
rerun, and rank 0 merges them into the same report (evaluation/cohort.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from MedLVMLib.commands import flags
from MedLVMLib.commands.predict_motion import add_decoding_arguments

HELP = "compare MedLVM motion prediction with the baselines on a folder of cases (CSV, figures, HTML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", type=Path, help="folder of case folders (see `medlvm phantom`), or where "
                                                "--make-phantoms writes them")
    parser.add_argument("--out", type=Path, required=True, help="report folder")
    parser.add_argument("--methods", default="medlvm,copy-last,mirror,dvf,pca",
                        help="comma-separated: medlvm, medlvm:<axis>:<render>[:<sampling>] variants (sampling: greedy, "
                        "t0.5, t0.7p0.9; empty parts take the flags' values), medlvm@<model>[:...] (another model than "
                        "--model: id or folder), copy-last, mirror, dvf, pca, convlstm, rmsim")
    parser.add_argument("--observed", type=flags.POSITIVE_INT, default=5,
                        help="phases given to each method (default 5)")
    parser.add_argument("--model", default=None, help="model id or folder (default: bundled)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--axis", default=None, choices=("coronal", "sagittal", "axial", "multi"))
    parser.add_argument("--render", default=None, choices=("direct", "warp"))
    parser.add_argument("--samples", type=flags.POSITIVE_INT, default=1, help="MedLVM samples per case (default 1)")
    parser.add_argument("--combine", default="image", choices=("image", "field"),
                        help="with --samples > 1 and warp: score the first sample (image) or the last phase warped by "
                        "the voxel-wise median of the samples' motion fields (field)")
    parser.add_argument("--motion", default=None, choices=("free", "observed"),
                        help="with warp: free or observed (predicted fields kept to the observed breathing mode and "
                        "range; the default with warp); a method may name its own, e.g. medlvm:coronal:warp:free")
    parser.add_argument("--codes", default=None, choices=("any", "nearby", "same"),
                        help="the codes a predicted image may take per position: any, or those the observed phases "
                        "hold within one code of it (nearby, the default) or exactly there (same); a method may name "
                        "its own, e.g. medlvm:coronal:warp:any")
    parser.add_argument("--seed", type=flags.SEED, default=0)
    add_decoding_arguments(parser)
    parser.add_argument("--batch-size", type=flags.POSITIVE_INT, default=None, help="slices per model call")
    parser.add_argument("--cases", type=flags.POSITIVE_INT, default=None, help="evaluate only the first N cases")
    parser.add_argument("--heatmaps", type=flags.NON_NEGATIVE_INT, default=3,
                        help="cases that get a difference heatmap figure (default 3)")
    parser.add_argument("--register-voxels", type=flags.POSITIVE_INT, default=None, metavar="N",
                        help="the scoring's registration (mask propagation, landmarks) stops at the pyramid level of "
                        "at most N voxels and resamples its field to the case's grid (default: "
                        "evaluation.motion.SCORE_REGISTER_VOXELS, a 256x256 CT at about half resolution; a larger N "
                        "is more exact and slower)")
    parser.add_argument("--no-reference", action="store_true",
                        help="leave out the 'reference' row (the protocol applied to the true image)")
    parser.add_argument("--make-phantoms", type=flags.NON_NEGATIVE_INT, default=0, metavar="N",
                        help="first write N held-out phantom cases (seeds 1000..) into DATA")
    parser.add_argument("--real", action="store_true", help="with --make-phantoms: also the real-anatomy cases")
    parser.add_argument("--real-native", action="store_true",
                        help="with --real: the real-anatomy cases at their CT's own grid (not resampled to 48x64x64)")
    parser.add_argument("--second", type=flags.NON_NEGATIVE_INT, default=0, metavar="N",
                        help="also write N phantoms breathing with the second, independent breathing model")
    parser.add_argument("--shared-data", type=Path, default=None,
                        help="folder with the real CT (default ../shared/data)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing report folder (one MedLVM wrote, holding nothing else)")


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation import cohort
    from MedLVMLib.evaluation import motion as motion_eval
    from MedLVMLib.outputs import atomic_path, check_output_path
    from MedLVMLib.progress import TqdmProgress

    progress = progress or TqdmProgress()
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    if not methods:
        raise MedLVMError("--methods is empty; name at least one, e.g. medlvm,copy-last")
    config = motion_eval.MotionEvalConfig(methods=methods, n_observed=args.observed, model=args.model,
                                       axis=args.axis, render=args.render, samples=args.samples, combine=args.combine,
                                       motion=args.motion, codes=args.codes,
                                       seed=args.seed, temperature=args.temperature, top_p=args.top_p,
                                       greedy=args.greedy, device=args.device, batch_size=args.batch_size,
                                       n_cases=args.cases,
                                       heatmap_cases=args.heatmaps, reference=not args.no_reference,
                                       register_voxels=args.register_voxels or motion_eval.SCORE_REGISTER_VOXELS)
    for method in methods:
        motion_eval.parse_method(method, config)
    if cohort.detect_launch().torchrun:
        if args.make_phantoms or args.real or args.second:
            raise MedLVMError("--make-phantoms / --real / --second under torchrun: make the cases first (e.g. "
                              "`medlvm phantom DATA/phantom-1000 --seed 1000`, one per case), then launch torchrun "
                              "on DATA")
        return cohort.evaluate_motion_cases(args.data, args.out, config, args.overwrite)
    check_output_path(args.out, args.overwrite)
    if args.make_phantoms or args.real or args.second:
        motion_eval.make_evaluation_set(args.data, args.make_phantoms, real=args.real, shared_data=args.shared_data,
                                     progress=progress, second=args.second, real_native=args.real_native)
        progress.close()  # the "making cases" line before the evaluation's
    motion_eval.list_dataset(args.data, args.cases)
    with atomic_path(args.out, args.overwrite) as tmp:
        result = motion_eval.evaluate_motion(args.data, tmp, config, progress=progress)
    progress.close()
    print(f"metrics: {args.out / result.csv.name}")
    for fig in result.figures:
        print(f"figure: {args.out / fig.name}")
    print(f"report: {args.out / 'report.html'}")
    return 0
