"""Paired statistics of the motion evaluation: is a method better than copy-last, and than the best baseline?

Per (metric, organ) and method, every case gives one value: the mean over its predicted phases. The paired
difference of a case is method minus comparator (copy-last, or the baseline with the best mean over the
cases). Over the cases: the mean difference with a percentile bootstrap 95 % confidence interval
(cases resampled with replacement, N_RESAMPLES times, a fixed seed, so a report is reproducible), and the
cases won, lost and tied (a win is a difference in the metric's good direction). A case where either
value is missing (NaN) is left out and named in the row's note. With one case the interval is the point
itself and the note says so; with none, everything is NaN.
"""

from __future__ import annotations

import csv
import html
import math
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError

N_RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
BASELINES = ("copy-last", "mirror", "dvf", "pca")
HIGHER_IS_BETTER = ("dsc", "psnr_db", "ssim")
NOT_COMPARED = ("reference",)  # the protocol's ceiling (the true image), not a method
PAIRED_COLUMNS = ("metric", "organ", "method", "comparison", "against", "n_cases", "mean_difference", "ci_low",
                  "ci_high", "wins", "losses", "ties", "better_is", "note")


class Interval(NamedTuple):
    """Mean of the values and its bootstrap confidence interval; n: the finite values used."""

    mean: float
    low: float
    high: float
    n: int


class Paired(NamedTuple):
    """One row of motion_paired.csv."""

    metric: str
    organ: str
    method: str
    comparison: str  # "copy-last" or "best baseline"
    against: str  # the comparator's name
    n_cases: int
    mean_difference: float
    ci_low: float
    ci_high: float
    wins: int
    losses: int
    ties: int
    better_is: str  # "higher" or "lower"
    note: str


def bootstrap_ci(values: Sequence[float], n_resamples: int = N_RESAMPLES, level: float = LEVEL,
                 seed: int = SEED) -> Interval:
    """Percentile bootstrap interval of the mean over `values` (NaN ignored).

    One value: the interval is that value; none: NaN. Same values and seed: same interval."""
    if not 0 < level < 1 or n_resamples < 1:
        raise MedLVMError(f"bootstrap: level must be in (0, 1) and resamples >= 1, got {level}, {n_resamples}")
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(mean, float(low), float(high), int(x.size))


def case_means(rows: Sequence[dict], metric: str, organ: str) -> dict[str, dict[str, float]]:
    """{method: {case: mean over its phases}} of one metric and organ (NaN phases ignored; all NaN: NaN)."""
    groups: dict[tuple, list] = defaultdict(list)
    for r in rows:
        if r["metric"] == metric and r["organ"] == organ:
            groups[(r["method"], r["case"])].append(float(r["value"]))
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (method, case), values in groups.items():
        finite = [v for v in values if math.isfinite(v)]
        out[method][case] = float(np.mean(finite)) if finite else math.nan
    return dict(out)


def best_baseline(means: dict[str, dict[str, float]], higher_is_better: bool) -> Optional[str]:
    """The baseline (of BASELINES present) with the best mean over its cases; None when there is none."""
    scores = {}
    for name in BASELINES:
        values = [v for v in means.get(name, {}).values() if math.isfinite(v)]
        if values:
            scores[name] = float(np.mean(values))
    if not scores:
        return None
    return (max if higher_is_better else min)(scores, key=scores.get)


def paired(method_values: dict[str, float], against_values: dict[str, float], higher_is_better: bool,
           **bootstrap) -> tuple[Interval, int, int, int, str]:
    """(interval of the mean difference, wins, losses, ties, note) over the cases both have."""
    cases = sorted(set(method_values) | set(against_values))
    usable = [c for c in cases if math.isfinite(method_values.get(c, math.nan))
              and math.isfinite(against_values.get(c, math.nan))]
    left_out = [c for c in cases if c not in usable]
    d = np.array([method_values[c] - against_values[c] for c in usable], dtype=np.float64)
    sign = 1.0 if higher_is_better else -1.0
    wins, losses = int(np.sum(sign * d > 0)), int(np.sum(sign * d < 0))
    notes = []
    if left_out:
        notes.append(f"{len(left_out)} case(s) without a value left out: {', '.join(left_out)}")
    if len(usable) == 1:
        notes.append("one case: the interval is the point (no spread to resample)")
    if not usable:
        notes.append("no case with both values")
    return bootstrap_ci(d, **bootstrap), wins, losses, len(usable) - wins - losses, "; ".join(notes)


def paired_differences(rows: Sequence[dict], reference: str = "copy-last", **bootstrap) -> list[Paired]:
    """Every method (not the comparator, not 'reference') against `reference` and against the best baseline,
    per metric and organ present in `rows`."""
    pairs = list(dict.fromkeys((r["metric"], r["organ"]) for r in rows))
    out = []
    for metric, organ in pairs:
        higher = metric in HIGHER_IS_BETTER
        means = case_means(rows, metric, organ)
        best = best_baseline(means, higher)
        for method in means:
            if method in NOT_COMPARED:
                continue
            for comparison, against in ((reference, reference), ("best baseline", best)):
                if against not in means or against == method:
                    continue
                interval, wins, losses, ties, note = paired(means[method], means[against], higher, **bootstrap)
                out.append(Paired(metric, organ, method, comparison, against, interval.n, interval.mean,
                                  interval.low, interval.high, wins, losses, ties, "higher" if higher else "lower",
                                  note))
    return out


def write_paired_csv(paired_rows: Sequence[Paired], path) -> Path:
    """motion_paired.csv, written atomically."""
    from MedLVMLib.outputs import atomic_path

    with atomic_path(Path(path), overwrite=True) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(PAIRED_COLUMNS)
            for p in paired_rows:
                writer.writerow([_cell(v) for v in p])
    return Path(path)


def _cell(value) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def _number(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def paired_html(paired_rows: Sequence[Paired], metrics: Optional[Sequence[str]] = None) -> str:
    """HTML table of the paired differences (optionally only some metrics)."""
    chosen = [p for p in paired_rows if metrics is None or p.metric in metrics]
    if not chosen:
        return ""
    head = ("<tr><th>metric</th><th>organ</th><th>method</th><th>minus</th><th>cases</th>"
            "<th>mean difference [95 % CI]</th><th>wins / losses / ties</th><th>note</th></tr>")
    lines = ["<table>", head]
    for p in chosen:
        ci = f"{_number(p.mean_difference)} [{_number(p.ci_low)}, {_number(p.ci_high)}]"
        against = p.against if p.comparison == p.against else f"{p.against} ({p.comparison})"
        cells = [p.metric + (" (higher better)" if p.better_is == "higher" else " (lower better)"), p.organ,
                 p.method, against, str(p.n_cases), ci, f"{p.wins} / {p.losses} / {p.ties}", p.note]
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


VERDICT_METRICS = (("diaphragm_error_mm", "diaphragm", "diaphragm error", "mm"), ("dsc", "lungs", "lungs DSC", ""))


def not_better_sentences(rows: Sequence[dict], reference: str = "copy-last", prefix: str = "medlvm") -> list[str]:
    """One sentence per case and MedLVM method that is not better than `reference` on the diaphragm error or
    the lungs DSC (case means over the predicted phases)."""
    sentences = []
    tables = {(metric, organ): case_means(rows, metric, organ) for metric, organ, _, _ in VERDICT_METRICS}
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"].startswith(prefix)))
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for method in methods:
        for case in cases:
            parts = []
            for metric, organ, name, unit in VERDICT_METRICS:
                means = tables[(metric, organ)]
                ours = means.get(method, {}).get(case, math.nan)
                theirs = means.get(reference, {}).get(case, math.nan)
                if not (math.isfinite(ours) and math.isfinite(theirs)):
                    continue
                worse_or_equal = ours <= theirs if metric in HIGHER_IS_BETTER else ours >= theirs
                if worse_or_equal:
                    parts.append(f"{name} {ours:.3g}{' ' + unit if unit else ''} against {theirs:.3g}"
                                 f"{' ' + unit if unit else ''}")
            if parts:
                sentences.append(f"On case {case}, {method} is not better than {reference}: {'; '.join(parts)}.")
    return sentences


REPORT_PAIRS = (("diaphragm_error_mm", "diaphragm"), ("centroid_error_mm", "tumour"), ("tre_mm", "landmarks"),
                ("mae_hu", "body"))


class ReportParts(NamedTuple):
    """What the motion report shows of the statistics: the CSV, the verdict at the top, the paired table."""

    csv: Path
    verdict_html: str
    paired_html: str


def report_parts(rows: Sequence[dict], out: Path, reference: str = "copy-last") -> ReportParts:
    """Write motion_paired.csv into `out`; the report's sentences on cases where MedLVM is not better than
    `reference` (or one saying it is better on every case) and the paired-difference table."""
    table = paired_differences(rows, reference)
    csv_path = write_paired_csv(table, Path(out) / "motion_paired.csv")
    sentences = not_better_sentences(rows, reference)
    if sentences:
        verdict = "".join(f"<p><b>{html.escape(s)}</b></p>" for s in sentences)
    elif any(r["method"].startswith("medlvm") for r in rows):
        verdict = (f"<p>MedLVM is better than {html.escape(reference)} on every case (diaphragm error and "
                   "lungs DSC, case means over the predicted phases).</p>")
    else:
        verdict = ""
    note = ("<p>Per case: the mean over its predicted phases. Difference = method minus the comparator "
            f"({html.escape(reference)}, or the baseline with the best mean); 95 % CI: percentile bootstrap over "
            f"the cases ({N_RESAMPLES} resamples, seed {SEED}). Organ DSC, diaphragm, tumour centroid and image "
            "MAE here; every metric and organ in motion_paired.csv.</p>")
    shown = [p for p in table if p.metric == "dsc" or (p.metric, p.organ) in REPORT_PAIRS]
    return ReportParts(csv_path, verdict, note + paired_html(shown))
