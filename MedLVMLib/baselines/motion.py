"""Respiratory-motion baselines: predict the future phases of a 4D CT from its first (observed) phases.

Every baseline has the signature `fn(observed: Phases, n_future: int, n_total: int | None = None, **kw)
-> Phases` and returns `n_future` phases on the observed grid, labelled with `imaging.volume.continue_index`.

Phase numbering: the observed phases are phases 0 .. n_obs-1 of a breathing cycle of `n_total` phases
(default n_obs + n_future, usually 10), equally spaced in time, and the predicted ones are n_obs ..
n_obs+n_future-1. Phase numbers past the cycle wrap around (phase n_total is phase 0 again).

- "copy-last": every future phase is the last observed phase.
- "mirror": breathing is roughly symmetric about end-exhale/end-inhale, so phase k ≈ phase (n_total - k)
  (k ≈ 10 - k for ten phases). A phase whose mirror is not observed takes the observed phase nearest to
  that mirror in cycle terms (ties to the later phase); e.g. with 5 of 10 observed, phase 5 ← phase 4.
- "dvf": deformable registration of the last observed phase (reference) to every other observed phase,
  then per voxel and per component a fit of the displacement as a function of phase k, evaluated at each
  future phase to warp the reference. model="lujan" (default): u(k) = a - b cos^{2n}(πk/n_total - φ), a
  and b per voxel, the breathing shape n ∈ {1, 2, 3} shared by all voxels and fitted to all of them, φ = 0
  (`phase_offset`, see below);
  model="harmonic": the per-voxel first harmonic a + b cos(2πk/n_total) + c sin(2πk/n_total) (lets each
  voxel have its own phase, but is wrong for the sharper cos^4 / cos^6 breathing of many patients);
  model="linear": a straight line in k (no periodicity; for comparison only, it runs away).
- "pca": the same displacement fields, reduced by PCA to `n_components` (1-2) spatial modes; each mode's
  scores form a breathing trace fitted with Lujan's periodic model z0 - b cos^{2n}(πk/n_total - φ)
  (n ∈ {1, 2, 3}, φ = 0 as for "dvf", z0 and b by least squares; n = 1 is the first harmonic) and
  extrapolated to the future phases, which are rebuilt from the modes and warped from the reference.

The phase offset φ of the Lujan fits is 0 by default: an extreme of the breathing at phase 0, which is how
phase-binned 4D CT is labelled (phase 0 % = end-inhale, the trigger of the binning). Fitting φ as well
(`phase_offset=None`) is ill-posed with the five observed phases of half a cycle: when every phase bin comes
from a different breath (amplitude and baseline change from cycle to cycle), the fitted extreme moves by
phases and the extrapolation runs past the observed range. Measured on realistic-breathing phantoms
(docs/motion/README.md, "DVF and PCA with the phase offset of the 4D CT convention"): on seed 1002 the free fit
misses the diaphragm by 12 mm over phases 6-9, the fixed one by 2.8 mm, copy-last by 4.9 mm.

- "convlstm" / "rmsim": the learned baselines (a ConvLSTM image predictor and an RMSim-style DVF predictor,
  `baselines.learned_motion`), with the weights shipped in Resources/models/baselines/.

The registration settings (`register_kw`, e.g. smoothing_sigma, levels) go to `registration.register`;
`observed_fields` may be computed once and passed as `fields=` to both "dvf" and "pca".
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import registration
from MedLVMLib.imaging.volume import Phases, continue_index
from MedLVMLib.progress import Progress, ensure

LUJAN_POWERS = (1, 2, 3)
DVF_MODELS = ("lujan", "harmonic", "linear")
TIE_FRACTION = 0.002  # residuals closer than 0.2 % of the variance are not told apart by 5 noisy phases


def _check(observed: Phases, n_future: int, n_total: Optional[int]) -> int:
    """Validates the request and returns the cycle length n_total."""
    if not isinstance(observed, Phases):
        raise MedLVMError(f"observed must be a volumes.Phases, got {type(observed).__name__}")
    if n_future < 1:
        raise MedLVMError(f"n_future must be at least 1, got {n_future}")
    n_total = observed.n_phases + n_future if n_total is None else int(n_total)
    if n_total < observed.n_phases:
        raise MedLVMError(f"n_total={n_total} is smaller than the {observed.n_phases} observed phases")
    return n_total


def _output(observed: Phases, array: np.ndarray, n_total: Optional[int]) -> Phases:
    labels, values = continue_index(observed, array.shape[0], n_total)
    return Phases(
        array=np.ascontiguousarray(array, dtype=np.float32),
        geometry=observed.geometry,
        labels=labels,
        index_values=values,
        index_name=observed.index_name,
        index_unit=observed.index_unit,
    )


def copy_last(observed: Phases, n_future: int, n_total: Optional[int] = None, **kw) -> Phases:
    """Every future phase = the last observed phase."""
    _check(observed, n_future, n_total)
    return _output(observed, np.repeat(observed.array[-1:], n_future, axis=0), n_total)


def mirror_source(phase: int, n_observed: int, n_total: int) -> int:
    """Observed phase used for `phase` by the mirror baseline (see module docstring)."""
    target = (n_total - phase) % n_total

    def cycle_distance(j: int) -> tuple[int, int]:
        d = abs(target - j) % n_total
        return min(d, n_total - d), -j

    return min(range(n_observed), key=cycle_distance)


def mirror(observed: Phases, n_future: int, n_total: Optional[int] = None, **kw) -> Phases:
    """Phase k = observed phase (n_total - k), or the observed phase nearest to it in the cycle."""
    cycle = _check(observed, n_future, n_total)
    n_obs = observed.n_phases
    sources = [mirror_source(n_obs + i, n_obs, cycle) for i in range(n_future)]
    return _output(observed, observed.array[sources], n_total)


def observed_fields(observed: Phases, progress: Optional[Progress] = None, **register_kw) -> np.ndarray:
    """Fields [n_obs, Z, Y, X, 3] (mm) pulling the last observed phase onto each observed phase.

    warp(reference, fields[j]) ≈ phase j; fields[-1] = 0 (the reference itself).
    """
    progress = ensure(progress)
    reference = observed.array[-1]
    fields = np.zeros(observed.array.shape + (3,), np.float32)
    progress.stage("registering observed phases", observed.n_phases - 1)
    for j in range(observed.n_phases - 1):
        fields[j] = registration.register(observed.array[j], reference, observed.geometry, **register_kw)
        progress.advance()
    return fields


def _fields(observed: Phases, fields: Optional[np.ndarray], progress, register_kw: dict) -> np.ndarray:
    if fields is None:
        return observed_fields(observed, progress, **register_kw)
    expected = observed.array.shape + (3,)
    if np.shape(fields) != expected:
        raise MedLVMError(f"fields of shape {np.shape(fields)} do not match the observed phases {expected}")
    return np.asarray(fields, dtype=np.float32)


def principal_modes(flat: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCA of n samples of a long vector through their n x n Gram matrix (no V x n copy).

    Returns (modes [n_components, V] orthonormal, mean [V], scores [n, n_components]).
    """
    mean = flat.mean(axis=0)
    centred = flat - mean  # (n, V) float32
    gram = (centred @ centred.T).astype(np.float64)  # (n, n)
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    norms = np.sqrt(np.maximum(eigenvalues[order], 1e-20))
    modes = (eigenvectors[:, order].T @ centred) / norms[:, None].astype(np.float32)  # (n_components, V)
    return modes, mean, centred @ modes.T


def lujan_shape(phases: np.ndarray, n_total: int, power: int, phi: float) -> np.ndarray:
    """cos^{2 power}(π k / n_total - φ): Lujan's breathing shape (period n_total phases)."""
    return np.cos(np.pi * np.asarray(phases, dtype=float) / n_total - phi) ** (2 * power)


def fit_lujan(phases: np.ndarray, values: np.ndarray, n_total: int, powers=LUJAN_POWERS,
              phase_offset: Optional[float] = 0.0) -> tuple[int, float]:
    """The (power, φ) of z0 - b cos^{2n}(πk/n_total - φ) shared by all columns of `values` [n, m].

    Each column gets its own z0 and b by least squares; n minimises the total residual over `powers`, with
    φ = `phase_offset`, or with `phase_offset=None` over 180 values of φ in [0, π) as well (see the module
    docstring for why φ is fixed by default). Works from the n x n Gram matrix, so m may be millions.
    With five noisy points many shapes fit almost equally well: candidates within TIE_FRACTION (0.2 %) of
    the data variance of the best are ties, resolved towards φ = 0 (phase 0 at an extreme of the cycle,
    end-inhale in phase-binned 4D CT), then the lower power (n = 1 is the first harmonic).
    """
    k = np.asarray(phases, dtype=float)
    flat = np.asarray(values).reshape(len(k), -1)
    centred = flat - flat.mean(axis=0)  # the constant is in every basis: centring changes no residual
    gram = (centred @ centred.T).astype(np.float64)  # (n, n)
    offsets = np.linspace(0.0, np.pi, 180, endpoint=False) if phase_offset is None else [float(phase_offset)]
    candidates = []  # (residual, distance of φ from 0 modulo π, power, φ)
    for power in powers:
        for phi in offsets:
            basis = np.stack([np.ones_like(k), -lujan_shape(k, n_total, power, phi)], axis=1)
            projector = basis @ np.linalg.pinv(basis)  # (n, n)
            residual = float(np.trace(gram) - np.trace(projector @ gram))
            candidates.append((residual, min(phi, np.pi - phi), power, float(phi)))
    best_residual = min(c[0] for c in candidates)
    ties = [c for c in candidates if c[0] <= best_residual + TIE_FRACTION * np.trace(gram)]
    _, _, power, phi = min(ties, key=lambda c: (c[1], c[2]))
    return power, phi


def fit_lujan_trace(phases: np.ndarray, scores: np.ndarray, n_total: int, powers=LUJAN_POWERS,
                    phase_offset: Optional[float] = 0.0) -> Callable:
    """Fit z(k) = z0 - b cos^{2n}(πk/n_total - φ) to a 1D `scores` trace; returns z as a function of k.
    φ = `phase_offset`, or fitted too when it is None (as `fit_lujan`)."""
    power, phi = fit_lujan(phases, np.asarray(scores, dtype=float)[:, None], n_total, powers, phase_offset)
    basis = np.stack([np.ones(len(phases)), -lujan_shape(phases, n_total, power, phi)], axis=1)
    (z0, b), *_ = np.linalg.lstsq(basis, np.asarray(scores, dtype=float), rcond=None)
    return lambda q: z0 - b * lujan_shape(q, n_total, power, phi)


def _design(phases: np.ndarray, n_total: int, model: str, shape: tuple[int, float] = (1, 0.0)) -> np.ndarray:
    """Regression basis [len(phases), n_params] of the displacement-vs-phase model."""
    k = np.asarray(phases, dtype=float)
    if model == "lujan":
        return np.stack([np.ones_like(k), -lujan_shape(k, n_total, *shape)], axis=1)
    if model == "harmonic":
        angle = 2 * np.pi * k / n_total
        return np.stack([np.ones_like(k), np.cos(angle), np.sin(angle)], axis=1)
    if model == "linear":
        return np.stack([np.ones_like(k), k], axis=1)
    raise MedLVMError(f"unknown dvf model {model!r}; choose one of {DVF_MODELS}")


def _warp_reference(observed: Phases, fields: np.ndarray, progress: Optional[Progress]) -> np.ndarray:
    progress = ensure(progress)
    progress.stage("warping the reference phase", len(fields))
    out = np.empty((len(fields),) + observed.shape, np.float32)
    for i, field in enumerate(fields):
        out[i] = registration.warp(observed.array[-1], field, observed.geometry, order=1)
        progress.advance()
    return out


def dvf(
    observed: Phases,
    n_future: int,
    n_total: Optional[int] = None,
    model: str = "lujan",
    fields: Optional[np.ndarray] = None,
    progress: Optional[Progress] = None,
    phase_offset: Optional[float] = 0.0,
    **register_kw,
) -> Phases:
    """DVF extrapolation: per-voxel fit of the registered displacement vs phase, evaluated at future phases.

    `fields` may pass `observed_fields(observed)` computed once for both "dvf" and "pca" (the costly part);
    `phase_offset`: φ of the Lujan model (0: phase 0 is end-inhale; None: fitted, see the module docstring);
    `register_kw` goes to `registration.register` (e.g. levels=(4, 2) to skip the finest level).
    """
    cycle = _check(observed, n_future, n_total)
    n_obs = observed.n_phases
    needed = {"lujan": 3, "harmonic": 3, "linear": 2}.get(model)
    if needed is None:
        _design(np.arange(n_obs), cycle, model)  # raises the unknown-model error
    if n_obs < needed:
        raise MedLVMError(f"the {model} DVF model needs at least {needed} observed phases, got {n_obs}")
    fields = _fields(observed, fields, progress, register_kw)  # (n_obs, Z, Y, X, 3)
    flat = fields.reshape(n_obs, -1)  # (n_obs, V*3)
    shape = fit_lujan(np.arange(n_obs), flat, cycle, phase_offset=phase_offset) if model == "lujan" else (1, 0.0)
    basis = _design(np.arange(n_obs), cycle, model, shape)  # (n_obs, n_params)
    coefficients, *_ = np.linalg.lstsq(basis, flat, rcond=None)  # (n_params, V*3)
    future = _design(np.arange(n_obs, n_obs + n_future), cycle, model, shape) @ coefficients
    future_fields = future.reshape((n_future,) + fields.shape[1:]).astype(np.float32)
    return _output(observed, _warp_reference(observed, future_fields, progress), n_total)


def pca(
    observed: Phases,
    n_future: int,
    n_total: Optional[int] = None,
    n_components: int = 1,
    fields: Optional[np.ndarray] = None,
    progress: Optional[Progress] = None,
    phase_offset: Optional[float] = 0.0,
    **register_kw,
) -> Phases:
    """PCA respiratory motion model driven by a fitted Lujan breathing trace (see module docstring).

    `fields`, `phase_offset` and `register_kw` as for `dvf`.
    """
    cycle = _check(observed, n_future, n_total)
    n_obs = observed.n_phases
    if not 1 <= n_components < n_obs:
        raise MedLVMError(f"n_components must be between 1 and {n_obs - 1} for {n_obs} observed phases")
    if n_obs < 3:
        raise MedLVMError(f"the PCA model needs at least 3 observed phases, got {n_obs}")
    fields = _fields(observed, fields, progress, register_kw)
    modes, mean, scores = principal_modes(fields.reshape(n_obs, -1), n_components)
    future_k = np.arange(n_obs, n_obs + n_future)
    future_scores = np.stack(
        [fit_lujan_trace(np.arange(n_obs), scores[:, c], cycle, phase_offset=phase_offset)(future_k)
         for c in range(n_components)], axis=1
    )  # (n_future, n_components)
    future = mean + future_scores @ modes
    future_fields = future.reshape((n_future,) + fields.shape[1:]).astype(np.float32)
    return _output(observed, _warp_reference(observed, future_fields, progress), n_total)


def convlstm(observed: Phases, n_future: int, n_total: Optional[int] = None,
             progress: Optional[Progress] = None, **kw) -> Phases:
    """The shipped ConvLSTM phase predictor (baselines/learned_motion.py): the future images directly."""
    from MedLVMLib.baselines import learned_motion

    n_total = _check(observed, n_future, n_total)
    return learned_motion.predict("convlstm", observed, n_future, n_total, progress=progress)


def rmsim(observed: Phases, n_future: int, n_total: Optional[int] = None,
          progress: Optional[Progress] = None, **kw) -> Phases:
    """The shipped RMSim-style DVF predictor (baselines/learned_motion.py): the last phase warped."""
    from MedLVMLib.baselines import learned_motion

    n_total = _check(observed, n_future, n_total)
    return learned_motion.predict("rmsim", observed, n_future, n_total, progress=progress)


MOTION_BASELINES: dict[str, Callable[..., Phases]] = {
    "copy-last": copy_last,
    "mirror": mirror,
    "dvf": dvf,
    "pca": pca,
    "convlstm": convlstm,
    "rmsim": rmsim,
}
