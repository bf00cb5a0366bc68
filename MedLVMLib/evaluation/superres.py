"""Super-resolution evaluation: thin slices averaged into thick slabs and restored, against the thin CT."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from MedLVMLib.evaluation.common import (
    IMAGE_METRICS,
    TaskEvalConfig,
    body_mask,
    image_cases,
    image_rows,
    labelled_warnings,
    plot_images,
    setup_evaluation,
    timed,
    tokenizer_ceiling,
    write_task_report,
)
from MedLVMLib.imaging.slabs import slab_average
from MedLVMLib.progress import Progress

# ------------------------------------------------------------------------------------------ super-resolution


def evaluate_superres(out: Path, config: Optional[TaskEvalConfig] = None, progress: Optional[Progress] = None):
    """Thick slabs of F thin slices restored to thin slices (axis z) by every method."""
    config = config or TaskEvalConfig()
    from MedLVMLib.tasks import superres

    progress, methods, model, out = setup_evaluation(out, config, superres.METHODS, progress)
    rows, figures, seconds, warnings = [], [], {}, []
    f = config.factor
    for name, thin, geometry in image_cases(config, None, progress):
        thin = _crop_for_superres(thin, f)
        thick = slab_average(thin, f, (0,))
        setting = f"z x{f}"
        planes = evaluation_planes(thin, config.n_planes)
        outputs = {}
        for method in methods:
            result = timed(seconds, method, superres.superres_volume, thick, f, method=method, model=model,
                            planes=planes, n_examples=config.n_examples)
            outputs[method] = result.volume
            warnings += labelled_warnings(name, method, result)
            if method == "medlvm":
                outputs["medlvm (raw)"] = result.raw
        truth_frames = np.moveaxis(thin[:, planes], 1, 0)  # (planes, Z, X) coronal frames
        if model is not None:
            rows += image_rows(name, setting, "(tokenizer ceiling)", truth_frames,
                               tokenizer_ceiling(model, truth_frames))
        for method, volume in outputs.items():
            rows += image_rows(name, setting, method, truth_frames, np.moveaxis(volume[:, planes], 1, 0))
        figures.append(plot_images(thin[:, planes], {m: v[:, planes] for m, v in outputs.items()},
                                   out / f"superres_{name}.png", f"{name}, thick slices x{f}", geometry,
                                   error_max=300.0, view="coronal"))
    write_task_report(out, "superres", rows, figures, seconds, model, config, IMAGE_METRICS, warnings)
    return rows


def evaluation_planes(volume: np.ndarray, n: int) -> list:
    """`n` coronal planes (array axis 1) evenly spread over the body's anterior-posterior extent."""
    rows = np.flatnonzero(body_mask(volume).any(axis=(0, 2)))
    lo, hi = (int(rows[0]), int(rows[-1])) if rows.size else (0, volume.shape[1] - 1)
    return sorted(set(np.linspace(lo, hi, n + 2)[1:-1].round().astype(int).tolist()))


def _crop_for_superres(thin: np.ndarray, factor: int, max_slices: int = 48) -> np.ndarray:
    """At most `max_slices` central slices (a multiple of the factor) to keep the evaluation short."""
    n = min(thin.shape[0], max_slices) // factor * factor
    start = (thin.shape[0] - n) // 2
    return thin[start:start + n]
