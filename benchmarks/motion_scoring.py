"""How much the motion scoring changes when its registration stops at a coarser level on a large grid.

    python benchmarks/motion_scoring.py CASE [CASE ...]           # e.g. a native real case of `evaluate motion`
    python benchmarks/motion_scoring.py CASE --observed 5 --voxels 2500000

For each case, two predictions are scored, both ways: mirror (observed phase 2(k-1)-p for phase p, a prediction
that moves the anatomy, not the true way) and the true phases (the evaluation's `reference` row). "full": the
registration of the scoring runs every pyramid level to the full grid; "capped": it stops at the level of at most
--voxels voxels (the evaluation's default, `evaluation.motion.SCORE_REGISTER_VOXELS`) and the field is resampled
to the full grid. Prints the seconds of each and their ratio, and per metric the mean over the predicted phases
both ways and the largest difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

try:
    from MedLVMLib.evaluation import motion
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.evaluation import motion
from MedLVMLib.imaging import cases

FULL = 10**12  # no grid is this large: every level runs


def values(rows: list[dict]) -> dict[tuple[str, str], list[float]]:
    out = defaultdict(list)
    for row in rows:
        out[(row["organ"], row["metric"])].append(row["value"])
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", type=Path, help="case folders (see `medlvm phantom`)")
    parser.add_argument("--observed", type=int, default=5)
    parser.add_argument("--voxels", type=int, default=motion.SCORE_REGISTER_VOXELS,
                        help="the capped registration's largest grid (default: the evaluation's)")
    args = parser.parse_args(argv)
    for folder in args.cases:
        case = cases.load_case(folder)
        k = args.observed
        future = list(range(k, case.phases.n_phases))
        predictions = {"mirror": case.phases.select([max(0, 2 * (k - 1) - p) for p in future]),
                       "reference": case.phases.select(future)}
        print(f"\n{folder.name}: {case.phases.shape} voxels per phase, spacing {case.phases.geometry.spacing}, "
              f"{len(future)} predicted phases")
        print("| prediction | metric | full | capped | largest difference |\n|---|---|---:|---:|---:|")
        seconds = defaultdict(float)
        for name, predicted in predictions.items():
            scored = {}
            for label, voxels in (("full", FULL), ("capped", args.voxels)):
                t0 = time.perf_counter()
                scored[label] = values(motion.score_prediction(case, folder.name, name, predicted, k,
                                                               register_voxels=voxels))
                seconds[label] += time.perf_counter() - t0
            for key in scored["full"]:
                full, capped = scored["full"][key], scored["capped"][key]
                largest = max(abs(a - b) for a, b in zip(full, capped))
                print(f"| {name} | {key[1]} ({key[0]}) | {sum(full) / len(full):.3f} | "
                      f"{sum(capped) / len(capped):.3f} | {largest:.3f} |")
        print(f"seconds: full {seconds['full']:.1f}, capped {seconds['capped']:.1f} "
              f"({seconds['full'] / seconds['capped']:.2f}x faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
