"""Evaluation outputs shared by every task: long-form CSV, summary tables, figures, a self-contained HTML report.

Rows are plain dicts with the keys of `COLUMNS` (case, phase, method, organ, metric, value); a task
that has no phases or organs puts "-" there. Figures use matplotlib (imported inside the functions).
"""

from __future__ import annotations

import base64
import csv
import html
import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

COLUMNS = ("case", "phase", "method", "organ", "metric", "value")


def write_csv(rows: Iterable[dict], path: Path) -> Path:
    """Long-form CSV (one row per case, phase, method, organ, metric)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            value = row["value"]
            writer.writerow({**row, "value": "nan" if value is None or not math.isfinite(value) else f"{value:.6g}"})
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{**row, "value": float(row["value"])} for row in csv.DictReader(f)]


def ordered(values: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def summarize(rows: Sequence[dict], keys: Sequence[str] = ("method", "phase", "organ", "metric")) -> dict:
    """(key values) -> (mean, sd, n) over the other columns (cases), ignoring NaN."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(float(row["value"]))
    out = {}
    for key, values in groups.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[np.isfinite(arr)]
        out[key] = (float(arr.mean()) if arr.size else math.nan, float(arr.std()) if arr.size else math.nan, arr.size)
    return out


def mean_text(mean: float, sd: float, n: int) -> str:
    """'0.81 ± 0.05' over several values, '0.81' over one (its spread is unknown, not 0), '-' over none."""
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3g} ± {sd:.2g}" if n > 1 else f"{mean:.3g}"


def table_html(rows: Sequence[dict], metric: str, organ: str, higher_is_better: bool = True,
               column_key: str = "phase", not_ranked: Sequence[str] = ("reference",)) -> str:
    """HTML table: methods (rows) x `column_key` values (columns) + overall mean; best per column in bold.

    Methods in `not_ranked` (e.g. a protocol ceiling) are shown but never marked best."""
    sel = [r for r in rows if r["metric"] == metric and r["organ"] == organ]
    if not sel:
        return ""
    methods, columns = ordered(r["method"] for r in sel), ordered(r[column_key] for r in sel)
    stats = summarize(sel, ("method", column_key))
    overall = summarize(sel, ("method",))
    best = {}
    for c in columns + ["all"]:
        vals = [(stats.get((m, c), (math.nan,))[0] if c != "all" else overall[(m,)][0])
                for m in methods if m not in not_ranked]
        finite = [v for v in vals if math.isfinite(v)]
        best[c] = (max(finite) if higher_is_better else min(finite)) if finite else None
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    lines = [f"<table><tr><th>method</th>{head}<th>mean</th></tr>"]
    for m in methods:
        cells = []
        for c in columns + ["all"]:
            mean, sd, n = stats.get((m, c), (math.nan, math.nan, 0)) if c != "all" else overall[(m,)]
            text = mean_text(mean, sd, n)
            bold = best[c] is not None and mean == best[c] and m not in not_ranked
            cells.append(f"<td><b>{text}</b></td>" if bold else f"<td>{text}</td>")
        lines.append(f"<tr><td>{html.escape(m)}</td>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def plot_per_phase(rows: Sequence[dict], metric: str, path: Path, organs: Optional[Sequence[str]] = None,
                   title: Optional[str] = None, ylabel: Optional[str] = None, spread: str = "sd") -> Path:
    """The paper's Figure 3: `metric` per predicted phase, one line per method (mean over cases), one panel
    per organ; spread "sd": error bars of ± sd over the cases, "ci": a band of the bootstrap 95 % confidence
    interval of the mean (`statistics.bootstrap_ci`; no band over a single case)."""
    if spread not in ("sd", "ci"):
        raise ValueError(f"spread must be 'sd' or 'ci', got {spread!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sel = [r for r in rows if r["metric"] == metric]
    organs = list(organs) if organs else ordered(r["organ"] for r in sel)
    methods, phases = ordered(r["method"] for r in sel), ordered(r["phase"] for r in sel)
    bands = phase_intervals(sel)
    stats = summarize(sel, ("method", "phase", "organ"))
    ncol = min(len(organs), 3)
    nrow = math.ceil(len(organs) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.3 * nrow), dpi=110, squeeze=False)
    x = np.arange(len(phases))
    width = 0.8 / max(len(methods), 1)
    for ax, organ in zip(axes.flat, organs):
        for j, m in enumerate(methods):
            mean, low, high = (np.array([bands.get((m, p, organ), (math.nan,) * 4)[k] for p in phases])
                               for k in range(3))
            offset = (j - (len(methods) - 1) / 2) * width * 0.5
            if spread == "ci":
                line = ax.plot(x + offset, mean, marker="o", ms=4, lw=1.4, label=m)[0]
                ax.fill_between(x + offset, low, high, color=line.get_color(), alpha=0.15, lw=0)
            else:
                sd = np.array([stats.get((m, p, organ), (0, math.nan))[1] for p in phases])
                ax.errorbar(x + offset, mean, yerr=sd, marker="o", ms=4, capsize=2, lw=1.4, label=m)
        ax.set_title(organ, fontsize=10)
        ax.set_xticks(x, phases, fontsize=8)
        ax.set_xlabel("predicted phase", fontsize=8)
        ax.set_ylabel(ylabel or metric, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(organs):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(methods), 6), fontsize=8, frameon=False)
    spread_text = "band: bootstrap 95 % CI of the mean" if spread == "ci" else "± sd"
    fig.suptitle(title or f"{metric} per predicted phase (mean over cases, {spread_text})", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def phase_intervals(rows: Sequence[dict]) -> dict:
    """(method, phase, organ) -> statistics.Interval (mean and bootstrap 95 % CI over the cases)."""
    from MedLVMLib.evaluation.statistics import bootstrap_ci

    groups: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        groups[(row["method"], row["phase"], row["organ"])].append(float(row["value"]))
    return {key: bootstrap_ci(values) for key, values in groups.items()}


def plot_difference_grid(truth: np.ndarray, predictions: dict[str, np.ndarray], path: Path,
                         window: tuple[float, float] = (-1000.0, 400.0), error_max: float = 500.0,
                         title: str = "", aspect: float = 1.0) -> Path:
    """The paper's Figure 5: top row ground truth + each method's image, bottom row |error| heatmaps.

    Args:
        truth: 2D HU slice; predictions: method -> 2D HU slice of the same shape.
        window: HU display window of the images; error_max: top of the |error| colour scale (HU).
        aspect: pixel height / width (e.g. slice thickness / pixel spacing for a coronal slice).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 1 + len(predictions)
    panel_w = 2.3  # inches; each panel's height follows the image's physical height / width, so a wide coronal
    panel_h = min(panel_w * truth.shape[0] * aspect / truth.shape[1], 1.5 * panel_w)  # plane is not a thin strip
    fig, axes = plt.subplots(2, n, figsize=(panel_w * n, 2 * (panel_h + 0.35) + 0.5), dpi=110,  # in a tall figure
                             squeeze=False)
    panels = [("ground truth", truth)] + list(predictions.items())
    err_image = None
    for j, (name, image) in enumerate(panels):
        axes[0, j].imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect)
        axes[0, j].set_title(name, fontsize=9)
        if j > 0:
            err = np.abs(np.asarray(image, dtype=np.float32) - truth)
            err_image = axes[1, j].imshow(err, cmap="inferno", vmin=0, vmax=error_max, aspect=aspect)
            axes[1, j].set_title(f"|error| mean {err.mean():.0f} HU", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, 0].axis("off")
    if err_image is not None:
        cbar = fig.colorbar(err_image, ax=axes[1, 0], fraction=0.8, location="left")
        cbar.set_label("|error| (HU)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def image_tag(png: Path, embed: bool = True, width: Optional[int] = None) -> str:
    """<img> for a PNG: embedded as base64 (self-contained report) or linked by relative name."""
    style = f' style="max-width:{width}px"' if width else ' style="max-width:100%"'
    if embed:
        data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}"{style}>'
    return f'<img src="{html.escape(Path(png).name)}"{style}>'


def write_html(path: Path, title: str, sections: Sequence[tuple[str, str]]) -> Path:
    """A self-contained HTML page: title + (heading, html body) sections."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{content}" for h, content in sections)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
h3 {{ margin-bottom: 0.2em; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>
"""
    Path(path).write_text(page, encoding="utf-8")
    return Path(path)
