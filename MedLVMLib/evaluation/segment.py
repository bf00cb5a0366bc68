"""Segmentation evaluation: labels completed from every n-th slice, and carried from phase 0 through a
4D CT; DSC and HD95 per structure against the truth, MedLVM against the classic propagation baselines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from MedLVMLib.evaluation import metrics
from MedLVMLib.evaluation.common import (
    DISPLAY,
    PHANTOM_STRUCTURES,
    SEG_REAL,
    TaskEvalConfig,
    labelled_warnings,
    metric_row,
    real_data_folder,
    setup_evaluation,
    timed,
    write_task_report,
)
from MedLVMLib.progress import Progress

# ------------------------------------------------------------------------------------------ segmentation


def example_slices(labels: np.ndarray, every: int) -> list:
    """Every `every`-th axial slice from the first to the last labelled one (both included)."""
    z = np.flatnonzero(labels.reshape(labels.shape[0], -1).any(axis=1))
    picked = list(range(int(z[0]), int(z[-1]) + 1, every))
    return sorted(set(picked + [int(z[-1])]))


def mask_rows(case: str, setting: str, method: str, truth: np.ndarray, pred: np.ndarray, structures: dict,
              spacing, keep: np.ndarray) -> list:
    """DSC and HD95 per structure on the predicted part only (`keep`: bool mask of evaluated voxels)."""
    rows = []
    for label_id, name in structures.items():
        t, p = (truth == label_id) & keep, (pred == label_id) & keep
        rows.append(metric_row(case, setting, method, name, "dsc", metrics.dice(p, t)))
        hd = metrics.hd95(p, t, spacing) if t.any() and p.any() else float("nan")
        rows.append(metric_row(case, setting, method, name, "hd95_mm", hd))
    return rows


def _segment_cases(config: TaskEvalConfig, progress: Progress) -> list:
    """(name, phases [P, Z, Y, X], labels [P, Z, Y, X] or [1, Z, Y, X], structures, geometry)."""
    from MedLVMLib.imaging.volume_io import read_volume
    from MedLVMLib.synthetic import phantom

    out = []
    for i in range(config.n_phantoms):
        case = phantom.make_phantom(seed=config.first_seed + i, n_phases=config.n_phases)
        labels = np.where(np.isin(case.labels, list(PHANTOM_STRUCTURES)), case.labels, 0).astype(np.uint8)
        out.append((f"phantom-{config.first_seed + i}", case.phases.array, labels, PHANTOM_STRUCTURES,
                    case.phases.geometry))
    data = real_data_folder(config)
    for name, (ct_file, label_file, structures) in SEG_REAL.items():
        if data is None or not (data / ct_file).exists():
            continue
        ct, labels = read_volume(data / ct_file), read_volume(data / label_file, labels=True)
        lab = np.where(np.isin(labels.array, list(structures)), labels.array, 0).astype(np.uint8)
        out.append((name, ct.array[None], lab[None], structures, ct.geometry))
        if "4dlung" in name:
            case = phantom.breathe_real_ct(data / ct_file, data / label_file, seed=config.first_seed,
                                           n_phases=config.n_phases)
            labels = np.where(np.isin(case.labels, [2, 6]), case.labels, 0).astype(np.uint8)
            out.append((name + "-breathing", case.phases.array, labels, {2: "lungs", 6: "tumour"},
                        case.phases.geometry))
    return out


def evaluate_segment(out: Path, config: Optional[TaskEvalConfig] = None, progress: Optional[Progress] = None):
    """Slice propagation on every case, phase propagation on the 4D ones. Returns the rows."""
    config = config or TaskEvalConfig()
    from MedLVMLib.tasks import segment

    progress, methods, model, out = setup_evaluation(out, config, segment.METHODS, progress)
    rows, figures, seconds, warnings = [], [], {}, []
    for name, phases, labels, structures, geometry in _segment_cases(config, progress):
        ct, lab0 = phases[0], labels[0]
        examples = example_slices(lab0, config.every)
        keep = np.ones(ct.shape, bool)
        keep[examples] = False
        preds = {}
        for method in methods:
            result = timed(seconds, f"slices/{method}", segment.propagate_slices, ct, lab0, slices=examples,
                            method=method, model=model, n_examples=config.n_examples, spacing=geometry.spacing)
            preds[method] = result.labels
            warnings += labelled_warnings(name, method, result)
            rows += mask_rows(name, "slices", method, lab0, result.labels, structures, geometry.spacing, keep)
        figures.append(plot_segmentation(ct, lab0, preds, examples, out / f"segment_{name}.png", name, geometry))
        if phases.shape[0] > 1:
            for method in methods:
                result = timed(seconds, f"phases/{method}", segment.propagate_phases, phases, lab0, 0,
                                method=method, model=model, n_examples=config.n_examples, spacing=geometry.spacing)
                warnings += labelled_warnings(name, method, result)
                for p in range(1, phases.shape[0]):
                    rows += mask_rows(name, f"phase {p}", method, labels[p], result.labels[p], structures,
                                      geometry.spacing, np.ones(ct.shape, bool))
    write_task_report(out, "segment", rows, figures, seconds, model, config,
                      [("dsc", True, "DSC"), ("hd95_mm", False, "HD95 (mm)")], warnings)
    return rows


def _outline(ax, mask: np.ndarray, colour: str) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=0.9)


def figure_slice(truth: np.ndarray, preds: dict, examples: Sequence[int]) -> int:
    """The predicted axial slice with the most wrong voxels summed over methods (ties: most structure)."""
    wrong = sum((p != truth).reshape(truth.shape[0], -1).sum(axis=1) for p in preds.values())
    score = np.asarray(wrong, float) * 1e6 + (truth > 0).reshape(truth.shape[0], -1).sum(axis=1)
    score[list(examples)] = -1
    return int(np.argmax(score))


def plot_segmentation(ct: np.ndarray, truth: np.ndarray, preds: dict, examples: Sequence[int], path: Path,
                      title: str, geometry) -> Path:
    """Top: CT with the truth (green) and each method's mask (red) outlined, on the predicted axial slice where
    the methods disagree with the truth most; bottom: errors (red = false positive, blue = missed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = figure_slice(truth, preds, examples)
    aspect = geometry.spacing[1] / geometry.spacing[0]
    n = 1 + len(preds)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4), dpi=110, squeeze=False)
    axes[0, 0].imshow(ct[z], cmap="gray", vmin=DISPLAY[0], vmax=DISPLAY[1], aspect=aspect)
    _outline(axes[0, 0], truth[z] > 0, "lime")
    axes[0, 0].set_title(f"input + truth (z={z})", fontsize=8)
    axes[1, 0].axis("off")
    for j, (method, pred) in enumerate(preds.items(), start=1):
        axes[0, j].imshow(ct[z], cmap="gray", vmin=DISPLAY[0], vmax=DISPLAY[1], aspect=aspect)
        _outline(axes[0, j], truth[z] > 0, "lime")
        _outline(axes[0, j], pred[z] > 0, "red")
        wrong = np.zeros(truth[z].shape + (3,), np.float32)
        wrong[(pred[z] != truth[z]) & (pred[z] > 0)] = (1, 0.2, 0.2)
        wrong[(pred[z] != truth[z]) & (pred[z] == 0)] = (0.2, 0.4, 1)
        axes[1, j].imshow(wrong, aspect=aspect)
        d = metrics.dice(pred[z] > 0, truth[z] > 0)
        axes[0, j].set_title(f"{method}", fontsize=9)
        axes[1, j].set_title(f"errors (slice DSC {d:.2f})", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{title}: labelled slices {list(examples)[:8]}{'...' if len(examples) > 8 else ''}; "
                 "green truth, red prediction", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
