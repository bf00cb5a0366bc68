"""Respiratory motion model shared by the procedural phantom and by real CT + synthetic breathing.

Breathing trace (Lujan et al. 1999):  z(t) = z0 - b cos^{2n}(pi t - phi),  t in [0, 1) = phase / 100 %.
With phi = 0, t = 0 (phase 0 %) is end-inhale (the diaphragm lowest, b below end-exhale) and t = 0.5
(phase 50 %) is end-exhale (z0). The reference anatomy is the end-exhale one.

The motion is a smooth displacement field per phase, in world millimetres, LPS (x, y, z) components, and
it is a *pull* field:  phase_p(x) = reference(x + dvf_p(x))  (backward warping with map_coordinates).
  - SI: the diaphragm moves b mm; the motion decays from the diaphragm up to the lung apex and is confined
    to the thoracic cavity and abdomen (bones, body wall and air stay still);
  - AP: the anterior chest wall rises (a linear AP expansion about the spine plane) and the lungs follow a
    different path in and out (hysteresis: + h/2 sin(2 pi t) AP, so 25 % and 75 % differ by h mm);
  - LR: a small lateral expansion;
  - the tumour follows a chosen trajectory (SI amplitude, AP amplitude, hysteresis) through a local smooth
    correction centred on it.

Irregular breathing, so that no phase is a copy of another (`Breathing.random` draws it per case):
  - SI hysteresis of the diaphragm, lungs and tumour: + h_si/2 sin(2 pi t) SI, so phase p and its mirror
    100 % - p differ by h_si sin(2 pi t) (hysteresis of 1-5 mm in about half of the lung tumours of
    Seppenwoolde et al., IJROBP 53(4):822-834, 2002; AAPM TG-76, Keall et al., Med Phys 33(10):3874, 2006);
  - the phases of one 4D CT are binned from several breathing cycles: every phase bin gets its own cycle
    amplitude (relative sd 10-20 %) and end-exhale baseline (sd 1-3 mm SI), of the order of the
    cycle-to-cycle and baseline variations discussed in TG-76 and by Shirato et al., IJROBP 64(4):1229-1236,
    2006; such irregularity causes the 4D CT artefacts of Yamamoto et al., IJROBP 72(4):1250-1258, 2008;
  - sliding at the pleura: the SI field stops at the thoracic cavity (no smoothing across it), so ribs and
    chest wall keep only the AP and lateral expansion (Vandemeulebroucke et al., Med Phys 39(2):1006, 2012);
  - lung density falls with lung volume: parenchyma HU lower by 30-50 HU at full amplitude, scaled by the
    trace (air content follows volume, the relation behind HU-based ventilation imaging, Guerrero et al.,
    Phys Med Biol 51(4):777, 2006).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np


@dataclass(frozen=True)
class Breathing:
    """Amplitudes (mm, end-exhale -> end-inhale) and shape of one patient's breathing."""

    diaphragm_mm: float = 20.0
    tumour_si_mm: Optional[float] = 12.0  # None: the tumour just follows the field where it sits
    tumour_ap_mm: float = 2.5
    hysteresis_mm: float = 3.0
    chest_ap_mm: float = 5.0
    lateral_mm: float = 1.5
    n: int = 2  # Lujan exponent: larger n keeps the trace longer near end-exhale
    phase_shift: float = 0.0  # phi in radians; 0 puts end-inhale at phase 0 %
    hysteresis_si_mm: float = 0.0  # SI difference of the inhale and exhale paths (diaphragm, lungs, tumour)
    amplitude_variation: float = 0.0  # relative sd of the amplitude between the cycles of the phase bins
    baseline_variation_mm: float = 0.0  # sd (mm, SI) of the end-exhale baseline between those cycles
    density_change_hu: float = 0.0  # lung parenchyma HU drop at full amplitude (lower HU at inhale)

    @classmethod
    def random(cls, rng: np.random.Generator, **overrides) -> Breathing:
        """Amplitudes drawn in the clinical ranges; explicit (non-None) overrides win."""
        diaphragm = float(rng.uniform(10.0, 30.0))
        values = dict(
            diaphragm_mm=diaphragm, tumour_si_mm=float(min(rng.uniform(5.0, 25.0), diaphragm)),
            tumour_ap_mm=float(rng.uniform(2.0, 3.0)), hysteresis_mm=float(rng.uniform(1.0, 5.0)),
            chest_ap_mm=float(rng.uniform(3.0, 8.0)), lateral_mm=float(rng.uniform(0.5, 2.5)),
            n=int(rng.integers(1, 4)),
        )
        values.update(hysteresis_si_mm=float(rng.uniform(1.0, 5.0)), amplitude_variation=float(rng.uniform(0.1, 0.2)),
                      baseline_variation_mm=float(rng.uniform(1.0, 3.0)),
                      density_change_hu=float(rng.uniform(30.0, 50.0)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def regular(cls, **values) -> Breathing:
        """Perfectly repeating breathing: no SI hysteresis, no cycle variation, no density change."""
        return cls(**{**values, "hysteresis_si_mm": 0.0, "amplitude_variation": 0.0, "baseline_variation_mm": 0.0,
                      "density_change_hu": 0.0})

    def cycle_bins(self, rng: np.random.Generator, n_phases: int) -> CycleBins:
        """Amplitude factor and SI baseline (mm) of the breathing cycle each phase bin was taken from."""
        amplitude = np.ones(n_phases)
        baseline = np.zeros(n_phases)
        if self.amplitude_variation > 0:
            amplitude = np.clip(1.0 + self.amplitude_variation * rng.standard_normal(n_phases), 0.5, 1.5)
        if self.baseline_variation_mm > 0:
            baseline = self.baseline_variation_mm * rng.standard_normal(n_phases)
        return CycleBins(amplitude, baseline)

    def trace(self, t) -> np.ndarray:
        """cos^{2n}(pi t - phi): 1 at end-inhale, 0 at end-exhale."""
        return np.cos(np.pi * np.asarray(t, dtype=float) - self.phase_shift) ** (2 * self.n)

    def hysteresis(self, t) -> np.ndarray:
        """AP offset (mm) that makes inhale and exhale take different paths."""
        return 0.5 * self.hysteresis_mm * np.sin(2.0 * np.pi * np.asarray(t, dtype=float))

    def hysteresis_si(self, t) -> np.ndarray:
        """SI offset (mm): phase t and its mirror 1 - t differ by hysteresis_si_mm * sin(2 pi t)."""
        return 0.5 * self.hysteresis_si_mm * np.sin(2.0 * np.pi * np.asarray(t, dtype=float))

    def tumour_offset(self, t: float, amplitude: float = 1.0, baseline_mm: float = 0.0) -> np.ndarray:
        """Pull displacement (x, y, z) mm of the tumour centre at phase fraction t, in a cycle of relative
        `amplitude` whose end-exhale baseline lies `baseline_mm` (SI, shared in the tumour's share of the
        diaphragm motion)."""
        c = float(self.trace(t)) * amplitude
        si = self.tumour_si_mm or 0.0
        share = min(si / self.diaphragm_mm, 1.0) if self.diaphragm_mm > 0 else 0.0
        return np.array([0.0, self.tumour_ap_mm * c + amplitude * float(self.hysteresis(t)),
                         si * c + amplitude * float(self.hysteresis_si(t)) + share * baseline_mm])


class CycleBins(NamedTuple):
    """Per phase bin: the relative amplitude and the SI baseline shift (mm) of the cycle it comes from."""

    amplitude: np.ndarray  # (P,)
    baseline_mm: np.ndarray  # (P,)

    def as_meta(self) -> dict:
        """JSON lists (rounded) for a case's meta."""
        return {"amplitude": [round(float(a), 4) for a in self.amplitude],
                "baseline_mm": [round(float(b), 3) for b in self.baseline_mm]}


class MotionRegions(NamedTuple):
    """Spatial weights of the motion model on the image grid, all [Z, Y, X] float32."""

    si_weight: np.ndarray  # 1 in the abdomen and lung bases, decaying to 0 at the apex; 0 in bone/wall/air
    ap_ramp: np.ndarray  # 1 at the anterior body surface, 0 at the spine plane (posterior)
    lateral: np.ndarray  # (x - centre) / half width, clipped to [-1, 1]


class Grid(NamedTuple):
    """World coordinates of an image grid."""

    spacing: np.ndarray  # (3,) x, y, z
    origin: np.ndarray  # (3,)
    direction: np.ndarray  # (3, 3) columns = index axes i, j, k in world
    shape: tuple  # (Z, Y, X)

    @classmethod
    def of(cls, geometry, shape) -> Grid:
        return cls(np.asarray(geometry.spacing, float), np.asarray(geometry.origin, float),
                   np.asarray(geometry.direction, float).reshape(3, 3), tuple(shape))

    def world(self) -> np.ndarray:
        """(Z, Y, X, 3) world coordinates (x, y, z) of every voxel centre."""
        k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in self.shape], indexing="ij")
        ijk = np.stack([i, j, k], axis=-1) * self.spacing.astype(np.float32)  # (Z, Y, X, 3)
        return ijk @ self.direction.T.astype(np.float32) + self.origin.astype(np.float32)

    def to_index(self, vectors: np.ndarray) -> np.ndarray:
        """World displacement vectors (..., 3) -> index displacements (..., 3) in (i, j, k)."""
        return (vectors @ self.direction.astype(vectors.dtype)) / self.spacing.astype(vectors.dtype)

    def point_to_index(self, point: np.ndarray) -> np.ndarray:
        """World point (3,) -> continuous (k, j, i) array index."""
        ijk = self.direction.T @ (np.asarray(point, float) - self.origin) / self.spacing
        return ijk[::-1]


def si_profile(z: np.ndarray, z_dome: float, z_apex: float, power: float = 1.5) -> np.ndarray:
    """SI motion share by height: 1 at and below the diaphragm dome, 0 at the lung apex."""
    return np.clip((z_apex - z) / max(z_apex - z_dome, 1.0), 0.0, 1.0) ** power


def smooth_mask(mask: np.ndarray, spacing_zyx, sigma_mm: float = 8.0) -> np.ndarray:
    """A 0/1 mask blurred into a smooth 0..1 weight."""
    from scipy import ndimage

    sigma = [sigma_mm / s for s in spacing_zyx]
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma, mode="nearest")


def phase_field(regions: MotionRegions, breathing: Breathing, t: float, grid: Grid,
                tumour_centre: Optional[np.ndarray] = None, tumour_radius_mm: float = 15.0,
                amplitude: float = 1.0, baseline_mm: float = 0.0) -> np.ndarray:
    """Pull displacement field (Z, Y, X, 3) mm, LPS (x, y, z) components, at phase fraction t of a cycle of
    relative `amplitude` and SI end-exhale baseline `baseline_mm` (see `Breathing.cycle_bins`)."""
    c = float(breathing.trace(t)) * amplitude
    si = breathing.diaphragm_mm * c + amplitude * float(breathing.hysteresis_si(t)) + baseline_mm
    field = np.zeros(regions.si_weight.shape + (3,), dtype=np.float32)
    field[..., 2] = si * regions.si_weight
    field[..., 1] = (breathing.chest_ap_mm * c * regions.ap_ramp
                     + amplitude * float(breathing.hysteresis(t)) * regions.si_weight)
    field[..., 0] = -breathing.lateral_mm * c * regions.lateral
    if tumour_centre is not None and breathing.tumour_si_mm is not None:
        wanted = breathing.tumour_offset(t, amplitude, baseline_mm)
        _add_tumour_correction(field, wanted, tumour_centre, tumour_radius_mm, grid)
    return field


def _add_tumour_correction(field: np.ndarray, wanted: np.ndarray, centre: np.ndarray, radius_mm: float,
                           grid: Grid) -> None:
    """Move the tumour rigidly by `wanted`: the field equals `wanted` within radius + 8 mm of the tumour's
    position in this phase and blends smoothly (smoothstep over 12 mm) into the surrounding lung motion."""
    where = (np.asarray(centre, float) - wanted).astype(np.float32)  # the tumour centre appears here
    distance = np.sqrt(np.sum((grid.world() - where) ** 2, axis=-1))
    s = np.clip((radius_mm + 20.0 - distance) / 12.0, 0.0, 1.0)
    weight = (s * s * (3.0 - 2.0 * s))[..., None]  # (Z, Y, X, 1)
    field *= 1.0 - weight
    field += weight * wanted.astype(np.float32)


def warp(volume: np.ndarray, field: np.ndarray, grid: Grid, order: int = 1, cval: Optional[float] = None):
    """Backward-warp a [Z, Y, X] volume with a pull field (Z, Y, X, 3) mm: out(x) = volume(x + field(x))."""
    from scipy import ndimage

    shift = grid.to_index(field)  # (Z, Y, X, 3) in (i, j, k)
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in volume.shape], indexing="ij")
    coords = np.stack([k + shift[..., 2], j + shift[..., 1], i + shift[..., 0]])
    mode = "nearest" if cval is None else "constant"
    return ndimage.map_coordinates(volume, coords, order=order, mode=mode, cval=0.0 if cval is None else cval)


def correlated_noise(rng: np.random.Generator, shape, sigma_hu: float, correlation_voxels: float = 0.7):
    """Gaussian noise with a short spatial correlation (CT noise is not white), std `sigma_hu`."""
    from scipy import ndimage

    noise = rng.standard_normal(shape).astype(np.float32)
    if correlation_voxels > 0:
        noise = ndimage.gaussian_filter(noise, correlation_voxels)
        noise /= max(float(noise.std()), 1e-6)
    return noise * np.float32(sigma_hu)


class Breathed(NamedTuple):
    hu: np.ndarray  # (P, Z, Y, X) float32
    labels: Optional[np.ndarray]  # (P, Z, Y, X) uint8
    dvf: np.ndarray  # (P, Z, Y, X, 3) float32 mm
    bins: Optional[CycleBins] = None  # the cycle each phase bin comes from


LUNG_LABEL = 2  # the lungs' id in the phantom's and the real-CT cases' label maps


def parenchyma_weight(hu: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """0..1 share of aerated parenchyma: 1 at -700 HU and below inside the lungs, 0 from -200 HU (vessels,
    walls) up. Its air content, hence its HU, follows the lung volume."""
    return np.where(lungs, np.clip((-200.0 - hu) / 500.0, 0.0, 1.0), 0.0).astype(np.float32)


def breathe(hu: np.ndarray, labels: Optional[np.ndarray], regions: MotionRegions, grid: Grid, breathing: Breathing,
            n_phases: int, tumour_centre: Optional[np.ndarray], tumour_radius_mm: float, noise_hu: float,
            rng: np.random.Generator, progress) -> Breathed:
    """Warp a reference (end-exhale) CT and its labels to `n_phases` phases at 0, 100/P, ... %, adding noise.

    Each phase bin comes from its own cycle (`Breathing.cycle_bins`); lung parenchyma (label LUNG_LABEL)
    darkens by `density_change_hu` times the phase's trace."""
    out_hu = np.empty((n_phases,) + hu.shape, dtype=np.float32)
    out_labels = None if labels is None else np.empty((n_phases,) + hu.shape, dtype=np.uint8)
    dvf = np.empty((n_phases,) + hu.shape + (3,), dtype=np.float32)
    bins = breathing.cycle_bins(rng, n_phases)
    progress.stage("breathing phases", n_phases)
    for p in range(n_phases):
        t = p / n_phases
        dvf[p] = phase_field(regions, breathing, t, grid, tumour_centre, tumour_radius_mm,
                             float(bins.amplitude[p]), float(bins.baseline_mm[p]))
        out_hu[p] = warp(hu, dvf[p], grid, order=1)
        if labels is not None:
            out_labels[p] = warp(labels, dvf[p], grid, order=0)
            drop = breathing.density_change_hu * float(breathing.trace(t)) * float(bins.amplitude[p])
            if drop > 0:
                out_hu[p] -= np.float32(drop) * parenchyma_weight(out_hu[p], out_labels[p] == LUNG_LABEL)
        if noise_hu > 0:
            out_hu[p] += correlated_noise(rng, hu.shape, noise_hu)
        progress.advance()
    np.round(out_hu, out=out_hu)
    return Breathed(out_hu, out_labels, dvf, bins)
