"""Landmark target registration error (TRE), the DIR-Lab / POPI measure, for predicted breathing phases.

Landmarks are placed on the last observed phase k of a case that carries its ground-truth motion (`case.dvf`,
pull fields: phase_p(x) = reference(x + dvf_p(x)), mm, physical (x, y, z)):
    vessels: bright local maxima (> VESSEL_HU) inside the lungs, kept at least `min_distance_mm` apart;
    diaphragm: points on the lung base (the air/tissue boundary under the lungs), spread over each lung;
    the tumour centroid and the carina, when the case labels them.
True position in phase p: the reference point r = x_k + dvf_k(x_k), then x_p solves x + dvf_p(x) = r.
Predicted position: the predicted image (fixed) registered to phase k (moving) gives u with fixed point q <->
moving point q + u(q); the landmark's predicted position solves q + u(q) = x_k. Both inversions are the
fixed-point iteration x <- target - field(x) with the field interpolated trilinearly (it converges for fields
whose gradient stays below 1, as breathing motion and demons fields do).
TRE per landmark = |predicted - true| (mm); rows: mean ("tre_mm") and maximum ("tre_max_mm") over landmarks.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry

VESSEL_HU = -600.0
ORGAN = "landmarks"


class Landmarks(NamedTuple):
    """Points placed on one phase: (x, y, z) mm [L, 3], a name and a kind (vessel, diaphragm, tumour, carina)."""

    points: np.ndarray
    names: list[str]
    kinds: list[str]
    phase: int


def _matrix(geometry: Geometry) -> np.ndarray:
    """3x3 index (x, y, z) -> physical offset: direction @ diag(spacing)."""
    return np.asarray(geometry.direction, float).reshape(3, 3) * np.asarray(geometry.spacing, float)[None, :]


def to_physical(geometry: Geometry, index_zyx: np.ndarray) -> np.ndarray:
    """Continuous voxel indices [L, 3] (z, y, x) -> physical points [L, 3] (x, y, z) mm."""
    index_xyz = np.asarray(index_zyx, float).reshape(-1, 3)[:, ::-1]
    return np.asarray(geometry.origin, float)[None, :] + index_xyz @ _matrix(geometry).T


def to_index(geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """Physical points [L, 3] (x, y, z) mm -> continuous voxel indices [L, 3] (z, y, x)."""
    offset = np.asarray(points, float).reshape(-1, 3) - np.asarray(geometry.origin, float)[None, :]
    return np.linalg.solve(_matrix(geometry), offset.T).T[:, ::-1]


def sample_field(field: np.ndarray, geometry: Geometry, points: np.ndarray) -> np.ndarray:
    """A field [Z, Y, X, 3] interpolated trilinearly at physical points [L, 3]; outside: the nearest edge value."""
    return _sample(_components(field), geometry, points)


def _components(field: np.ndarray) -> list[np.ndarray]:
    """The x, y, z components of a field [Z, Y, X, 3] as contiguous float64 volumes (made once per field)."""
    if field.ndim != 4 or field.shape[-1] != 3:
        raise MedLVMError(f"a displacement field must be [Z, Y, X, 3], got shape {field.shape}")
    return [np.ascontiguousarray(field[..., c], np.float64) for c in range(3)]


def _sample(components: list[np.ndarray], geometry: Geometry, points: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    coords = to_index(geometry, points).T  # (3, L) z, y, x
    return np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in components], axis=-1)


def invert_at(field: np.ndarray, geometry: Geometry, targets: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Points x [L, 3] with x + field(x) = targets, by the fixed-point iteration x <- targets - field(x)."""
    targets = np.asarray(targets, float).reshape(-1, 3)
    components = _components(field)
    points = targets.copy()
    for _ in range(iterations):
        points = targets - _sample(components, geometry, points)
    return points


def true_positions(case, landmarks: Landmarks, phase: int) -> np.ndarray:
    """Ground-truth positions [L, 3] in `phase` of landmarks placed on `landmarks.phase` (needs case.dvf)."""
    if case.dvf is None:
        raise MedLVMError("true landmark positions need the case's ground-truth motion (dvf); this case has none")
    geometry = case.phases.geometry
    reference = landmarks.points + sample_field(case.dvf[landmarks.phase], geometry, landmarks.points)
    return invert_at(case.dvf[phase], geometry, reference)


def predicted_positions(field: np.ndarray, geometry: Geometry, landmarks: Landmarks) -> np.ndarray:
    """Landmark positions [L, 3] in a predicted image, from `field` = register(predicted, landmark phase)."""
    return invert_at(field, geometry, landmarks.points)


def _ids(label_names: dict, *prefixes: str) -> list[int]:
    return [i for i, n in label_names.items() if n.lower().startswith(prefixes)]


def _lung_mask(case, phase: int) -> np.ndarray:
    """The labelled lungs of `phase`, else air (< -500 HU) not connected to the volume's border."""
    from scipy import ndimage

    ids = _ids(case.label_names, "lung") if case.labels is not None else []
    if ids:
        return np.isin(case.labels[phase], ids)
    components, _ = ndimage.label(case.phases.array[phase] < -500.0)
    border = np.unique(np.concatenate([components[[0, -1]].ravel(), components[:, [0, -1]].ravel(),
                                       components[:, :, [0, -1]].ravel()]))
    return (components > 0) & ~np.isin(components, border)


def _spread(candidates: np.ndarray, scores: np.ndarray, spacing_zyx: np.ndarray, n: int,
            min_distance_mm: float) -> np.ndarray:
    """Indices of up to n rows of `candidates` (voxel indices z, y, x), best score first (ties: row order), each
    at least `min_distance_mm` from those chosen before."""
    chosen: list[int] = []
    for row in np.lexsort((np.arange(len(scores)), -np.asarray(scores))):
        mm = candidates[row] * spacing_zyx
        if all(np.linalg.norm(mm - candidates[c] * spacing_zyx) >= min_distance_mm for c in chosen):
            chosen.append(int(row))
            if len(chosen) == n:
                break
    return np.array(chosen, int)


def _vessel_points(image: np.ndarray, lungs: np.ndarray, spacing_zyx: np.ndarray, n: int,
                   min_distance_mm: float) -> np.ndarray:
    from scipy import ndimage

    inner = ndimage.binary_erosion(lungs)
    peaks = (image == ndimage.maximum_filter(image, size=3)) & inner & (image > VESSEL_HU)
    candidates = np.argwhere(peaks)
    return candidates[_spread(candidates, image[peaks], spacing_zyx, n, min_distance_mm)].astype(float)


def _diaphragm_points(image: np.ndarray, lungs: np.ndarray, below_excluded: np.ndarray, spacing_zyx: np.ndarray,
                      n: int, min_distance_mm: float) -> np.ndarray:
    """Lung-base boundary points under a solid run of lung (sub-voxel z from the air fractions), the highest domes
    first, half on each lung side."""
    from MedLVMLib.evaluation.diaphragm import base_heights, lung_base_columns

    window = max(1, int(np.ceil(20.0 / spacing_zyx[0])))
    ys, xs, k0 = lung_base_columns(lungs, window)
    above = np.clip(k0[None, :] + np.arange(window)[:, None], 0, lungs.shape[0] - 1)  # (window, columns)
    keep = lungs[above, ys, xs].all(axis=0) & ~below_excluded[np.maximum(k0 - 1, 0), ys, xs]  # not on the heart
    ys, xs, k0 = ys[keep], xs[keep], k0[keep]
    if ys.size == 0:
        return np.empty((0, 3))
    # sub-voxel boundary, kept within the labelled boundary's voxel (gas or vessels in the window bias the sum)
    z = np.clip(base_heights(image, ys, xs, k0, window) - 0.5, k0 - 1.0, k0 * 1.0)
    columns = np.stack([np.zeros_like(ys), ys, xs], axis=1)
    one_side = xs < np.median(np.nonzero(lungs)[2])  # split the columns between the two lungs
    rows = [np.flatnonzero(side)[_spread(columns[side], z[side], spacing_zyx, count, min_distance_mm)]
            for side, count in ((one_side, (n + 1) // 2), (~one_side, n // 2))]
    rows = np.concatenate(rows)
    return np.stack([z[rows], ys[rows], xs[rows]], axis=1).astype(float)


def place_landmarks(case, phase: int, n_vessels: int = 12, n_diaphragm: int = 6,
                    min_distance_mm: float = 20.0) -> Landmarks:
    """Deterministic landmarks on `phase` of `case` (usually the last observed phase).

    Args:
        n_vessels: bright lung points (> VESSEL_HU, local maxima), at least `min_distance_mm` apart.
        n_diaphragm: lung-base points, half on each lung, at least `min_distance_mm` apart in the plane.
    Returns:
        Landmarks (points (x, y, z) mm, names, kinds); the tumour and carina centroids are added when labelled.
    """
    if not 0 <= phase < case.phases.n_phases:
        raise MedLVMError(f"landmark phase {phase} is outside the case's {case.phases.n_phases} phases")
    geometry, image = case.phases.geometry, case.phases.array[phase]
    spacing_zyx = np.asarray(geometry.spacing, float)[::-1]
    lungs = _lung_mask(case, phase)
    heart = (np.isin(case.labels[phase], _ids(case.label_names, "heart")) if case.labels is not None
             else np.zeros(lungs.shape, bool))
    groups = [("vessel", _vessel_points(image, lungs, spacing_zyx, n_vessels, min_distance_mm)),
              ("diaphragm", _diaphragm_points(image, lungs, heart, spacing_zyx, n_diaphragm, min_distance_mm))]
    for kind, prefixes in (("tumour", ("tumour", "tumor", "gtv")), ("carina", ("carina",))):
        ids = _ids(case.label_names, *prefixes) if case.labels is not None else []
        voxels = np.argwhere(np.isin(case.labels[phase], ids)) if ids else np.empty((0, 3))
        groups.append((kind, voxels.mean(axis=0, keepdims=True) if len(voxels) else np.empty((0, 3))))
    names, kinds, indices = [], [], []
    for kind, rows in groups:
        names += [kind if kind in ("tumour", "carina") else f"{kind}-{i}" for i in range(len(rows))]
        kinds += [kind] * len(rows)
        indices.append(rows)
    points = to_physical(geometry, np.concatenate(indices)) if names else np.empty((0, 3))
    return Landmarks(points, names, kinds, phase)


def case_landmarks(case, phase: int) -> Optional[Landmarks]:
    """`place_landmarks` for a case with ground-truth motion; None without dvf or when nothing could be placed."""
    if case.dvf is None:
        return None
    landmarks = place_landmarks(case, phase)
    return landmarks if len(landmarks.names) else None


def landmark_rows(case, case_name: str, phase: int, method: str, landmarks: Optional[Landmarks],
                  field: Optional[np.ndarray]) -> list[dict]:
    """TRE rows (organ "landmarks": "tre_mm" mean, "tre_max_mm" maximum) of one predicted phase index `phase`;
    none without landmarks. `field`: register(predicted image, image of the landmarks' phase)."""
    if landmarks is None or field is None:
        return []
    geometry = case.phases.geometry
    error = np.linalg.norm(predicted_positions(field, geometry, landmarks) - true_positions(case, landmarks, phase),
                           axis=1)
    label = case.phases.labels[phase]
    return [dict(case=case_name, phase=label, method=method, organ=ORGAN, metric=metric, value=float(value))
            for metric, value in (("tre_mm", error.mean()), ("tre_max_mm", error.max()))]
