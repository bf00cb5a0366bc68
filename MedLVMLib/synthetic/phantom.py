"""Procedural 4D CT of the thorax and upper abdomen with organ labels and ground-truth motion.

`make_phantom` builds an end-exhale anatomy in millimetres (so any grid size shows the same body), then
breathes it with the model in `MedLVMLib.synthetic.breathing` (Lujan trace, phase 0 % = end-inhale, 50 % = end-exhale).
Anatomy (HU): air -1000 outside; body fat -100 and chest-wall muscle 50; two lungs -860 with a vessel
texture; heart 40, aorta 45, trachea (air); liver 60 under the right diaphragm dome; stomach with a gas
bubble and spleen under the left dome; spine (cancellous ~250, cortex ~700, discs), ribs ~650 and sternum;
a soft-tissue tumour (35) in a lung; a couch. Labels: 1 body, 2 lungs, 3 heart, 4 liver, 5 bone, 6 tumour.
CT noise (correlated Gaussian, default 15 HU) is drawn independently for every phase.
The seed changes the anatomy (body size, dome height, tumour position) and the breathing amplitudes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import NamedTuple, Optional

import numpy as np

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.cases import LABEL_NAMES, Case
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.synthetic.breathing import Breathing, Grid, MotionRegions, si_profile, smooth_mask

FOV_MM = (264.0, 280.0, 340.0)  # (Z, Y, X) extent of the phantom's field of view
BODY, LUNGS, HEART, LIVER, BONE, TUMOUR = 1, 2, 3, 4, 5, 6


class Anatomy(NamedTuple):
    """The end-exhale reference: HU [Z, Y, X] (noise free), labels, motion regions and landmarks (mm)."""

    hu: np.ndarray
    labels: np.ndarray
    regions: MotionRegions
    tumour_centre: np.ndarray  # (x, y, z) world mm
    landmarks: dict


def phantom_geometry(shape: tuple[int, int, int]) -> Geometry:
    """Identity-direction grid of `shape` (Z, Y, X) covering FOV_MM, centred on the origin."""
    spacing = tuple(FOV_MM[2 - a] / shape[2 - a] for a in range(3))  # (x, y, z)
    origin = tuple(-FOV_MM[2 - a] / 2 + spacing[a] / 2 for a in range(3))
    return Geometry(spacing=spacing, origin=origin)


def _smooth_noise(rng: np.random.Generator, shape, spacing_zyx, sigma_mm: float) -> np.ndarray:
    """Unit-variance smooth random field (texture, vessel network)."""
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32),
                                    [sigma_mm / s for s in spacing_zyx], mode="wrap")
    return field / max(float(field.std()), 1e-6)


class _Axes(NamedTuple):
    z: np.ndarray  # (Z, 1, 1) mm
    y: np.ndarray  # (1, Y, 1)
    x: np.ndarray  # (1, 1, X)


def _axes(geometry: Geometry, shape) -> _Axes:
    x, y, z = (geometry.origin[a] + geometry.spacing[a] * np.arange(shape[2 - a], dtype=np.float32)
               for a in range(3))
    return _Axes(z[:, None, None], y[None, :, None], x[None, None, :])


def _body_and_cavity(p: dict, g: _Axes) -> dict:
    """2D-in-plane shapes broadcast over Z: body, chest wall, cavity, couch."""
    ax, ay = p["ax"], p["ay"]
    rho = np.sqrt((g.x / ax) ** 2 + (g.y / ay) ** 2)  # (1, Y, X)
    rho_in = np.sqrt((g.x / (0.84 * ax)) ** 2 + ((g.y - 0.02 * ay) / (0.80 * ay)) ** 2)
    couch = (g.y > ay + 6) & (g.y < ay + 16) & (np.abs(g.x) < 0.8 * ax)
    return {"rho": rho, "body": rho < 1.0, "muscle": (rho > 0.86) & (rho < 0.95), "cavity": rho_in < 1.0,
            "couch": couch}


def _diaphragm(p: dict, g: _Axes) -> np.ndarray:
    """Height (mm) of the diaphragm surface over the axial plane: domes, deeper at the periphery."""
    right = 1.0 / (1.0 + np.exp(g.x / 20.0))  # 1 on the patient's right (x < 0 in LPS)
    r2 = np.minimum(_lung_r2(p, g, -1), _lung_r2(p, g, 1))
    return p["dome_r"] * right + p["dome_l"] * (1 - right) - 28.0 * np.clip(r2, 0, 1.2)


def _lung_r2(p: dict, g: _Axes, side: int) -> np.ndarray:
    """Normalised in-plane radius^2 of the right (side -1) or left (+1) lung outline."""
    cx = side * 0.45 * p["ax"]
    return ((g.x - cx) / (0.36 * p["ax"])) ** 2 + ((g.y - 0.05 * p["ay"]) / (0.68 * p["ay"])) ** 2


def _bones(p: dict, g: _Axes, shapes: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(bone mask, bone HU) for spine, ribs and sternum."""
    ay = p["ay"]
    yv = 0.55 * ay
    rv = np.sqrt(g.x**2 + (g.y - yv) ** 2)
    canal = np.sqrt(g.x**2 + (g.y - yv - 26.0) ** 2)
    disc = np.mod(g.z - p["disc_offset"], 32.0) < 6.0
    body_v = np.broadcast_to(rv < 17.0, disc.shape[:1] + rv.shape[1:])
    arch = (canal > 8.0) & (canal < 15.0) & (g.y > yv + 10)
    spinous = (np.abs(g.x) < 5.0) & (g.y > yv + 30) & (g.y < yv + 50)
    rib_phase = np.mod((g.z + 0.35 * g.y - p["rib_offset"]) / 30.0, 1.0)
    ring = (shapes["rho"] > 0.86) & (shapes["rho"] < 0.925) & ~((np.abs(g.x) < 22) & (g.y < 0))
    ribs = ring & (rib_phase < 0.28) & (g.z > p["dome_r"] - 80)
    sternum = (np.abs(g.x) < 14) & (shapes["rho"] > 0.84) & (shapes["rho"] < 0.95) & (g.y < 0)
    sternum = sternum & (g.z > p["dome_r"] + 10)
    mask = (body_v & ~disc) | arch | spinous | ribs | sternum
    hu = np.where(rv > 14.0, 700.0, 250.0) + 60.0 * rng.standard_normal(mask.shape).astype(np.float32)
    hu = np.where(ribs | arch | spinous, 650.0, hu)
    hu = np.where(sternum & ~ribs, 420.0, hu)
    return np.broadcast_to(mask, hu.shape), hu.astype(np.float32)


def _organs(p: dict, g: _Axes, shapes: dict, diaphragm: np.ndarray) -> dict:
    """Boolean masks (Z, Y, X) of lungs, heart, liver, stomach (+ gas), spleen, aorta, trachea."""
    ax, ay = p["ax"], p["ay"]
    cavity = shapes["cavity"]
    taper = np.sqrt(np.clip((p["apex"] - g.z) / 45.0, 0.0, 1.0))  # lungs narrow towards the apex
    above = g.z > diaphragm
    mediastinum = (np.abs(g.x - 8.0) < 0.14 * ax) & (g.y < 0.42 * ay)
    heart_r = (((g.x - 0.12 * ax) / p["heart"][0]) ** 2 + ((g.y + 0.22 * ay) / p["heart"][1]) ** 2
               + ((g.z - p["dome_l"] - 42.0) / p["heart"][2]) ** 2)
    heart = (heart_r < 1.0) & above & cavity
    aorta = (np.sqrt((g.x - 22.0) ** 2 + (g.y - 0.32 * ay) ** 2) < 12.0) & (g.z < p["dome_r"] + 100)
    trachea = (np.sqrt(g.x**2 + (g.y - 0.05 * ay) ** 2) < 9.0) & (g.z > p["dome_r"] + 85)
    lungs = np.zeros(heart.shape, dtype=bool)
    for side in (-1, 1):
        lungs |= (_lung_r2(p, g, side) < taper**2) & above & cavity
    lungs &= ~heart & ~mediastinum & ~aorta & (g.z < p["apex"])
    below = (g.z < diaphragm - 4.0) & cavity & (g.y < 0.42 * ay)
    depth = np.clip((diaphragm - 4.0 - g.z) / 120.0, 0.0, 1.0)  # the liver narrows downwards
    liver_r = ((g.x + 0.2 * ax) / ((0.72 - 0.3 * depth) * ax)) ** 2 + ((g.y + 0.05 * ay) / (0.75 * ay)) ** 2
    liver = below & (liver_r < 1.0) & (g.z > diaphragm - 150.0)
    stomach_r = (((g.x - 0.45 * ax) / (0.24 * ax)) ** 2 + ((g.y + 0.05 * ay) / (0.3 * ay)) ** 2
                 + ((g.z - p["dome_l"] + 40.0) / 38.0) ** 2)
    stomach = below & (stomach_r < 1.0) & ~liver
    gas = stomach & (stomach_r < 0.8) & (g.z > p["dome_l"] - 22.0) & (g.y < -0.05 * ay)
    spleen_r = ((g.x - 0.6 * ax) / 25.0) ** 2 + ((g.y - 0.35 * ay) / 40.0) ** 2 + ((g.z - p["dome_l"] + 35) / 40.0) ** 2
    spleen = below & (spleen_r < 1.0)
    return {"lungs": lungs, "heart": heart, "aorta": aorta & cavity, "trachea": trachea & cavity, "liver": liver,
            "stomach": stomach, "gas": gas, "spleen": spleen & ~liver}


def _place_tumour(p: dict, organs: dict, g: _Axes, geometry: Geometry, rng: np.random.Generator,
                  radius: float, position: Optional[tuple]) -> np.ndarray:
    """Tumour centre (x, y, z) mm: `position`, or a random lung point at least `radius` from the lung edge."""
    from scipy import ndimage

    if position is not None:
        return np.asarray(position, dtype=float)
    spacing_zyx = geometry.spacing[::-1]
    depth = ndimage.distance_transform_edt(organs["lungs"], sampling=spacing_zyx)
    lower = np.broadcast_to(g.z < p["dome_r"] + 80.0, depth.shape)
    candidates = np.argwhere((depth > radius + 4.0) & lower)
    if len(candidates) == 0:
        candidates = np.argwhere(depth >= depth.max() * 0.8)
    k, j, i = candidates[rng.integers(len(candidates))]
    return np.array([float(g.x[0, 0, i]), float(g.y[0, j, 0]), float(g.z[k, 0, 0])])


def _parameters(rng: np.random.Generator) -> dict:
    return {
        "ax": 150.0 * rng.uniform(0.92, 1.06), "ay": 105.0 * rng.uniform(0.92, 1.06),
        "dome_r": rng.uniform(-42.0, -22.0), "dome_l": 0.0, "apex": 112.0,
        "heart": (rng.uniform(50, 60), rng.uniform(40, 48), rng.uniform(45, 55)),
        "disc_offset": rng.uniform(0, 32), "rib_offset": rng.uniform(0, 30), "dome_drop": rng.uniform(8.0, 18.0),
    }


def _compose_hu(p: dict, g: _Axes, shapes: dict, organs: dict, bone: np.ndarray, bone_hu: np.ndarray,
                tumour: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Noise-free HU of the reference anatomy (before the scanner blur)."""
    spacing_zyx = geometry.spacing[::-1]
    shape = tumour.shape
    texture = _smooth_noise(rng, shape, spacing_zyx, 6.0)
    hu = np.full(shape, -1000.0, dtype=np.float32)
    hu[np.broadcast_to(shapes["couch"], shape)] = 250.0
    hu[np.broadcast_to(shapes["body"], shape)] = -100.0
    hu[np.broadcast_to(shapes["muscle"], shape)] = 50.0
    cavity = np.broadcast_to(shapes["cavity"], shape)
    hu[cavity] = np.where(np.broadcast_to(g.z, shape)[cavity] < p["dome_r"] - 4, -30.0, -70.0)  # abdomen / mediast.
    hu += np.where(cavity, 15.0 * texture, 0.0)
    hu[organs["liver"]] = 60.0 + 5.0 * texture[organs["liver"]]
    hu[organs["spleen"]] = 50.0
    hu[organs["stomach"]] = 35.0
    hu[organs["gas"]] = -990.0
    hu[organs["heart"]] = 42.0 + 4.0 * texture[organs["heart"]]
    hu[organs["aorta"]] = 45.0
    hu[organs["lungs"]] = _lung_hu(p, g, organs["lungs"], geometry, rng)[organs["lungs"]]
    hu[organs["trachea"]] = -1000.0
    hu[bone] = bone_hu[bone]
    hu[tumour] = 35.0 + 8.0 * texture[tumour]
    return hu


def _lung_hu(p: dict, g: _Axes, lungs: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """Parenchyma (-870, denser posteriorly) with branching vessels from each hilum and fine texture."""
    spacing_zyx = geometry.spacing[::-1]
    n1 = _smooth_noise(rng, lungs.shape, spacing_zyx, 6.0)
    n2 = _smooth_noise(rng, lungs.shape, spacing_zyx, 6.0)
    small = 0.45 * np.exp(-(n1**2 + n2**2) / 0.15**2)  # small peripheral vessels
    vessels = np.maximum(_vessel_tree(p, g, lungs, geometry, rng), small)
    gravity = 25.0 * np.clip((g.y + p["ay"]) / (2 * p["ay"]), 0, 1)  # dependent lung is denser
    texture = _smooth_noise(rng, lungs.shape, spacing_zyx, 4.0)
    return (-870.0 + gravity + 12.0 * texture + 900.0 * vessels).astype(np.float32)


def _vessel_segments(p: dict, rng: np.random.Generator) -> list:
    """(start, end, radius) in mm: seven trunks per hilum, each branching in two for two generations."""
    segments = []
    for side in (-1, 1):
        hilum = np.array([side * 0.3 * p["ax"], 0.1 * p["ay"], p["dome_r"] + 75.0])
        trunks = [(side * 0.6, 0.0, 0.8), (side * 0.5, 0.0, -0.85), (side, 0.0, -0.1), (side * 0.5, -0.8, -0.2),
                  (side * 0.5, 0.8, -0.4), (side * 0.4, -0.5, 0.6), (side * 0.4, 0.6, 0.5)]
        trunks = [np.asarray(d) / np.linalg.norm(d) + rng.normal(0.0, 0.15, 3) for d in trunks]
        stack = [(hilum, d / np.linalg.norm(d), 35.0, 3.8, 0) for d in trunks]
        while stack:
            start, direction, length, radius, generation = stack.pop()
            end = start + direction * length
            segments.append((start, end, radius))
            if generation < 2:
                for _ in range(2):
                    turn = rng.normal(0.0, 0.6, 3)
                    child = direction + turn - np.dot(turn, direction) * direction
                    stack.append((end, child / np.linalg.norm(child), length * 0.75, radius * 0.68, generation + 1))
    return segments


def _peripheral_segments(p: dict, g: _Axes, lungs: np.ndarray, rng: np.random.Generator, count: int = 500) -> list:
    """Short vessel pieces at random lung points, pointing to their hilum, thinner further out."""
    points = np.argwhere(lungs)
    if len(points) == 0:
        return []
    segments = []
    for k, j, i in points[rng.integers(len(points), size=count)]:
        point = np.array([g.x[0, 0, i], g.y[0, j, 0], g.z[k, 0, 0]], dtype=float)
        hilum = np.array([np.sign(point[0]) * 0.3 * p["ax"], 0.1 * p["ay"], p["dome_r"] + 75.0])
        towards = hilum - point
        distance = float(np.linalg.norm(towards)) + 1e-6
        direction = towards / distance + rng.normal(0.0, 0.2, 3)
        length = rng.uniform(8.0, 22.0)
        radius = float(np.clip(2.6 - distance / 60.0, 0.7, 2.2))
        segments.append((point, point + direction / np.linalg.norm(direction) * length, radius))
    return segments


def _vessel_tree(p: dict, g: _Axes, lungs: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """0..1 vessel fraction per voxel (partial volume at the tube walls), rendered segment by segment."""
    out = np.zeros(lungs.shape, dtype=np.float32)
    axes = (g.x[0, 0], g.y[0, :, 0], g.z[:, 0, 0])
    voxel = float(min(geometry.spacing))
    for start, end, radius in _vessel_segments(p, rng) + _peripheral_segments(p, g, lungs, rng):
        lo, hi = np.minimum(start, end) - radius - voxel, np.maximum(start, end) + radius + voxel
        box = [np.nonzero((a >= lo[i]) & (a <= hi[i]))[0] for i, a in enumerate(axes)]  # x, y, z indices
        if any(len(b) == 0 for b in box):
            continue
        zz, yy, xx = np.meshgrid(axes[2][box[2]], axes[1][box[1]], axes[0][box[0]], indexing="ij")
        points = np.stack([xx, yy, zz], axis=-1) - start
        segment = end - start
        t = np.clip(points @ segment / float(segment @ segment), 0.0, 1.0)
        distance = np.linalg.norm(points - t[..., None] * segment, axis=-1)
        fraction = np.clip((radius - distance) / voxel + 0.5, 0.0, 1.0)
        view = out[np.ix_(box[2], box[1], box[0])]
        out[np.ix_(box[2], box[1], box[0])] = np.maximum(view, fraction)
    return out


def _motion_regions(p: dict, g: _Axes, shapes: dict, bone: np.ndarray, geometry: Geometry,
                    sliding: bool = True) -> MotionRegions:
    """SI weight inside the thoracic cavity; with `sliding` it stops at the pleura (a 1.5 mm edge) instead of
    fading over 8 mm into the chest wall and ribs, which then move only with the AP and lateral expansion."""
    spacing_zyx = geometry.spacing[::-1]
    cavity = np.broadcast_to(shapes["cavity"], bone.shape)
    moving = cavity & ~bone & ~np.broadcast_to((np.abs(g.x) < 30) & (g.y > 0.4 * p["ay"]), bone.shape)
    si = smooth_mask(moving, spacing_zyx, 1.5 if sliding else 8.0) * si_profile(g.z, p["dome_r"], p["apex"])
    y_spine = 0.45 * p["ay"]
    ap = np.clip((y_spine - g.y) / (y_spine + p["ay"]), 0.0, 1.0) * np.ones_like(si)
    body = smooth_mask(np.broadcast_to(shapes["body"], bone.shape), spacing_zyx, 8.0)
    lateral = np.clip(g.x / p["ax"], -1.0, 1.0) * body
    return MotionRegions(si.astype(np.float32), ap.astype(np.float32), lateral.astype(np.float32))


def build_anatomy(seed: int = 0, shape: tuple[int, int, int] = (48, 64, 64), tumour_diameter_mm: float = 25.0,
                  tumour_position: Optional[tuple] = None, sliding: bool = True) -> tuple[Anatomy, Geometry]:
    """The end-exhale reference anatomy of phantom `seed` on a grid of `shape` (Z, Y, X); `sliding`: the
    lungs slide along the chest wall (see `_motion_regions`)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    geometry = phantom_geometry(shape)
    g = _axes(geometry, shape)
    p = _parameters(rng)
    p["dome_l"] = p["dome_r"] - p["dome_drop"]
    shapes = _body_and_cavity(p, g)
    organs = _organs(p, g, shapes, _diaphragm(p, g))
    bone, bone_hu = _bones(p, g, shapes, rng)
    radius = tumour_diameter_mm / 2.0
    centre = _place_tumour(p, organs, g, geometry, rng, radius, tumour_position)
    wobble = 1.0 + 0.12 * _smooth_noise(rng, shape, geometry.spacing[::-1], 5.0)
    distance = np.sqrt((g.x - centre[0]) ** 2 + (g.y - centre[1]) ** 2 + (g.z - centre[2]) ** 2)
    tumour = (distance < radius * wobble) & np.broadcast_to(shapes["body"], shape)
    hu = _compose_hu(p, g, shapes, organs, bone, bone_hu, tumour, geometry, rng)
    hu = ndimage.gaussian_filter(hu, 0.5)  # scanner point-spread function / partial volume
    labels = _labels(shapes, organs, bone, tumour)
    landmarks = {"dome_right_z_mm": p["dome_r"], "dome_left_z_mm": p["dome_l"], "apex_z_mm": p["apex"],
                 "body_semi_axes_mm": [p["ax"], p["ay"]]}
    anatomy = Anatomy(hu, labels, _motion_regions(p, g, shapes, bone, geometry, sliding), centre, landmarks)
    return anatomy, geometry


def _labels(shapes: dict, organs: dict, bone: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    shape = tumour.shape
    labels = np.zeros(shape, dtype=np.uint8)
    labels[np.broadcast_to(shapes["body"], shape)] = BODY
    labels[organs["lungs"] | organs["trachea"]] = LUNGS
    labels[organs["trachea"]] = BODY
    labels[organs["liver"]] = LIVER
    labels[organs["heart"]] = HEART
    labels[bone & np.broadcast_to(shapes["body"], shape)] = BONE
    labels[tumour] = TUMOUR
    return labels


def make_phantom(seed: int = 0, n_phases: int = 10, shape: tuple[int, int, int] = (48, 64, 64),
                 tumour_diameter_mm: float = 25.0, tumour_position: Optional[tuple] = None,
                 diaphragm_mm: Optional[float] = None, tumour_si_mm: Optional[float] = None,
                 tumour_ap_mm: Optional[float] = None, hysteresis_mm: Optional[float] = None,
                 noise_hu: float = 15.0, progress: Optional[Progress] = None, regular: bool = False,
                 sliding: bool = True) -> Case:
    """A breathing 4D CT phantom with labels and ground-truth motion.

    Breathing as in a real 4D CT (`MedLVMLib.synthetic.breathing`): SI hysteresis, each phase bin from its own
    cycle, density falling with lung volume, sliding lungs; drawn from `seed` (meta "breathing", "phase_bins").

    Args:
        shape: (Z, Y, X) voxels over a fixed 264 x 280 x 340 mm field of view (default ~5.5 x 4.4 x 5.3 mm).
        tumour_position: tumour centre (x, y, z) in LPS mm at end-exhale; default a random lower-lung point.
        diaphragm_mm, tumour_si_mm, tumour_ap_mm, hysteresis_mm: breathing amplitudes; None draws them
            from `seed` (10-30, 5-25, 2-3, 1-5 mm).
        noise_hu: standard deviation of the CT noise per phase (0: noise free).
        regular: perfectly repeating breathing (no SI hysteresis, cycle variation or density change).
        sliding: False lets the SI motion fade smoothly into the chest wall (no sliding at the pleura).
    Returns:
        Case with phases at 0, 100/P, ... % (0 % end-inhale), labels [P, Z, Y, X], dvf [P, Z, Y, X, 3] mm.
    """
    from MedLVMLib.synthetic.breathing import breathe

    _check_phantom_args(n_phases, shape, tumour_diameter_mm)
    anatomy, geometry = build_anatomy(seed, shape, tumour_diameter_mm, tumour_position, sliding)
    rng = np.random.default_rng([seed, 1])
    breathing = Breathing.random(rng, diaphragm_mm=diaphragm_mm, tumour_si_mm=tumour_si_mm,
                                 tumour_ap_mm=tumour_ap_mm, hysteresis_mm=hysteresis_mm)
    if regular:
        breathing = Breathing.regular(**asdict(breathing))
    result = breathe(anatomy.hu, anatomy.labels, anatomy.regions, Grid.of(geometry, shape), breathing, n_phases,
                     anatomy.tumour_centre, tumour_diameter_mm / 2.0, noise_hu, rng, ensure(progress))
    phases = Phases(result.hu, geometry, source_info={"format": "phantom", "seed": seed})
    meta = {"generator": "MedLVMLib.synthetic.phantom.make_phantom", "seed": seed, "shape": list(shape),
            "breathing": asdict(breathing), "phase_bins": result.bins.as_meta(), "sliding": sliding,
            "tumour_centre_mm": anatomy.tumour_centre.tolist(),
            "tumour_diameter_mm": tumour_diameter_mm, "noise_hu": noise_hu, "reference": "end-exhale (50 %)",
            "dvf_convention": "pull field: phase(x) = reference(x + dvf(x)); mm; LPS (x, y, z)", **anatomy.landmarks}
    return Case(phases, result.labels, dict(LABEL_NAMES), result.dvf, meta)


def _check_phantom_args(n_phases: int, shape, tumour_diameter_mm: float) -> None:
    if n_phases < 1:
        raise InputError(f"n_phases must be >= 1, got {n_phases}")
    if len(shape) != 3 or min(shape) < 8:
        raise InputError(f"shape must be three sizes (Z, Y, X) of at least 8 voxels, got {tuple(shape)}")
    if not 0 < tumour_diameter_mm <= 80:
        raise InputError(f"tumour diameter must be in (0, 80] mm, got {tumour_diameter_mm}")


def demo_case() -> Case:
    """The demo's small 4D CT: phantom seed 0, 10 phases, 48 x 64 x 64 voxels (deterministic, about a second)."""
    return make_phantom(seed=0)


def breathe_real_ct(ct_path, labels_path=None, seed: int = 0, n_phases: int = 10, **options) -> Case:
    """Real anatomy + synthetic breathing; see `MedLVMLib.synthetic.realct.breathe_real_ct` for the options."""
    from MedLVMLib.synthetic.realct import breathe_real_ct as _breathe_real_ct

    return _breathe_real_ct(ct_path, labels_path, seed=seed, n_phases=n_phases, **options)


_OUTLINES = {LUNGS: "#3cb44b", HEART: "#e6194b", LIVER: "#f58231", BONE: "#ffe119", TUMOUR: "#00e5ff"}


def save_preview(case: Case, path, window: tuple[float, float] = (-1000.0, 400.0), columns: int = 5) -> None:
    """PNG grid: one coronal slice (through the tumour, else the middle) per phase, labels outlined.

    A dashed line marks the tumour centre (else the right dome) at the first exhale phase, so the motion shows.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from MedLVMLib.imaging.frames import to_frames

    phases = case.phases
    sx, _, sz = phases.geometry.spacing
    row = _preview_row(case)
    ref = int(np.argmin(np.abs(np.asarray(phases.index_values) - 50.0)))
    line = _preview_line(case, ref, row)
    rows = int(np.ceil(phases.n_phases / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for p, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if p >= phases.n_phases:
            continue
        ax.imshow(to_frames(phases.array[p], "coronal")[row], cmap="gray", vmin=window[0], vmax=window[1],
                  aspect=sz / sx, interpolation="nearest")
        if case.labels is not None:
            frame = to_frames(case.labels[p], "coronal")[row]
            for label, colour in _OUTLINES.items():
                if (frame == label).any():
                    ax.contour(frame == label, [0.5], colors=colour, linewidths=0.8)
        if line is not None:
            ax.axhline(line, color="white", linestyle="--", linewidth=0.6)
        ax.set_title(phases.labels[p] + {0: " inhale", ref: " exhale"}.get(p, ""), fontsize=9)
    from matplotlib.lines import Line2D

    handles = [Line2D([0], [0], color=c, label=case.label_names.get(k, str(k))) for k, c in _OUTLINES.items()]
    handles.append(Line2D([0], [0], color="black", linestyle="--", label="tumour centre at exhale"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"coronal slice {row} through the tumour, every phase (0 % end-inhale)", fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _preview_row(case: Case) -> int:
    """Coronal frame index (the Y index) through the tumour, or the lungs' centre, or the middle."""
    ref_labels = case.labels[0] if case.labels is not None else None
    for label in (TUMOUR, LUNGS):
        if ref_labels is not None and (ref_labels == label).any():
            return int(round(np.argwhere(ref_labels == label)[:, 1].mean()))
    return case.phases.shape[1] // 2


def _preview_line(case: Case, ref: int, row: int) -> Optional[float]:
    """Row in the coronal frame of the tumour centre at phase `ref` (frames flip Z: superior on top)."""
    if case.labels is None or not (case.labels[ref] == TUMOUR).any():
        return None
    z = np.argwhere(case.labels[ref] == TUMOUR)[:, 0].mean()
    return float(case.phases.shape[0] - 1 - z)
