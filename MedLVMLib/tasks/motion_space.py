"""Keep a predicted motion within the breathing that the observed phases show ("--motion observed").

The warp render turns each predicted frame into a displacement field from the last observed phase. Those fields
carry the transformer's decision (how far along the breathing cycle each future phase lies) and also the noise of
decoding and registration, which moves anatomy where nothing moves and makes a copy-last-like prediction worse
than copying. Here each predicted field is replaced by its projection on the observed breathing mode:

    basis       the fields from the last observed phase to each earlier observed phase, registered exactly as the
                predictions are (tokenized and decoded by the same model, same registration settings);
    mode        their first principal direction (uncentred: the last observed phase is the origin, field 0),
                oriented so that phase 0 lies at a positive coefficient;
    coefficient each predicted field's projection on the mode, clipped to the observed range of coefficients
                (the last observed phase's 0 and the earlier phases'), widened at each end by RANGE_TOLERANCE
                of the observed amplitude (none by default).

The model still chooses, per predicted phase, where on the observed trajectory the anatomy lies; what the
projection removes is motion in directions the observed phases never showed, and motion beyond their range
(a prediction that keeps exhaling past the observed end-exhale stops at it). A prediction of no motion stays
no motion: a zero field projects to zero, and the native last phase comes back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from MedLVMLib.errors import MedLVMError

MOTION_CHOICES = ("free", "observed")
# The clip's widening at each end, as a fraction of the observed amplitude: none. Every phase of a 4D CT lies between
# end-inhale and end-exhale, which phases 0-4 span; the guard's 15 % (motion_guard.TOLERANCE_FRACTION) let a model
# that keeps exhaling move real anatomy 15 % of the amplitude past end-exhale (docs/motion/README.md, motion_space/).
RANGE_TOLERANCE = 0.0
DEFAULT_MOTION = "observed"  # where it applies (default_for); chosen by the evaluation (docs/motion/README.md)


def default_for(render: str, n_observed: int) -> str:
    """The motion a prediction gets when none is asked for: "observed" where there is an observed breathing and a
    field to project (the warp render, 2 or more observed phases), else "free"."""
    return DEFAULT_MOTION if render == "warp" and n_observed >= 2 else "free"


@dataclass(frozen=True)
class Projection:
    """What the projection did: the observed and predicted coefficients (mm along the unit mode) and the clip."""

    observed: tuple  # per observed phase, the last (0.0) included
    predicted_raw: tuple  # per predicted phase, before clipping
    predicted: tuple  # after clipping
    low: float
    high: float

    @property
    def held(self) -> tuple:
        """The raw coefficients of the predicted phases that lay beyond the observed range (held at its edge)."""
        return tuple(raw for raw, kept in zip(self.predicted_raw, self.predicted) if abs(raw - kept) > 1e-6)

    @property
    def clipped(self) -> int:
        return len(self.held)

    def describe(self) -> str:
        """One line for a person: where each predicted phase lies between the last observed phase (0 %) and
        phase 0 (100 %), and how many were brought back into the observed range."""
        span = self.observed[0] if abs(self.observed[0]) > 1e-9 else None

        def where(values) -> str:
            return ", ".join(f"{100 * a / span:.0f} %" if span else f"{a:.1f} mm" for a in values)

        text = (f"motion kept to the observed breathing: the predicted phases lie at {where(self.predicted)} of the "
                "way from the last observed phase back to phase 0")
        if self.held:
            text += (f"; {len(self.held)} phase(s) predicted beyond the observed range (at {where(self.held)}) were "
                     "held at its edge")
        return text


def breathing_mode(basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unit first principal direction of `basis` [B, ...] (fields from the last observed phase to phases
    0..B-1) and the coefficients of the basis on it, oriented so that phase 0's is >= 0."""
    flat = np.asarray(basis, np.float64).reshape(len(basis), -1)
    if not np.all(np.isfinite(flat)):
        raise MedLVMError("the observed phases' motion fields contain NaN or infinite values")
    if not np.any(flat):
        return np.zeros(flat.shape[1]), np.zeros(len(flat))
    # the first right singular vector, through the small B x B Gram matrix (the fields are millions of values)
    values, vectors = np.linalg.eigh(flat @ flat.T)
    mode = vectors[:, -1] @ flat
    mode /= np.linalg.norm(mode)
    coefficients = flat @ mode
    if coefficients[0] < 0:
        mode, coefficients = -mode, -coefficients
    return mode, coefficients


def project(fields: np.ndarray, basis: np.ndarray, tolerance_fraction: float = RANGE_TOLERANCE,
            ) -> tuple[np.ndarray, Projection]:
    """Predicted fields [F, ...] projected on the observed breathing mode of `basis` [B, ...] (same trailing shape),
    their coefficients clipped to the observed range widened by `tolerance_fraction` of the observed amplitude at
    each end; float32 like the input."""
    fields = np.asarray(fields)
    basis = np.asarray(basis)
    if basis.ndim < 2 or len(basis) < 1:
        raise MedLVMError("--motion observed needs at least 2 observed phases (a motion to project on)")
    if fields.shape[1:] != basis.shape[1:]:
        raise MedLVMError(f"predicted fields {fields.shape[1:]} and observed fields {basis.shape[1:]} differ in shape")
    mode, seen = breathing_mode(basis)
    seen = np.append(seen, 0.0)  # the last observed phase: the origin
    tolerance = float(tolerance_fraction) * float(np.ptp(seen))
    low, high = float(seen.min()) - tolerance, float(seen.max()) + tolerance
    raw = np.asarray(fields, np.float64).reshape(len(fields), -1) @ mode
    clipped = np.clip(raw, low, high)
    out = (clipped[:, None] * mode[None, :]).reshape(fields.shape).astype(np.float32)
    info = Projection(tuple(float(v) for v in seen), tuple(float(v) for v in raw),
                      tuple(float(v) for v in clipped), low, high)
    return out, info
