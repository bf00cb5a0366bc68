"""Evaluation of segmentation, denoising and super-resolution: MedLVM against classic methods.

Each `evaluate_*` builds its cases (held-out phantoms, seeds 1000+, never the prompt library's seed 0, and
the real CT of ../shared/data when present), runs every method, and writes into OUT:
    <task>_metrics.csv   long form: case, phase (the setting), method, organ, metric, value
    <task>_*.png         metric plots and per-case figures (input, each method's output, the error)
    report.html          tables (mean ± sd over cases, best in bold) and the figures (linked PNGs beside it)
    summary.md           the same means as Markdown tables
Settings per task:
    segment   "slices": labels on every `every`-th slice, the rest completed; "phases": labels of phase 0
              carried to every other phase of a 4D CT. DSC and HD95 (mm) per structure, on the slices /
              phases that were predicted only.
    denoise   low-dose noise simulated at the stated photon counts; PSNR, SSIM (HU window -1000..1000) and
              MAE inside the body against the full-dose CT. "noisy input" is the reference to beat.
    superres  thin slices averaged F at a time (slabs) and restored; same image metrics against the thin CT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.progress import Progress, ensure

WINDOW = (-1000.0, 1000.0)
DISPLAY = (-1000.0, 400.0)
SEG_REAL = {  # name: (CT, labels, {id: structure})
    "real-totalseg-abdomen": ("totalseg_abdomen_ct.nii.gz", "totalseg_abdomen_labels.nii.gz",
                              {5: "liver", 1: "spleen", 2: "kidney_right", 3: "kidney_left", 52: "aorta"}),
    "real-4dlung-p113": ("4dlung_p113_phase40.nii.gz", "4dlung_p113_phase40_labels.nii.gz",
                         {1: "tumour", 5: "lungs"}),
}
PHANTOM_STRUCTURES = {2: "lungs", 3: "heart", 4: "liver", 6: "tumour"}


@dataclass(frozen=True)
class TaskEvalConfig:
    """What to run. `model`: None (bundled default), an id / folder, or a loaded MedLVMModel."""

    methods: tuple = ()
    model: object = None
    device: str = "auto"
    n_phantoms: int = 2
    first_seed: int = 1000
    shared_data: Optional[Path] = None
    real: bool = True
    every: int = 4  # segment: label every n-th slice
    n_phases: int = 3  # segment: phases of the 4D cases
    photons: tuple = (5e4, 1e4)  # denoise
    factor: int = 2  # superres
    n_planes: int = 8  # superres: coronal planes restored and scored per case
    n_slices: int = 3  # denoise: axial slices per case
    n_examples: int = 3
    notes: tuple = field(default_factory=tuple)


def metric_row(case: str, setting: str, method: str, organ: str, metric: str, value: float) -> dict:
    return {"case": case, "phase": setting, "method": method, "organ": organ, "metric": metric, "value": float(value)}


def real_data_folder(config: TaskEvalConfig) -> Optional[Path]:
    from MedLVMLib.paths import shared_data_dir

    if not config.real:
        return None
    data = Path(config.shared_data) if config.shared_data is not None else shared_data_dir()
    return data if data.exists() else None


def case_names(config: TaskEvalConfig) -> list:
    """The cases an evaluation runs, by name, without making or reading them: phantoms, then the real CTs found."""
    names = [f"phantom-{config.first_seed + i}" for i in range(config.n_phantoms)]
    data = real_data_folder(config)
    if data is None:
        return names
    return names + [name for name, (ct_file, _, _) in SEG_REAL.items() if (data / ct_file).exists()]


def check_cases(config: TaskEvalConfig) -> list:
    """`case_names`, or MedLVMError when there are none (a report over nothing is not a report)."""
    names = case_names(config)
    if not names:
        folder = config.shared_data or "the shared data folder"
        real = "--no-real" if not config.real else f"no real CT files in '{folder}'"
        raise MedLVMError(f"no cases to evaluate: --phantoms {config.n_phantoms} and {real}; ask for phantoms "
                          "(--phantoms N) or give DATA holding the real CT files")
    return names


def _model(config: TaskEvalConfig):
    from MedLVMLib.tasks.segment import resolve_model

    return resolve_model(config.model, config.device)


def labelled_warnings(case: str, method: str, result) -> list:
    """The plausibility warnings a task result carries, each prefixed with its case and method."""
    return [f"{case}, {method}: {w}" for w in getattr(result, "warnings", None) or []]


def timed(seconds: dict, key: str, fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs), its wall time appended to seconds[key]."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds.setdefault(key, []).append(time.perf_counter() - start)
    return out


def body_mask(hu: np.ndarray) -> np.ndarray:
    """Voxels inside the patient: HU > -500 with holes (lungs) filled slice by slice."""
    from scipy import ndimage

    inside = np.asarray(hu) > -500.0
    return np.stack([ndimage.binary_fill_holes(s) for s in inside])


def image_rows(case: str, setting: str, method: str, truth: np.ndarray, image: np.ndarray) -> list:
    """PSNR and SSIM (HU window -1000..1000; SSIM in 2D per frame [N, H, W], averaged) and MAE in the body."""
    mask = body_mask(truth)
    ssim = float(np.mean([metrics.ssim(a, b, WINDOW) for a, b in zip(image, truth)]))
    return [metric_row(case, setting, method, "body", "psnr_db", metrics.psnr(image, truth, WINDOW)),
            metric_row(case, setting, method, "body", "ssim", ssim),
            metric_row(case, setting, method, "body", "mae_hu", metrics.mae(image, truth, mask))]


def tokenizer_ceiling(model, frames_hu: np.ndarray) -> np.ndarray:
    """HU frames [N, H, W] after an encode/decode round trip of the model's tokenizer, in the same tiles the
    tasks use: the best any generated answer can look (the transformer only chooses codes)."""
    from MedLVMLib.engine import lvm
    from MedLVMLib.imaging import frames
    from MedLVMLib.tasks.denoise import keep_outside_window, unwindow, window

    s = model.image_size
    tiles = frames.tile_frames(window(model, frames_hu), s, s // 4)
    flat = tiles.tiles.reshape(-1, s, s)
    decoded = lvm.decode_codes(model, lvm.encode_images(model, flat)).reshape(tiles.tiles.shape)
    return keep_outside_window(unwindow(model, frames.untile_frames(decoded, tiles.layout)), frames_hu,
                               (model.preprocess.hu_min, model.preprocess.hu_max))


def setup_evaluation(out: Path, config: TaskEvalConfig, default_methods, progress: Optional[Progress]):
    """Common set-up of every task evaluation: progress, methods, the model (only if MedLVM runs), the folder."""
    methods = config.methods or default_methods
    check_cases(config)
    model = _model(config) if "medlvm" in methods else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return ensure(progress), methods, model, out


# ------------------------------------------------------------------------------------------ denoising


def image_cases(config: TaskEvalConfig, n_slices: Optional[int], progress: Progress) -> list:
    """(name, clean HU [Z, Y, X], geometry): held-out phantoms (noise free) and the real CT."""
    from MedLVMLib.imaging.volume_io import read_volume
    from MedLVMLib.synthetic import phantom

    out = []
    for i in range(config.n_phantoms):
        case = phantom.make_phantom(seed=config.first_seed + i, n_phases=1, shape=(48, 132, 160), noise_hu=0.0)
        out.append((f"phantom-{config.first_seed + i}", case.phases.array[0], case.phases.geometry))
    data = real_data_folder(config)
    for name, (ct_file, _, _) in SEG_REAL.items():
        if data is not None and (data / ct_file).exists():
            ct = read_volume(data / ct_file)
            out.append((name, ct.array, ct.geometry))
    if n_slices:
        out = [(n, v[np.linspace(v.shape[0] * 0.25, v.shape[0] * 0.75, n_slices).round().astype(int)], g)
               for n, v, g in out]
    return out


IMAGE_METRICS = [("psnr_db", True, "PSNR (dB)"), ("ssim", True, "SSIM"), ("mae_hu", False, "MAE in body (HU)")]


def plot_images(truth: np.ndarray, outputs: dict, path: Path, title: str, geometry, error_max: float,
                view: str = "axial") -> Path:
    """report.plot_difference_grid on the middle slice (axial) or the middle coronal plane."""
    from MedLVMLib.evaluation import report
    from MedLVMLib.imaging import frames

    def pick(volume):
        stack = frames.to_frames(np.asarray(volume), view)
        return stack[stack.shape[0] // 2]

    sx, sy, sz = geometry.spacing
    aspect = sy / sx if view == "axial" else sz / sx
    truth_2d = pick(truth)
    cols = _readable_columns(truth_2d, aspect)
    return report.plot_difference_grid(truth_2d[:, cols], {m: pick(v)[:, cols] for m, v in outputs.items()}, path,
                                       window=DISPLAY, error_max=error_max, title=title, aspect=aspect)


def _readable_columns(image: np.ndarray, aspect: float, max_ratio: float = 4.0) -> slice:
    """Columns to show so a wide, short frame (a coronal plane of a few slices) is at most `max_ratio` times
    as wide as tall on screen, centred on the body."""
    h, w = image.shape
    width = min(w, max(int(max_ratio * h * aspect), 16))
    body = np.flatnonzero((image > -500.0).any(axis=0))
    centre = int(body.mean()) if body.size else w // 2
    start = int(np.clip(centre - width // 2, 0, w - width))
    return slice(start, start + width)


# ------------------------------------------------------------------------------------------ report


def write_task_report(out: Path, task: str, rows: list, figures: list, seconds: dict, model, config: TaskEvalConfig,
                      table_metrics: Sequence[tuple], warnings: Sequence[str] = ()) -> Path:
    import html

    from MedLVMLib.evaluation import report

    report.write_csv(rows, out / f"{task}_metrics.csv")
    model_id = getattr(model, "model_id", None) or "(no model: baselines only)"
    timing = ", ".join(f"{k}: {np.mean(v):.1f} s" for k, v in seconds.items())
    timing = f"Mean seconds per run: {timing}. " if timing else ""
    cases = report.ordered(r["case"] for r in rows)
    sections = [("Setup", f"<p>Cases: {html.escape(', '.join(cases))}. Model: {html.escape(str(model_id))}. "
                          f"{html.escape(timing + ' '.join(config.notes))}</p>"
                          f"<p>{html.escape(SETUP_TEXT[task])}</p>")]
    if warnings:  # outputs that failed a plausibility check: said at the top, not buried in a log
        items = "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
        sections.append(("Warnings", f"<ul>{items}</ul>"))
    for metric, higher, title in table_metrics:
        png = report.plot_per_phase(rows, metric, out / f"{task}_{metric}.png", ylabel=title,
                                    title=f"{task}: {title} (mean ± sd over cases)")
        sections.append((title, report.image_tag(png, embed=False)))
        for organ in report.ordered(r["organ"] for r in rows if r["metric"] == metric):
            sections.append((f"{title}: {organ}", report.table_html(rows, metric, organ, higher)))
    for fig in figures:
        sections.append((fig.stem, report.image_tag(fig, embed=False)))
    for png in out.glob("*.png"):
        shrink_png(png)
    summary = [f"# {task}: mean over cases (model: {model_id})", ""]
    for metric, _, title in table_metrics:
        for organ in report.ordered(r["organ"] for r in rows if r["metric"] == metric):
            summary += [f"## {title}: {organ}", "", markdown_table(rows, metric, organ), ""]
    (out / "summary.md").write_text("\n".join(summary), encoding="utf-8")
    return report.write_html(out / "report.html", f"MedLVM {task} evaluation", sections)


def shrink_png(path: Path, colours: int = 128) -> None:
    """Rewrite a figure with a palette of `colours` (noise maps compress badly as RGB): about 3x smaller."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colours)
    small.save(path, optimize=True)


def markdown_table(rows: Sequence[dict], metric: str, organ: str) -> str:
    """Methods (rows) x settings (columns), mean over cases, as a Markdown table."""
    from MedLVMLib.evaluation import report

    sel = [r for r in rows if r["metric"] == metric and r["organ"] == organ]
    settings, methods = report.ordered(r["phase"] for r in sel), report.ordered(r["method"] for r in sel)
    stats = report.summarize(sel, ("method", "phase"))
    lines = ["| method | " + " | ".join(settings) + " |", "|---" * (len(settings) + 1) + "|"]
    for m in methods:
        cells = [f"{stats[(m, p)][0]:.3g}" if (m, p) in stats and np.isfinite(stats[(m, p)][0]) else "-"
                 for p in settings]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


SETUP_TEXT = {
    "segment": "slices: labels kept on every n-th axial slice between the first and last labelled slice; the "
               "others predicted; DSC / HD95 over the predicted slices. phase k: labels of phase 0 carried to "
               "phase k of a 4D CT (phantom breathing; for the real CT, synthetic breathing of the real anatomy).",
    "denoise": "Low-dose CT simulated from the full-dose CT in the projection domain (Poisson + electronic noise, "
               "filtered back-projection) at the stated photon counts per ray. MedLVM uses the shipped phantom "
               "prompt library at the nearest noise level. PSNR / SSIM in the HU window -1000..1000; MAE inside "
               "the body. The real CTs' own noise is part of their 'clean' reference.",
    "superres": "Thin slices averaged F at a time into thick slabs, then restored to the thin grid. MedLVM learns "
                "the factor in context from the input's own axial slices (blurred along rows), restores coronal "
                "frames in tiles; 'medlvm' adds the slab-mean consistency step, 'medlvm (raw)' is without it.",
}


def rerender_report(out: Path, task: str, model_id: str, timing: str = "") -> Path:
    """Rewrite report.html, summary.md and the plots of an existing report folder from its CSV (e.g. after a
    change of layout), keeping its per-case figures."""
    from MedLVMLib.evaluation import report

    out = Path(out)
    rows = report.read_csv(out / f"{task}_metrics.csv")
    metric_names = {m for m, _, _ in IMAGE_METRICS}
    figures = sorted(p for p in out.glob(f"{task}_*.png") if p.stem.split("_", 1)[1] not in metric_names | {"dsc"})
    figures = [p for p in figures if p.stem != f"{task}_hd95_mm"]
    model = type("Model", (), {"model_id": model_id})()
    config = TaskEvalConfig(notes=(f"Mean seconds per run: {timing}.",) if timing else ())
    metrics_table = [("dsc", True, "DSC"), ("hd95_mm", False, "HD95 (mm)")] if task == "segment" else IMAGE_METRICS
    return write_task_report(out, task, rows, figures, {}, model, config, metrics_table)


def check_task(task: str) -> str:
    if task not in ("segment", "denoise", "superres"):
        raise MedLVMError(f"unknown task '{task}'")
    return task
