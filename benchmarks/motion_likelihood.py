"""Does the model predict breathing? Teacher-forced likelihood of the true future against copy-last and mirror.

    python benchmarks/motion_likelihood.py                         # bundled default, held-out phantoms 1000-1002
    python benchmarks/motion_likelihood.py --model medlvm-tiny-zs --seeds 1000 1001 --out docs/motion/likelihood
    python benchmarks/motion_likelihood.py --real 4dlung            # also real anatomy + synthetic breathing

Prints, per predicted phase, the mean log-probability (nats per token) and argmax accuracy of each
continuation under teacher forcing, and for greedy and sampled free-running decoding the share of generated
codes equal to the true future / copy-last / mirror codes. The last line is the tracked number:
margin = log p(true future) - log p(copy-last), > 0 when the model prefers the truth to copying.
With --out, writes likelihood.csv and summary.json there (see MedLVMLib/evaluation/likelihood.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

try:
    from MedLVMLib.evaluation import likelihood
except ImportError:  # run from a checkout without installing
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.evaluation import likelihood
from MedLVMLib.engine import lvm
from MedLVMLib.evaluation import report
from MedLVMLib.synthetic.phantom import breathe_real_ct, make_phantom


def cases(args: argparse.Namespace):
    for seed in args.seeds:
        yield f"phantom-{seed}", make_phantom(seed=seed, n_phases=10, shape=tuple(args.shape)).phases
    if args.real:
        from MedLVMLib.evaluation.motion import REAL_CT
        from MedLVMLib.paths import shared_data_dir

        for name, (ct, labels) in REAL_CT.items():
            if args.real in name:
                case = breathe_real_ct(shared_data_dir() / ct, shared_data_dir() / labels, seed=args.seeds[0],
                                       n_phases=10)
                yield name, case.phases


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="registry id or folder (default: the bundled default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1000, 1001, 1002], help="held-out phantom seeds")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 64, 64], metavar=("Z", "Y", "X"))
    parser.add_argument("--observed", type=int, default=5)
    parser.add_argument("--axis", default="coronal", choices=("coronal", "sagittal", "axial"))
    parser.add_argument("--real", default=None, help="also score the real CT whose name contains this (e.g. 4dlung)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for likelihood.csv and summary.json")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = lvm.load_model(args.model, device="cpu")
    rows, start = [], time.perf_counter()
    for name, phases in cases(args):
        rows += likelihood.diagnose_case(model, phases, args.observed, args.axis, case=name)
    summary = likelihood.summarize(rows)
    print(f"model {model.model_id}, {len({r['case'] for r in rows})} cases, axis {args.axis}, "
          f"{args.observed} observed ({time.perf_counter() - start:.0f} s)\n")
    print(likelihood.frame_table(rows))
    print(f"\nmargin = log p(true) - log p(copy-last) = {summary['margin']:+.3f} nats/token "
          f"({'prefers the true future' if summary['margin'] > 0 else 'prefers copying the last phase'})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        report.write_csv(likelihood.as_report_rows(rows), args.out / "likelihood.csv")
        meta = {"model": model.model_id, "seeds": args.seeds, "shape": args.shape, "observed": args.observed,
                "axis": args.axis, "real": args.real}
        (args.out / "summary.json").write_text(json.dumps({**meta, **summary}, indent=2))
        print(f"written: {args.out / 'likelihood.csv'}, {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
