"""The Markdown tables of docs/motion from a motion evaluation's report folder.

    python tools/motion_tables.py REPORT                 # means per case group, paired differences
    python tools/motion_tables.py REPORT --from-phase 50 --methods medlvm,copy-last,rmsim
    python tools/motion_tables.py REPORT --by-case       # a row block per case instead of per case group

Case groups by name: phantom-*, second-* (the second breathing model), real-* (real anatomy). Means over the
cases of a group and the predicted phases from `--from-phase` % on (default 60: the phases 6-9 of the issue
goals) of: diaphragm error, lungs DSC, tumour centroid error, landmark TRE, MAE inside the body. The paired
table is motion_paired.csv's rows against copy-last (mean per-case difference, bootstrap 95 % CI, wins / losses).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path

try:
    from MedLVMLib.evaluation import report
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from MedLVMLib.evaluation import report

COLUMNS = (  # header, metric, organ ("" = any), format
    ("diaphragm (mm)", "diaphragm_error_mm", "", "{:.2f}"),
    ("lungs DSC", "dsc", "lungs", "{:.3f}"),
    ("tumour centroid (mm)", "centroid_error_mm", "tumour", "{:.2f}"),
    ("landmark TRE (mm)", "tre_mm", "", "{:.2f}"),
    ("MAE (HU)", "mae_hu", "body", "{:.1f}"),
)
GROUPS = (("phantom", "phantoms"), ("second", "second-model phantoms"), ("real", "real anatomy"))


def group_of(case: str) -> str:
    return case.split("-", 1)[0]


def phase_percent(label: str) -> float:
    try:
        return float(label.rstrip("%").strip())
    except ValueError:
        return math.nan


def means(rows: list[dict], from_phase: float, by_case: bool = False) -> tuple[dict, dict]:
    """{(group, method, metric): mean} and {group: number of cases}; rows as `report.read_csv` gives them. The
    group of a row is its case group, or its case with `by_case`."""
    values, cases = defaultdict(list), defaultdict(set)
    wanted = {(metric, organ) for _, metric, organ, _ in COLUMNS}
    for row in rows:
        group = row["case"] if by_case else group_of(row["case"])
        cases[group].add(row["case"])
        if not phase_percent(row["phase"]) >= from_phase:
            continue
        organ = row["organ"] if (row["metric"], row["organ"]) in wanted else ""
        if (row["metric"], organ) not in wanted or math.isnan(row["value"]):
            continue
        values[(group, row["method"], row["metric"])].append(row["value"])
    return {k: sum(v) / len(v) for k, v in values.items()}, {g: len(c) for g, c in cases.items()}


def group_table(rows: list[dict], methods: list[str], from_phase: float, by_case: bool = False) -> str:
    mean, n_cases = means(rows, from_phase, by_case)
    lines = ["| cases | method | " + " | ".join(c[0] for c in COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    groups = [(case, case) for case in sorted(n_cases)] if by_case else GROUPS
    for group, title in groups:
        if group not in n_cases:
            continue
        label = title if by_case else f"{n_cases[group]} {title}"
        for i, method in enumerate(methods):
            cells = [fmt.format(mean[(group, method, metric)]) if (group, method, metric) in mean else "-"
                     for _, metric, _, fmt in COLUMNS]
            lines.append(f"| {label if i == 0 else ''} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(paired: list[dict], methods: list[str]) -> str:
    lines = ["| method | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---|" + "---|" * len(COLUMNS)]
    for method in methods:
        if method == "copy-last":
            continue
        cells = []
        for _, metric, organ, fmt in COLUMNS:
            row = next((r for r in paired if r["method"] == method and r["against"] == "copy-last"
                        and r["metric"] == metric and (not organ or r["organ"] == organ)), None)
            if row is None:
                cells.append("-")
                continue
            diff = [fmt.format(float(row[k])) for k in ("mean_difference", "ci_low", "ci_high")]
            cells.append(f"{_signed(diff[0])} [{_signed(diff[1])}, {_signed(diff[2])}], {row['wins']} / {row['losses']}"
                         f" (n {row['n_cases']})")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(text: str) -> str:
    return text if text.startswith("-") else "+" + text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a folder written by `medlvm evaluate motion`")
    ap.add_argument("--from-phase", type=float, default=60.0, help="first predicted phase in %% (default 60)")
    ap.add_argument("--methods", default=None, help="comma-separated, in table order (default: as in the CSV)")
    ap.add_argument("--by-case", action="store_true", help="means per case instead of per case group")
    args = ap.parse_args(argv)
    rows = report.read_csv(args.report / "motion_metrics.csv")
    methods = args.methods.split(",") if args.methods else report.ordered(r["method"] for r in rows)
    print(group_table(rows, methods, args.from_phase, args.by_case))
    paired_csv = args.report / "motion_paired.csv"
    if paired_csv.exists():
        with open(paired_csv, newline="", encoding="utf-8") as f:
            paired = list(csv.DictReader(f))
        print("\nPaired against copy-last over all cases: mean difference per case, bootstrap 95 % CI, "
              "cases won / lost")
        print(paired_table(paired, methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
