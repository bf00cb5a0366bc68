"""Diaphragm position error of a predicted phase, measured on the images (no registration involved).

In every image column (y, x) that crosses the ground-truth lungs over at least `search_mm` above their lowest
voxel, the lung base height is read from the HU profile in a window of +-`search_mm` around that voxel:
    base = top of the window - sum of the air fractions in the window,
with the air fraction of a voxel 1 at -600 HU and below, 0 at -200 HU and above, linear between (a partial
volume estimate, so the height is sub-voxel: whole-voxel shifts come out exact, the sub-voxel part of a
perfectly sharp edge within about a third of a voxel). Parenchyma density changes (tens of HU) and CT noise leave
the fractions unchanged; only where the air/tissue boundary lies matters. The error of a predicted phase is
the mean over the columns of |base(predicted) - base(truth)| in mm along the volume's z axis.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from MedLVMLib.errors import MedLVMError

AIR_HU, TISSUE_HU = -600.0, -200.0
SEARCH_MM = 40.0  # covers diaphragm amplitudes up to 30 mm plus a baseline shift
METRIC = "diaphragm_error_mm"


def air_fraction(hu: np.ndarray) -> np.ndarray:
    """1 at AIR_HU and below, 0 at TISSUE_HU and above, linear between."""
    return np.clip((TISSUE_HU - hu) / (TISSUE_HU - AIR_HU), 0.0, 1.0)


def lung_base_columns(lungs: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns (y, x) whose lungs reach `window` voxels above their lowest lung voxel, and that voxel k0.

    Returns (ys, xs, k0) arrays of equal length."""
    any_lung = lungs.any(axis=0)
    k0 = np.argmax(lungs, axis=0)  # lowest z index holding lung per column
    height = lungs.sum(axis=0)
    ys, xs = np.nonzero(any_lung & (k0 >= 1) & (height >= window))
    return ys, xs, k0[ys, xs]


def base_heights(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, k0: np.ndarray, window: int) -> np.ndarray:
    """Lung base height (voxels, sub-voxel) per column in the window [k0 - window, k0 + window]."""
    n_z = image.shape[0]
    offsets = np.arange(-window, window + 1)
    k = np.clip(k0[:, None] + offsets[None, :], 0, n_z - 1)  # (columns, 2 window + 1)
    top = np.minimum(k0 + window, n_z - 1)
    valid = (k0[:, None] + offsets[None, :] >= 0) & (k0[:, None] + offsets[None, :] <= n_z - 1)
    air = np.where(valid, air_fraction(image[k, ys[:, None], xs[:, None]]), 0.0).sum(axis=1)
    return top + 1.0 - air


def diaphragm_error_mm(predicted: np.ndarray, truth: np.ndarray, truth_lungs: np.ndarray, spacing_z: float,
                       search_mm: float = SEARCH_MM) -> float:
    """Mean |lung base height| difference (mm) between a predicted and the true image [Z, Y, X]; NaN when
    no column of the true lungs qualifies (no lungs, or lungs shorter than the search window)."""
    if predicted.shape != truth.shape or truth_lungs.shape != truth.shape:
        raise MedLVMError(f"diaphragm error: shapes differ (predicted {predicted.shape}, truth {truth.shape}, "
                          f"lungs {truth_lungs.shape})")
    window = max(1, int(math.ceil(search_mm / float(spacing_z))))
    ys, xs, k0 = lung_base_columns(np.asarray(truth_lungs, bool), window)
    if ys.size == 0:
        return float("nan")
    difference = base_heights(predicted, ys, xs, k0, window) - base_heights(truth, ys, xs, k0, window)
    return float(np.mean(np.abs(difference)) * float(spacing_z))


def diaphragm_rows(case_name: str, phase: str, method: str, truth: np.ndarray, predicted: np.ndarray,
                   truth_lungs: Optional[np.ndarray], spacing_z: float) -> list[dict]:
    """One CSV row (organ 'diaphragm'), or none without ground-truth lungs tall enough to measure (a property
    of the case, so every method of a case has the row or none has)."""
    if truth_lungs is None or not truth_lungs.any():
        return []
    value = diaphragm_error_mm(predicted, truth, truth_lungs, spacing_z)
    if not np.isfinite(value):
        return []
    return [dict(case=case_name, phase=phase, method=method, organ="diaphragm", metric=METRIC, value=value)]
