"""Zero-shot super-resolution: thick slices to thin slices (axis "z"), or finer in-plane pixels ("xy").

Thick slices are modelled as SLABS: each input slice is the mean of F thin slices, so the output has
Z * F slices of thickness sz / F, and its first slice centre sits (F - 1) / 2 thin slices before the
input's first centre (the geometry is exact: the output covers the same extent as the input).

MedLVM ("medlvm"): the input is first interpolated linearly onto the fine grid; each slice across the
coarse axis (coronal frames for "z", axial frames for "xy") is then restored by the analogy sentence
[degraded_1, clean_1, ..., degraded_query] -> clean, at native pixel size in model-sized tiles
(`denoise.restore_frames`). Example pairs:
- "z": made from the INPUT ITSELF: its axial slices are sharp in both in-plane directions, so averaging
  them over F rows of the thin spacing and interpolating back shows the model exactly the blur that
  thick slices cause along z (rows of a coronal frame);
- "xy": from the shipped prompt library (phantom slices brought to the fine pixel size, F x F block
  averaged and interpolated back).
Optionally (`consistent=True`, "medlvm+dc" in the evaluation) the result is corrected so that its slab
means equal the input (iterative back-projection), which keeps the model's detail but not its
intensity drift.

Baselines (`baselines.superres`): "nearest", "linear", "cubic" (B-spline) interpolation onto the same fine grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.slabs import interpolate, slab_average
from MedLVMLib.imaging.volume import Geometry
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.tasks import denoise, output_checks
from MedLVMLib.tasks.prompts import Pairs
from MedLVMLib.tasks.segment import DEFAULT_SAMPLING, Sampling, resolve_model

if TYPE_CHECKING:
    from MedLVMLib.engine.lvm import MedLVMModel

METHODS = ("medlvm", "nearest", "linear", "cubic")
AXES = ("z", "xy")
TASK = "super-resolution"


@dataclass
class SuperResResult:
    volume: np.ndarray  # float32 HU on the fine grid
    geometry: Optional[Geometry]
    method: str
    raw: Optional[np.ndarray] = None  # medlvm before the consistency step
    warnings: list = field(default_factory=list)  # implausible output, one line each (see output_checks)


def check_factor(factor, axis: str) -> int:
    if axis not in AXES:
        raise MedLVMError(f"--axis must be one of {', '.join(AXES)}, got '{axis}'")
    try:
        value = float(factor)
    except (TypeError, ValueError):
        raise MedLVMError(f"--factor must be a whole number >= 2, got '{factor}'") from None
    if not math.isfinite(value):
        raise MedLVMError(f"--factor must be a whole number >= 2, got {value:g}")
    if value < 1:
        raise MedLVMError(f"--factor {value:g} < 1 would make the grid coarser; super-resolution needs a factor >= 2")
    if value != int(value) or value < 2:
        raise MedLVMError(f"--factor must be a whole number >= 2 (slices split into F thin slices), got {value:g}")
    return int(value)


def fine_geometry(geometry: Geometry, factor: int, axis: str) -> Geometry:
    """The output grid: spacing / F along the refined axes, origin moved so the extent is unchanged."""
    spacing = np.asarray(geometry.spacing, float)
    direction = np.asarray(geometry.direction, float).reshape(3, 3)
    axes = [2] if axis == "z" else [0, 1]
    origin = np.asarray(geometry.origin, float)
    new_spacing = spacing.copy()
    for a in axes:
        new_spacing[a] = spacing[a] / factor
        origin = origin - direction[:, a] * (factor - 1) / 2.0 * new_spacing[a]
    return Geometry(tuple(float(v) for v in new_spacing), tuple(float(v) for v in origin), geometry.direction)


def consistency(fine: np.ndarray, coarse: np.ndarray, factor: int, axes: tuple, iterations: int = 5) -> np.ndarray:
    """Iterative back-projection: add the linearly interpolated residual until slab means match `coarse`.

    Smooth (linear) back-projection avoids the block artefacts of replicating the residual; a few
    iterations bring the slab-mean error close to zero.
    """
    out = np.asarray(fine, np.float32)
    for _ in range(iterations):
        residual = coarse - slab_average(out, factor, axes)
        out = out + interpolate(residual, factor, axes, order=1)
    return out.astype(np.float32)


def _array_axes(axis: str) -> tuple:
    return (0,) if axis == "z" else (1, 2)


def self_pairs(ct: np.ndarray, factor: int, max_pairs: int = 12) -> Pairs:
    """Example pairs from the input's own axial slices, blurred along rows like thick slices blur z.

    Row pixel size is assumed equal to the thin slice spacing (true for the evaluation data; for other
    inputs the blur is taught in pixels, which is what the model sees in a tile).
    """
    idx = np.unique(np.linspace(0, ct.shape[0] - 1, min(max_pairs, ct.shape[0])).round().astype(int))
    clean = np.asarray(ct[idx], np.float32)  # (E, Y, X)
    rows = (clean.shape[1] // factor) * factor
    clean = clean[:, :rows]
    degraded = interpolate(slab_average(clean, factor, (1,)), factor, (1,), order=1)
    return Pairs(degraded, clean)


def _query_frames(fine_lin: np.ndarray, axis: str) -> tuple:
    """Slices across the refined axis: coronal frames for "z", axial for "xy"."""
    from MedLVMLib.imaging import frames as frames_mod

    view = "coronal" if axis == "z" else "axial"
    return np.asarray(frames_mod.to_frames(fine_lin, view), np.float32), view


def superres_volume(ct: np.ndarray, factor, *, axis: str = "z", method: str = "medlvm",
                    model: Optional[MedLVMModel] = None, geometry: Optional[Geometry] = None,
                    examples: Optional[Pairs] = None, n_examples: int = 3, tile: bool = True,
                    consistent: bool = True, planes: Optional[Sequence[int]] = None,
                    sampling: Sampling = DEFAULT_SAMPLING, device: str = "auto",
                    progress: Optional[Progress] = None) -> SuperResResult:
    """Refine a CT by an integer factor along z (thick -> thin slices) or in-plane.

    Args:
        ct: HU volume [Z, Y, X] (thick slices for axis "z").
        factor: whole number >= 2.
        method: "medlvm" | "nearest" | "linear" | "cubic".
        geometry: the input grid; the result's grid is derived from it (`fine_geometry`).
        examples: (degraded, clean) HU slice pairs; default: made from the input ("z") or the library ("xy").
        consistent: apply the slab-mean consistency step to the model output.
        planes: restore only these frames across the refined axis (coronal planes for "z", axial slices for
            "xy"); the others keep linear interpolation (for quick evaluations on a sample of planes).
    Returns:
        SuperResResult: volume [Z * F, Y, X] ("z") or [Z, Y * F, X * F] ("xy").
    """
    factor = check_factor(factor, axis)
    ct = denoise.check_volume(ct)
    if method not in METHODS:
        raise MedLVMError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    axes = _array_axes(axis)
    fine_geo = fine_geometry(geometry, factor, axis) if geometry is not None else None
    if method != "medlvm":
        from MedLVMLib.baselines.superres import SUPERRES_BASELINES

        result = SUPERRES_BASELINES[method](ct, geometry or Geometry(), factor, axis)
        output_checks.require_finite(TASK, result.array, "interpolated volume")
        return SuperResResult(result.array, fine_geo, method)
    progress = ensure(progress)
    model = resolve_model(model, device)
    if examples is None:
        if axis == "z":
            examples = self_pairs(ct, factor)
        else:
            from MedLVMLib.tasks import prompts

            pixel = None if geometry is None else float(geometry.spacing[0]) / factor
            examples = prompts.superres_pairs(factor, pixel_mm=pixel)
    fine_lin = interpolate(ct, factor, axes, order=1)
    queries, view = _query_frames(fine_lin, axis)
    chosen = np.arange(len(queries)) if planes is None else np.asarray(sorted(set(int(p) for p in planes)))
    if chosen.size and (chosen.min() < 0 or chosen.max() >= len(queries)):
        raise MedLVMError(f"planes outside 0..{len(queries) - 1}")
    progress.stage("super-resolution", None)
    restored = denoise.restore_frames(model, denoise.window(model, examples.degraded),
                                      denoise.window(model, examples.clean), denoise.window(model, queries[chosen]),
                                      tile=tile, n_examples=n_examples, sampling=sampling, progress=progress)
    from MedLVMLib.imaging import frames as frames_mod

    frames_hu = queries.copy()
    frames_hu[chosen] = denoise.unwindow(model, restored)
    raw = np.asarray(frames_mod.from_frames(frames_hu, view), np.float32)
    raw = denoise.keep_outside_window(raw, fine_lin, denoise._window(model))
    output_checks.require_finite(TASK, raw, "restored slices")
    warnings: list = []
    out = output_checks.clip_to_input(TASK, consistency(raw, ct, factor, axes) if consistent else raw, ct, warnings)
    output_checks.warn_if_constant(TASK, out, ct, warnings)
    return SuperResResult(out, fine_geo, method, raw, warnings)
