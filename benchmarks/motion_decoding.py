"""Decoding variants of MedLVM motion prediction on held-out phantoms: greedy, one sample, the median of the
motion fields of several samples; against copy-last and the learned / classic baselines.

    python benchmarks/motion_decoding.py --out docs/motion/decoding            # seeds 1000-1004, 5 samples
    python benchmarks/motion_decoding.py --seeds 1000 --samples 3              # a quick look

Every variant predicts phases 5-9 from phases 0-4 and is scored by the evaluation's own protocol
(evaluation/motion.py `score_prediction`: body MAE, diaphragm position error, DSC / centroid error of the
organs propagated from the last observed phase). Prints one Markdown table of means over cases and phases
(phases 6-9 too, the issue's goal) and, with --out, writes decoding.csv (every row) and decoding.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    from MedLVMLib.evaluation import motion as evaluation
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.evaluation import motion as evaluation
from MedLVMLib.evaluation import report
from MedLVMLib.synthetic.phantom import make_phantom
from MedLVMLib.tasks import motion

COLUMNS = (("diaphragm", "diaphragm_error_mm", "diaphragm mm"), ("tumour", "centroid_error_mm", "tumour mm"),
           ("lungs", "dsc", "lungs DSC"), ("body", "mae_hu", "MAE HU"))


def variants(samples: int) -> dict:
    """name -> options of motion.predict_with_method."""
    return {
        "copy-last": ("copy-last", {}),
        "mirror": ("mirror", {}),
        "medlvm greedy": ("medlvm", dict(greedy=True)),
        "medlvm 1 sample t1.0": ("medlvm", dict(greedy=False, seed=0)),
        f"medlvm median field of {samples} t1.0": ("medlvm", dict(samples=samples, seed=0, combine="field")),
        f"medlvm median field of {samples} t0.7": ("medlvm", dict(samples=samples, seed=0, combine="field",
                                                                  temperature=0.7)),
    }


def table(rows: list, names: list, phases: set) -> str:
    summary = report.summarize([r for r in rows if r["phase"] in phases], keys=("method", "organ", "metric"))
    lines = ["| variant | " + " | ".join(c[2] for c in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name in names:
        cells = []
        for organ, metric, _ in COLUMNS:
            mean, _sd, n = summary.get((name, organ, metric), (float("nan"), 0.0, 0))
            cells.append(f"{mean:.3f}" if metric == "dsc" else f"{mean:.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="registry id or folder (default: the bundled default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002, 1003, 1004])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--extra", nargs="*", default=["rmsim", "convlstm", "dvf"],
                        help="more baselines to score beside copy-last and mirror")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    model = motion.resolve_model(args.model)
    chosen = variants(args.samples)
    chosen.update({name: (name, {}) for name in args.extra})
    rows, seconds = [], {}
    for seed in args.seeds:
        case = make_phantom(seed=seed, n_phases=10)
        for name, (method, options) in chosen.items():
            if method == "medlvm":
                options = {**options, "model": model}
            t0 = time.perf_counter()
            result = motion.predict_with_method(method, case.phases, 5, 5, **options)
            seconds.setdefault(name, []).append(time.perf_counter() - t0)
            rows += evaluation.score_prediction(case, f"phantom-{seed}", name, result.predicted, 5)
        print(f"phantom {seed} done", file=sys.stderr)
    names = list(chosen)
    phase_labels = sorted({r["phase"] for r in rows}, key=lambda p: float(p.rstrip("%")))
    text = (f"Held-out phantoms {args.seeds} (48 x 64 x 64, 10 phases, 0-4 observed), model "
            f"{model.model_id}; means over cases.\n\nAll predicted phases ({', '.join(phase_labels)}):\n\n"
            f"{table(rows, names, set(phase_labels))}\n\nPhases {', '.join(phase_labels[1:])} (the goal's phases "
            f"6-9):\n\n{table(rows, names, set(phase_labels[1:]))}\n\nSeconds per case: "
            + ", ".join(f"{n} {np.mean(s):.1f}" for n, s in seconds.items()) + "\n")
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_csv(rows, args.out / "decoding.csv")
        command = "python benchmarks/motion_decoding.py " + " ".join(argv if argv is not None else sys.argv[1:])
        (args.out / "decoding.md").write_text(f"# MedLVM decoding variants\n\n`{command}`\n\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
