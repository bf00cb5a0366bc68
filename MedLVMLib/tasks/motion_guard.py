"""A guard against a harmful motion prediction: does the predicted breathing stay within what was observed?

No labels are needed. Each phase is summarised by two breathing surrogates measured on the lungs, found as
the air enclosed by the body (HU below -400, in connected parts that do not touch the volume's in-plane
border, so that the air around the patient is left out):
    lung volume (mL)            grows on inhale (tidal volume),
    lung centroid SI (mm)       moves inferiorly on inhale, with the diaphragm.
The predicted phases are then compared with the observed ones:
    beyond range   a predicted value lies outside the observed range by more than the tolerance;
    against        a prediction that completes the cycle ends farther from phase 0 than the last observed
                   phase is (breathing returns to where it started: 0 % and 100 % are the same phase);
    no motion      the prediction moves less than 10 % of the observed amplitude (it copies the last phase).
Tolerance: 15 % of the observed amplitude, at least 1 mm or 1 % of the mean lung volume.
Each finding is one sentence in `MotionCheck.warnings`, for the command line, the report and the Slicer panel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from MedLVMLib.imaging.volume import Phases

AIR_HU = -400.0
TOLERANCE_FRACTION = 0.15
NO_MOTION_FRACTION = 0.10
SURROGATES = {"lung volume": ("mL", 0.01), "lung centroid SI": ("mm", None)}  # unit, relative floor of the tolerance


@dataclass
class MotionCheck:
    """Breathing surrogates per phase (observed, then predicted) and what looks wrong with the prediction."""

    n_observed: int
    traces: dict = field(default_factory=dict)  # surrogate -> [observed..., predicted...]
    warnings: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def lung_mask(volume: np.ndarray) -> np.ndarray:
    """Air enclosed by the body: HU < -400 in connected parts that do not touch the in-plane border. [Z, Y, X]."""
    from scipy import ndimage

    air = np.asarray(volume) < AIR_HU
    parts, n = ndimage.label(air)
    if n == 0:
        return air
    edges = (parts[:, 0], parts[:, -1], parts[:, :, 0], parts[:, :, -1])  # the in-plane border of every slice
    border = np.concatenate([edge.ravel() for edge in edges])
    outside = np.zeros(n + 1, bool)
    outside[np.unique(border)] = True
    outside[0] = True  # the background label (not air)
    return ~outside[parts]


def surrogates(volume: np.ndarray, geometry) -> dict:
    """{lung volume (mL), lung centroid SI (mm, along the volume's z axis)} of one HU volume [Z, Y, X]."""
    mask = lung_mask(volume)
    sx, sy, sz = (float(s) for s in geometry.spacing)
    count = int(mask.sum())
    centroid = float(np.nonzero(mask)[0].mean()) * sz if count else float("nan")
    return {"lung volume": count * sx * sy * sz / 1000.0, "lung centroid SI": centroid}


def check_prediction(observed: Phases, predicted: Phases, cycle_length: int = 10) -> MotionCheck:
    """Compare the predicted phases' breathing surrogates with the observed phases'."""
    n_obs = observed.n_phases
    rows = [surrogates(v, observed.geometry) for v in observed.array]
    rows += [surrogates(v, predicted.geometry) for v in predicted.array]
    check = MotionCheck(n_obs, {name: [round(r[name], 2) for r in rows] for name in SURROGATES})
    completes_cycle = n_obs + predicted.n_phases >= cycle_length
    for name, (unit, floor) in SURROGATES.items():
        trace = np.asarray([r[name] for r in rows], float)
        if not np.all(np.isfinite(trace)):
            check.warnings.append(f"{name}: no lungs found in some phases (is this a thoracic CT?); not checked")
            continue
        check.warnings += _findings(name, unit, trace, n_obs, floor, completes_cycle)
    return check


def _findings(name: str, unit: str, trace: np.ndarray, n_obs: int, floor, completes_cycle: bool) -> list[str]:
    seen, future = trace[:n_obs], trace[n_obs:]
    amplitude = float(seen.max() - seen.min())
    tolerance = max(TOLERANCE_FRACTION * amplitude, 1.0 if floor is None else floor * abs(float(seen.mean())))
    found = []
    low, high = seen.min() - tolerance, seen.max() + tolerance
    outside = [i for i, v in enumerate(future) if v < low or v > high]
    if outside:
        worst = max(future[outside], key=lambda v: max(low - v, v - high))
        found.append(f"{name}: predicted phase(s) {', '.join(str(n_obs + i) for i in outside)} leave the observed "
                     f"range {seen.min():.1f}-{seen.max():.1f} {unit} (up to {worst:.1f} {unit})")
    if completes_cycle and abs(future[-1] - seen[0]) > abs(seen[-1] - seen[0]) + tolerance:
        found.append(f"{name}: the last predicted phase ({future[-1]:.1f} {unit}) is farther from phase 0 "
                     f"({seen[0]:.1f} {unit}) than the last observed phase ({seen[-1]:.1f} {unit}): the predicted "
                     "motion runs against the breathing direction")
    moved = float(np.ptp(np.concatenate([seen[-1:], future])))
    if amplitude > tolerance and moved < NO_MOTION_FRACTION * amplitude:
        found.append(f"{name}: the prediction moves {moved:.1f} {unit}, under {NO_MOTION_FRACTION:.0%} of the "
                     f"observed {amplitude:.1f} {unit}: it predicts almost no motion (like copying the last phase)")
    return found
