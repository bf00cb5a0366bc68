"""Projection of predicted motion fields on the observed breathing mode (--motion observed)."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.tasks import motion_space

SHAPE = (6, 7, 8, 3)


def mode_field(seed: int = 0) -> np.ndarray:
    field = np.random.default_rng(seed).normal(size=SHAPE)
    return field / np.linalg.norm(field)


def test_a_prediction_along_the_observed_mode_is_kept_and_noise_across_it_removed():
    mode = mode_field()
    basis = np.stack([a * mode for a in (8.0, 6.0, 3.0, 1.0)])  # phases 0-3 seen from phase 4
    noise = np.random.default_rng(1).normal(scale=0.2, size=(2,) + SHAPE)
    noise -= np.tensordot(noise.reshape(2, -1) @ mode.ravel(), mode, axes=0)  # across the mode only
    fields = np.stack([2.0 * mode, 5.0 * mode]) + noise
    projected, info = motion_space.project(fields, basis)
    np.testing.assert_allclose(projected, np.stack([2.0 * mode, 5.0 * mode]), atol=1e-5)
    np.testing.assert_allclose(info.observed, (8, 6, 3, 1, 0), atol=1e-9)
    assert info.clipped == 0 and projected.dtype == np.float32


def test_motion_beyond_the_observed_range_stops_at_its_edge():
    mode = mode_field()
    basis = np.stack([a * mode for a in (10.0, 7.0, 4.0, 2.0)])
    # further exhale than the last observed phase (negative), and past phase 0 (beyond 10)
    fields = np.stack([-6.0 * mode, 14.0 * mode])
    projected, info = motion_space.project(fields, basis)  # the default: exactly the observed range
    np.testing.assert_allclose(info.predicted, (0.0, 10.0), atol=1e-9)
    np.testing.assert_allclose(projected, np.stack([0.0 * mode, 10.0 * mode]), atol=1e-5)
    assert info.clipped == 2 and (info.low, info.high) == (0.0, 10.0)
    projected, info = motion_space.project(fields, basis, tolerance_fraction=0.15)  # widened by 15 % of 10
    np.testing.assert_allclose(info.predicted, (-1.5, 11.5), atol=1e-9)
    np.testing.assert_allclose(projected[0], -1.5 * mode, atol=1e-5)


def test_the_mode_is_oriented_towards_phase_0_and_no_motion_stays_no_motion():
    mode = mode_field(3)
    basis = np.stack([-a * mode for a in (5.0, 3.0)])
    _, coefficients = motion_space.breathing_mode(basis)
    assert coefficients[0] > 0
    projected, info = motion_space.project(np.zeros((2,) + SHAPE), basis)
    assert not projected.any() and info.predicted == (0.0, 0.0)
    # nothing observed moves: every prediction becomes no motion
    projected, _ = motion_space.project(np.ones((1,) + SHAPE), np.zeros((2,) + SHAPE))
    assert not projected.any()


def test_bad_fields_are_refused():
    with pytest.raises(MedLVMError, match="differ in shape"):
        motion_space.project(np.zeros((1,) + SHAPE), np.zeros((2, 5, 5, 5, 3)))
    with pytest.raises(MedLVMError, match="NaN"):
        motion_space.project(np.zeros((1,) + SHAPE), np.full((2,) + SHAPE, np.nan))


def test_the_summary_says_where_the_phases_lie_and_what_was_clipped():
    mode = mode_field()
    basis = np.stack([a * mode for a in (8.0, 6.0, 3.0, 1.0)])
    _, info = motion_space.project(np.stack([4.0 * mode, -6.0 * mode]), basis)
    text = info.describe()
    assert "lie at 50 %, 0 % of the way" in text and "1 phase(s) predicted beyond the observed range (at -75 %)" in text
