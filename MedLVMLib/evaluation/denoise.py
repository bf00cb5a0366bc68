"""Denoising evaluation: low-dose CT simulated at stated photon counts, every method against the full dose."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from MedLVMLib.evaluation.common import (
    IMAGE_METRICS,
    TaskEvalConfig,
    image_cases,
    image_rows,
    labelled_warnings,
    plot_images,
    setup_evaluation,
    timed,
    tokenizer_ceiling,
    write_task_report,
)
from MedLVMLib.progress import Progress


def evaluate_denoise(out: Path, config: Optional[TaskEvalConfig] = None, progress: Optional[Progress] = None):
    """Simulated low-dose CT at each photon count, denoised by every method."""
    config = config or TaskEvalConfig()
    from MedLVMLib.synthetic import lowdose
    from MedLVMLib.tasks import denoise, prompts

    progress, methods, model, out = setup_evaluation(out, config, denoise.METHODS, progress)
    rows, figures, seconds, warnings = [], [], {}, []
    for name, clean, geometry in image_cases(config, config.n_slices, progress):
        pixel = float(np.mean(geometry.spacing[:2]))
        ceiling = tokenizer_ceiling(model, clean) if model is not None else None
        for k, photons in enumerate(config.photons):
            setting = f"{photons:g} photons"
            seed = config.first_seed + 97 * k
            noisy = np.stack([lowdose.low_dose(image, photons=photons, spacing=geometry, seed=seed + z)
                              for z, image in enumerate(clean)])  # slice by slice: volumes need >= 2 slices
            outputs = {"noisy input": noisy}
            rows += image_rows(name, setting, "noisy input", clean, noisy)
            if ceiling is not None:
                rows += image_rows(name, setting, "(tokenizer ceiling)", clean, ceiling)
            for method in methods:
                examples = prompts.denoise_pairs(noisy, pixel_mm=pixel) if method == "medlvm" else None
                result = timed(seconds, method, denoise.denoise_volume, noisy, method=method, model=model,
                                examples=examples, pixel_mm=pixel, n_examples=config.n_examples)
                outputs[method] = result.denoised
                warnings += labelled_warnings(name, method, result)
                rows += image_rows(name, setting, method, clean, result.denoised)
            figures.append(plot_images(clean, outputs, out / f"denoise_{name}_{int(photons)}.png",
                                       f"{name}, {setting}", geometry, error_max=200.0))
    write_task_report(out, "denoise", rows, figures, seconds, model, config, IMAGE_METRICS, warnings)
    return rows
