"""Figures that show predicted motion against the ground truth: breathing traces and difference images.

    plot_breathing(...)    tumour centroid (SI) and lung volume per phase: ground truth, MedLVM, each baseline
    plot_differences(...)  coronal slice through the tumour at the phase that moves most: each method's image
                           and its |error| against the truth (report.plot_difference_grid)
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from MedLVMLib.imaging.volume import Phases


def tumour_si_mm(labels: np.ndarray, label_id: int, geometry) -> list[float]:
    """Superior-inferior (LPS z) tumour centroid per phase of labels [P, Z, Y, X]; NaN where it is absent."""
    from MedLVMLib.tasks.clinical import centroid_mm

    return [float(centroid_mm(phase == label_id, geometry)[2]) for phase in labels]  # NaN for an empty mask


def lung_volumes(phases: Phases) -> list[float]:
    """Lung volume (mL) per phase, as the motion guard measures it."""
    from MedLVMLib.tasks.motion_guard import surrogates

    return [surrogates(volume, phases.geometry)["lung volume"] for volume in phases.array]


def plot_breathing(truth: Phases, predictions: dict[str, Phases], n_observed: int, path: Path,
                   tumour_truth: Optional[list] = None, tumour_predicted: Optional[dict] = None) -> Path:
    """Two panels over all phases: tumour SI centroid (when given) and lung volume, truth as a thick line.

    Args:
        truth: every phase of the 4D CT (observed and future).
        predictions: method -> predicted future phases.
        tumour_truth: SI centroid per phase (mm); tumour_predicted: method -> SI centroid per predicted phase.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(truth.n_phases))
    future = x[n_observed:]
    panels = [("lung volume (mL)", lung_volumes(truth), {m: lung_volumes(p) for m, p in predictions.items()})]
    if tumour_truth is not None:
        panels.insert(0, ("tumour centroid SI (mm)", tumour_truth, tumour_predicted or {}))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.4), dpi=110, squeeze=False)
    for ax, (title, true_values, predicted) in zip(axes[0], panels):
        ax.plot(x, true_values, "k-o", lw=2.5, ms=4, label="ground truth")
        for method, values in predicted.items():
            ax.plot([n_observed - 1] + future, [true_values[n_observed - 1]] + list(values), "--o", ms=3,
                    label=method)
        ax.axvspan(n_observed - 0.5, x[-1] + 0.5, color="0.92", zorder=0)
        ax.set_xticks(x, truth.labels, fontsize=7)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("phase (shaded: predicted)", fontsize=8)
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_differences(truth: Phases, predictions: dict[str, Phases], n_observed: int, y: int, path: Path) -> Path:
    """report.plot_difference_grid on coronal plane `y` of the future phase that differs most from the last
    observed one (where copying is worst)."""
    from MedLVMLib.evaluation import report
    from MedLVMLib.imaging import frames

    last = truth.array[n_observed - 1]
    moved = [float(np.abs(truth.array[p] - last).mean()) for p in range(n_observed, truth.n_phases)]
    j = int(np.argmax(moved))
    sx, _, sz = truth.geometry.spacing
    truth_slice = frames.to_frames(truth.array[n_observed + j], "coronal")[y]
    slices = {m: frames.to_frames(p.array[j], "coronal")[y] for m, p in predictions.items()}
    title = f"phase {truth.labels[n_observed + j]}, coronal y={y}: |prediction - truth|"
    return report.plot_difference_grid(truth_slice, slices, path, aspect=sz / sx, title=title)
