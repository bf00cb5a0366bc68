"""Real anatomy + synthetic breathing: the phantom's motion model applied to one real CT volume.

The CT (e.g. ../shared/data/4dlung_p113_phase40.nii.gz) is taken as the end-exhale reference, resampled
onto a manageable grid, segmented coarsely (body, lungs, bone by thresholds unless a label map gives
them), and warped to every phase with `MedLVMLib.synthetic.breathing` (Lujan trace, 0 % = end-inhale).
Labels of the source are mapped by name onto the phantom ids (1 body, 2 lungs, 3 heart, 4 liver, 5 bone,
6 tumour); names come from a `labels.json` beside the label file ({file: {name: id}}) when present.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Union

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.cases import LABEL_NAMES, Case
from MedLVMLib.imaging.volume import Geometry, Phases, Volume, check_hu, to_image
from MedLVMLib.imaging.volume_io import read_volume
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.synthetic.breathing import Breathing, Grid, MotionRegions, breathe, si_profile, smooth_mask

PathLike = Union[str, Path]
_NAME_RULES = [(re.compile(r"tumou?r|gtv|itv|lesion", re.I), 6), (re.compile(r"lung", re.I), 2),
               (re.compile(r"heart", re.I), 3), (re.compile(r"liver", re.I), 4),
               (re.compile(r"vertebr|rib|sternum|bone|costal|spine|clavic|scapul", re.I), 5)]


def find_labels(ct_path: Path) -> Optional[Path]:
    """A sibling label map: '<name>_labels.nii.gz' or '<name without _ct>_labels.nii.gz'."""
    stem = ct_path.name.split(".")[0]
    suffix = ct_path.name[len(stem):]
    for candidate in (f"{stem}_labels{suffix}", f"{re.sub(r'_ct$', '', stem)}_labels{suffix}"):
        if (ct_path.parent / candidate).is_file() and candidate != ct_path.name:
            return ct_path.parent / candidate
    return None


def _source_names(labels_path: Path) -> dict:
    """{source id: name} from labels.json beside the label file (empty if none)."""
    index = labels_path.parent / "labels.json"
    if not index.is_file():
        return {}
    table = json.loads(index.read_text(encoding="utf-8")).get(labels_path.name, {})
    return {int(i): name for name, i in table.items()}


def map_labels(source: np.ndarray, names: dict) -> np.ndarray:
    """Source label ids -> phantom ids by structure name; unmatched structures become 0 (body fills later)."""
    out = np.zeros(source.shape, dtype=np.uint8)
    for source_id, name in names.items():
        for pattern, target in _NAME_RULES:
            if pattern.search(name):
                out[(source == source_id) & (out == 0)] = target
                break
    return out


def _resample(volume: Volume, max_shape: tuple, labels: bool):
    """Resample onto a grid of at most `max_shape` (Z, Y, X) voxels covering the same extent."""
    import SimpleITK as sitk

    size = np.array(volume.array.shape[::-1])  # (x, y, z)
    new_size = np.minimum(size, np.array(max_shape[::-1]))
    spacing = np.array(volume.geometry.spacing)
    new_spacing = spacing * size / new_size
    direction = np.array(volume.geometry.direction).reshape(3, 3)
    origin = np.array(volume.geometry.origin) + direction @ ((new_spacing - spacing) / 2.0)
    image = to_image(volume.array, volume.geometry)
    if not labels:
        image = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), list(new_spacing / 2.5))
    interpolator = sitk.sitkNearestNeighbor if labels else sitk.sitkLinear
    out = sitk.Resample(image, [int(v) for v in new_size], sitk.Transform(), interpolator, origin.tolist(),
                        new_spacing.tolist(), volume.geometry.direction, -1000.0 if not labels else 0.0)
    geometry = Geometry(tuple(float(v) for v in new_spacing), tuple(float(v) for v in origin),
                        volume.geometry.direction)
    return sitk.GetArrayFromImage(out), geometry


def _body_mask(hu: np.ndarray) -> np.ndarray:
    """Largest connected region above -500 HU with holes filled slice by slice (drops the couch)."""
    from scipy import ndimage

    mask = ndimage.binary_opening(hu > -500.0, iterations=1)
    components, count = ndimage.label(mask)
    if count == 0:
        raise InputError("no body found (no voxels above -500 HU); is this a CT in Hounsfield units?")
    sizes = ndimage.sum(mask, components, range(1, count + 1))
    body = components == (int(np.argmax(sizes)) + 1)
    return np.stack([ndimage.binary_fill_holes(s) for s in body])


def _lung_mask(hu: np.ndarray, body: np.ndarray) -> np.ndarray:
    """The one or two largest air-like (< -400 HU) regions inside the body."""
    from scipy import ndimage

    components, count = ndimage.label((hu < -400.0) & body)
    if count == 0:
        return np.zeros_like(body)
    sizes = ndimage.sum(components > 0, components, range(1, count + 1))
    order = np.argsort(sizes)[::-1]
    keep = [order[0] + 1] + ([order[1] + 1] if count > 1 and sizes[order[1]] > 0.1 * sizes[order[0]] else [])
    return np.isin(components, keep)


def _regions(labels: np.ndarray, body: np.ndarray, grid: Grid, sliding: bool = True) -> tuple[MotionRegions, dict]:
    """Motion weights from the masks: SI motion inside the lungs and abdomen, decaying up to the apex. With
    `sliding` the SI motion stops at the lungs' edge (one voxel of margin, a 1.5 mm blur) and the chest wall
    keeps only the AP and lateral expansion; without, it fades over 8 mm around the lungs dilated by 8 mm."""
    from scipy import ndimage

    spacing_zyx = grid.spacing[::-1]
    world = grid.world()
    x, y, z = world[..., 0], world[..., 1], world[..., 2]
    lungs = labels == 2
    lung_z = z[lungs]
    if lung_z.size > 0.02 * body.sum():
        z_dome, z_apex = float(np.percentile(lung_z, 15)), float(np.percentile(lung_z, 99.5))
    else:  # abdomen only: everything below the top moves with the diaphragm
        z_dome = float(z.max())
        z_apex = z_dome + 150.0
    interior = ndimage.binary_erosion(body, iterations=max(1, int(round(15.0 / min(spacing_zyx)))))
    margin = 1 if sliding else max(1, int(round(8.0 / min(spacing_zyx))))
    near_lungs = ndimage.binary_dilation(lungs, iterations=margin)
    moving = (near_lungs | (interior & (z < z_dome + 20.0))) & body & (labels != 5)
    si = smooth_mask(moving, spacing_zyx, 1.5 if sliding else 8.0) * si_profile(z, z_dome, z_apex)
    body_y, body_x = y[body], x[body]
    y_ant, y_post = float(np.percentile(body_y, 1)), float(np.percentile(body_y, 99))
    y_spine = y_ant + 0.78 * (y_post - y_ant)
    ap = np.clip((y_spine - y) / max(y_spine - y_ant, 1.0), 0.0, 1.0)
    x_c, half = float(np.mean(body_x)), max(float(np.ptp(body_x)) / 2.0, 1.0)
    lateral = np.clip((x - x_c) / half, -1.0, 1.0) * smooth_mask(body, spacing_zyx, 8.0)
    landmarks = {"dome_z_mm": z_dome, "apex_z_mm": z_apex}
    return MotionRegions(si.astype(np.float32), ap.astype(np.float32), lateral.astype(np.float32)), landmarks


def _labels_for(ct_path: Path, labels_path, hu_volume: Volume, max_shape) -> tuple[Optional[np.ndarray], str]:
    if labels_path is None:
        labels_path = find_labels(ct_path)
    if not labels_path:
        return None, "thresholds"
    labels_path = Path(labels_path)
    source = read_volume(labels_path, labels=True)
    if source.array.shape != hu_volume.array.shape or not source.geometry.is_close(hu_volume.geometry):
        raise InputError(f"label map '{labels_path}' is not on the grid of '{ct_path}' (size/spacing/origin differ)")
    names = _source_names(labels_path) or {i: "structure" for i in np.unique(source.array) if i}
    mapped, _ = _resample(Volume(map_labels(source.array, names), source.geometry), max_shape, labels=True)
    return mapped.astype(np.uint8), str(labels_path)


def breathe_real_ct(ct_path: PathLike, labels_path: Optional[PathLike] = None, seed: int = 0, n_phases: int = 10,
                    max_shape: tuple[int, int, int] = (64, 96, 96), diaphragm_mm: Optional[float] = None,
                    tumour_si_mm: Optional[float] = None, tumour_ap_mm: Optional[float] = None,
                    hysteresis_mm: Optional[float] = None, noise_hu: float = 0.0,
                    progress: Optional[Progress] = None, regular: bool = False, sliding: bool = True) -> Case:
    """A 4D CT made from one real CT volume and the synthetic breathing model.

    The breathing is irregular as in the phantom (SI hysteresis, one cycle per phase bin, lung density
    falling with volume, sliding at the pleura; `MedLVMLib.synthetic.breathing`), drawn from `seed`.

    Args:
        labels_path: a label map on the CT's grid; None looks for '<name>_labels.nii.gz' beside the CT
            (the '_ct' of the name dropped), names from labels.json there. Without labels: thresholds.
        max_shape: largest (Z, Y, X) grid; the CT is smoothed and resampled onto it (same extent).
        noise_hu: extra CT noise per phase (the source already has its own).
        regular: perfectly repeating breathing; sliding: False lets the motion fade into the chest wall.
    Returns:
        Case with phases 0, 10, ... % (0 % end-inhale; the source CT is the end-exhale reference), labels and dvf.
    """
    ct_path = Path(ct_path)
    source = read_volume(ct_path)
    check_hu(source.array, ct_path, strict=True)
    labels, label_source = _labels_for(ct_path, labels_path, source, max_shape)
    hu, geometry = _resample(source, max_shape, labels=False)
    hu = hu.astype(np.float32)
    body = _body_mask(hu)
    structures = labels if labels is not None else np.zeros(hu.shape, dtype=np.uint8)
    if not (structures == 2).any():
        structures[_lung_mask(hu, body) & (structures == 0)] = 2
    structures[(hu > 250.0) & body & (structures == 0)] = 5
    structures[body & (structures == 0)] = 1
    grid = Grid.of(geometry, hu.shape)
    regions, landmarks = _regions(structures, body, grid, sliding)
    tumour = structures == 6
    centre = grid.world()[tumour].mean(axis=0) if tumour.any() else None
    radius = (3.0 * tumour.sum() * float(np.prod(geometry.spacing)) / (4 * np.pi)) ** (1 / 3) if tumour.any() else 0
    rng = np.random.default_rng([seed, 2])
    breathing = Breathing.random(rng, diaphragm_mm=diaphragm_mm, tumour_si_mm=tumour_si_mm,
                                 tumour_ap_mm=tumour_ap_mm, hysteresis_mm=hysteresis_mm)
    if regular:
        breathing = Breathing.regular(**asdict(breathing))
    result = breathe(hu, structures, regions, grid, breathing, n_phases, centre, float(radius), noise_hu, rng,
                     ensure(progress))
    phases = Phases(result.hu, geometry, source_info={"format": "real CT + synthetic breathing", "path": str(ct_path)})
    meta = {"generator": "MedLVMLib.synthetic.phantom.breathe_real_ct", "source_ct": ct_path.name,
            "labels": label_source, "seed": seed, "breathing": asdict(breathing), "noise_hu": noise_hu,
            "phase_bins": result.bins.as_meta(), "sliding": sliding,
            "reference": "the source CT",
            "tumour_centre_mm": None if centre is None else [float(v) for v in centre],
            "dvf_convention": "pull field: phase(x) = reference(x + dvf(x)); mm; LPS (x, y, z)", **landmarks}
    return Case(phases, result.labels, dict(LABEL_NAMES), result.dvf, meta)
