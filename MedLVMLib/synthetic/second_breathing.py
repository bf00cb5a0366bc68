"""A second, independent breathing model for the motion evaluation: no method is tuned on it.

The phantom's anatomy (`phantom.build_anatomy`) breathes here with a model that shares nothing with
`synthetic.breathing` but the warp:

- Trace: asymmetric. Inhalation is shorter than exhalation (inspiratory fraction 0.30-0.45 of the cycle;
  I:E ratios of about 1:1.5-1:2 in quiet breathing), and each half has its own shape,
  exhale s = ((1 + cos(pi t / e)) / 2) ** q_out, inhale s = ((1 - cos(pi u)) / 2) ** q_in, s = 1 at
  end-inhale (phase 0 %), 0 at end-exhale. Phase k and its mirror 10 - k are not the same state.
- Hysteresis as a loop: the anterior-posterior motion of the lungs and chest lags the superior-inferior
  motion by 3-10 % of the cycle, so the tumour traces an ellipse (1-4 mm wide) instead of a line
  (the loop shapes of Seppenwoolde et al., IJROBP 53(4):822-834, 2002).
- Spatial profile: the superior-inferior motion is the diaphragm's below the dome and decays exponentially
  above it (length 40-90 mm), inside the moving region of the anatomy only (the lungs slide along the wall).
- Irregularity: each phase bin comes from its own cycle: amplitude x (1 + N(0, 0.15)), end-exhale baseline
  + N(0, 1.5 mm), and the bin's sampling time jittered by N(0, 0.02) of a cycle (phase binning error).
- Density: parenchyma 20-40 HU lower at full inhale.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from MedLVMLib.imaging.cases import Case
from MedLVMLib.imaging.volume import Phases
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.synthetic import breathing as shared
from MedLVMLib.synthetic.phantom import LABEL_NAMES, build_anatomy

GENERATOR = "MedLVMLib.synthetic.second_breathing.make_case"


@dataclass(frozen=True)
class SecondBreathing:
    diaphragm_mm: float = 18.0
    inspiratory_fraction: float = 0.4
    q_out: float = 1.5
    q_in: float = 1.0
    lag: float = 0.06  # AP behind SI, fraction of the cycle
    lung_ap_mm: float = 3.0
    chest_ap_mm: float = 5.0
    lateral_mm: float = 1.5
    decay_mm: float = 60.0
    density_hu: float = 30.0

    @classmethod
    def random(cls, rng: np.random.Generator) -> SecondBreathing:
        return cls(diaphragm_mm=float(rng.uniform(8.0, 28.0)), inspiratory_fraction=float(rng.uniform(0.30, 0.45)),
                   q_out=float(rng.uniform(1.0, 2.5)), q_in=float(rng.uniform(0.7, 1.3)),
                   lag=float(rng.uniform(0.03, 0.10)), lung_ap_mm=float(rng.uniform(1.5, 4.0)),
                   chest_ap_mm=float(rng.uniform(2.0, 7.0)), lateral_mm=float(rng.uniform(0.5, 2.0)),
                   decay_mm=float(rng.uniform(40.0, 90.0)), density_hu=float(rng.uniform(20.0, 40.0)))

    def trace(self, t) -> np.ndarray:
        """1 at end-inhale (t = 0), 0 at end-exhale (t = 1 - inspiratory_fraction); t in cycles."""
        t = np.mod(np.asarray(t, dtype=float), 1.0)
        e = 1.0 - self.inspiratory_fraction
        exhale = ((1.0 + np.cos(np.pi * np.clip(t / e, 0, 1))) / 2.0) ** self.q_out
        inhale = ((1.0 - np.cos(np.pi * np.clip((t - e) / self.inspiratory_fraction, 0, 1))) / 2.0) ** self.q_in
        return np.where(t < e, exhale, inhale)


def _profile(regions: shared.MotionRegions, grid: shared.Grid, dome_z: float, decay_mm: float) -> np.ndarray:
    """1 below the dome, exp(-(z - dome) / decay) above it, inside the moving region only."""
    z = grid.world()[..., 2]
    moving = (regions.si_weight > 0.01).astype(np.float32)
    return (moving * np.where(z <= dome_z, 1.0, np.exp(-(z - dome_z) / decay_mm))).astype(np.float32)


def make_case(seed: int = 0, n_phases: int = 10, shape: tuple[int, int, int] = (48, 64, 64), noise_hu: float = 15.0,
              progress: Optional[Progress] = None) -> Case:
    """A 4D CT of phantom anatomy `seed` breathing with the second model (drawn from `seed`), with labels and
    the ground-truth pull fields (as `phantom.make_phantom`)."""
    anatomy, geometry = build_anatomy(seed, shape)
    rng = np.random.default_rng([seed, 7])
    model = SecondBreathing.random(rng)
    grid = shared.Grid.of(geometry, shape)
    dome = 0.5 * (anatomy.landmarks["dome_right_z_mm"] + anatomy.landmarks["dome_left_z_mm"])
    profile = _profile(anatomy.regions, grid, dome, model.decay_mm)
    amplitude = np.clip(1.0 + 0.15 * rng.standard_normal(n_phases), 0.6, 1.4)
    baseline = 1.5 * rng.standard_normal(n_phases)
    jitter = 0.02 * rng.standard_normal(n_phases)
    parenchyma = shared.parenchyma_weight(anatomy.hu, anatomy.labels == shared.LUNG_LABEL)
    hu = np.empty((n_phases,) + tuple(shape), np.float32)
    labels = np.empty((n_phases,) + tuple(shape), np.uint8)
    dvf = np.empty((n_phases,) + tuple(shape) + (3,), np.float32)
    progress = ensure(progress)
    progress.stage("breathing phases (second model)", n_phases)
    for p in range(n_phases):
        t = p / n_phases + jitter[p]
        s, s_lag = float(model.trace(t)) * amplitude[p], float(model.trace(t - model.lag)) * amplitude[p]
        field = np.zeros(tuple(shape) + (3,), np.float32)
        field[..., 2] = (model.diaphragm_mm * s + baseline[p]) * profile
        field[..., 1] = model.chest_ap_mm * s_lag * anatomy.regions.ap_ramp + model.lung_ap_mm * s_lag * profile
        field[..., 0] = -model.lateral_mm * s * anatomy.regions.lateral
        dvf[p] = field
        reference = anatomy.hu - np.float32(model.density_hu * s) * parenchyma
        hu[p] = shared.warp(reference, field, grid, order=1)
        labels[p] = shared.warp(anatomy.labels, field, grid, order=0)
        if noise_hu > 0:
            hu[p] += shared.correlated_noise(rng, hu[p].shape, noise_hu)
        progress.advance()
    phases = Phases(hu, geometry, source_info={"format": "phantom (second breathing model)", "seed": seed})
    meta = {"generator": GENERATOR, "seed": seed, "shape": list(shape), "breathing": asdict(model),
            "phase_bins": {"amplitude": [round(float(a), 4) for a in amplitude],
                           "baseline_mm": [round(float(b), 3) for b in baseline],
                           "time_jitter": [round(float(j), 4) for j in jitter]},
            "tumour_centre_mm": anatomy.tumour_centre.tolist(), "noise_hu": noise_hu,
            "reference": "end-exhale",
            "dvf_convention": "pull field: phase(x) = reference(x + dvf(x)); mm; LPS (x, y, z)", **anatomy.landmarks}
    return Case(phases, labels, dict(LABEL_NAMES), dvf, meta)
