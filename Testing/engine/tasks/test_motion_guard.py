"""tasks/motion_guard.py: the breathing surrogates and each kind of warning, on volumes with known lungs."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.tasks import motion_guard

GEOMETRY = Geometry((2.0, 2.0, 3.0))


def chest(lung_bottom: int, shape=(30, 20, 20)) -> np.ndarray:
    """Body (40 HU) in outside air, with one lung cavity from z = lung_bottom to z = 25 (a lower bottom: inhale)."""
    volume = np.full(shape, -1000.0, np.float32)
    volume[:, 2:18, 2:18] = 40.0
    volume[lung_bottom:25, 5:15, 5:15] = -800.0
    return volume


def phases(bottoms) -> Phases:
    return Phases(np.stack([chest(b) for b in bottoms]), GEOMETRY)


OBSERVED = phases([10, 11, 12, 13, 14])  # end-inhale to end-exhale: the lung shrinks from below


def test_lung_mask_leaves_the_outside_air_out():
    volume = chest(10)
    mask = motion_guard.lung_mask(volume)
    assert mask.sum() == 15 * 10 * 10 and mask[10:25, 5:15, 5:15].all()
    values = motion_guard.surrogates(volume, GEOMETRY)
    assert values["lung volume"] == pytest.approx(1500 * 2 * 2 * 3 / 1000)
    assert values["lung centroid SI"] == pytest.approx(17.0 * 3)


def test_the_true_return_to_inhale_passes():
    check = motion_guard.check_prediction(OBSERVED, phases([14, 13, 12, 11, 10]))
    assert check.ok, check.warnings
    assert len(check.traces["lung volume"]) == 10


def test_copying_the_last_phase_is_called_no_motion():
    check = motion_guard.check_prediction(OBSERVED, phases([14] * 5))
    assert not check.ok
    assert all("almost no motion" in w for w in check.warnings) and len(check.warnings) == 2


def test_motion_beyond_the_observed_range_is_named():
    check = motion_guard.check_prediction(OBSERVED, phases([14, 12, 9, 6, 4]))
    assert any("lung volume: predicted phase(s) 7, 8, 9 leave the observed range" in w for w in check.warnings)


def test_motion_against_the_breathing_direction_is_named():
    check = motion_guard.check_prediction(OBSERVED, phases([15, 16, 17, 17, 17]))
    assert any("against the breathing direction" in w for w in check.warnings)
    partial = motion_guard.check_prediction(OBSERVED, phases([15, 16, 17]))  # 8 of 10 phases: no cycle to close
    assert not any("against the breathing direction" in w for w in partial.warnings)


def test_no_lungs_is_said_not_guessed():
    flat = Phases(np.full((5, 10, 8, 8), 40.0, np.float32), GEOMETRY)
    check = motion_guard.check_prediction(flat.select([0, 1, 2]), flat.select([3, 4]))
    assert check.warnings and all("no lungs found" in w for w in check.warnings)
    assert check.to_dict()["ok"] is False
