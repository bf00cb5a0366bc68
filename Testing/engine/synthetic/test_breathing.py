"""MedLVMLib.synthetic.breathing: irregular breathing (SI hysteresis, one cycle per phase bin, sliding at the
pleura, lung density falling with volume) in the phantom, so that no phase is a copy of another."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.synthetic.breathing import Breathing, CycleBins, Grid, parenchyma_weight
from MedLVMLib.synthetic.phantom import BONE, LUNGS, make_phantom

SHAPE = (32, 48, 48)
AMPLITUDES = dict(diaphragm_mm=20.0, tumour_si_mm=15.0, tumour_ap_mm=2.5, hysteresis_mm=4.0)


@pytest.fixture(scope="module")
def irregular():
    return make_phantom(seed=3, shape=SHAPE, noise_hu=0.0, **AMPLITUDES)


@pytest.fixture(scope="module")
def regular():
    return make_phantom(seed=3, shape=SHAPE, noise_hu=0.0, regular=True, **AMPLITUDES)


def test_parameters_are_drawn_in_the_published_ranges():
    for seed in range(30):
        b = Breathing.random(np.random.default_rng(seed))
        assert 1.0 <= b.hysteresis_si_mm <= 5.0 and 0.1 <= b.amplitude_variation <= 0.2
        assert 1.0 <= b.baseline_variation_mm <= 3.0 and 30.0 <= b.density_change_hu <= 50.0
    regular = Breathing.regular(**AMPLITUDES)
    assert (regular.hysteresis_si_mm, regular.amplitude_variation, regular.baseline_variation_mm,
            regular.density_change_hu) == (0.0, 0.0, 0.0, 0.0)


def test_cycle_bins_vary_per_phase_and_are_seeded():
    b = Breathing(amplitude_variation=0.15, baseline_variation_mm=2.0)
    bins = b.cycle_bins(np.random.default_rng(7), 10)
    assert isinstance(bins, CycleBins) and bins.amplitude.shape == bins.baseline_mm.shape == (10,)
    assert np.ptp(bins.amplitude) > 0.05 and np.ptp(bins.baseline_mm) > 0.5
    assert np.all((bins.amplitude >= 0.5) & (bins.amplitude <= 1.5))
    again = b.cycle_bins(np.random.default_rng(7), 10)
    assert np.array_equal(bins.amplitude, again.amplitude) and np.array_equal(bins.baseline_mm, again.baseline_mm)
    flat = Breathing().cycle_bins(np.random.default_rng(7), 10)
    assert np.all(flat.amplitude == 1.0) and np.all(flat.baseline_mm == 0.0)


def test_si_hysteresis_separates_a_phase_from_its_mirror():
    b = Breathing.regular(**AMPLITUDES)
    assert b.tumour_offset(0.1)[2] == pytest.approx(b.tumour_offset(0.9)[2])  # symmetric without SI hysteresis
    h = Breathing(**{**AMPLITUDES, "hysteresis_si_mm": 3.0})
    difference = h.tumour_offset(0.25)[2] - h.tumour_offset(0.75)[2]
    assert difference == pytest.approx(3.0, abs=1e-9)  # the full hysteresis at mid-inhale vs mid-exhale


def test_mirror_phases_are_the_same_geometry_only_with_regular_breathing(regular, irregular):
    grid = Grid.of(regular.phases.geometry, regular.phases.shape)
    distance = np.linalg.norm(grid.world() - np.asarray(regular.meta["tumour_centre_mm"]), axis=-1)
    away = distance > 60.0  # the tumour's correction also carries its AP hysteresis
    lungs = (irregular.labels[5] == LUNGS) & away
    breathing, bins = Breathing(**irregular.meta["breathing"]), irregular.meta["phase_bins"]

    def diaphragm_si(p):  # the SI pull where the lungs move fully (weight 1)
        a = bins["amplitude"][p]
        return (breathing.diaphragm_mm * a * breathing.trace(p / 10) + a * breathing.hysteresis_si(p / 10)
                + bins["baseline_mm"][p])

    gaps = []
    for p in (1, 2, 3, 4):
        np.testing.assert_allclose(regular.dvf[p][..., 2][away], regular.dvf[10 - p][..., 2][away], atol=1e-3)
        gap = np.abs(irregular.dvf[p][..., 2] - irregular.dvf[10 - p][..., 2])[lungs]
        gaps.append(abs(diaphragm_si(p) - diaphragm_si(10 - p)))
        assert gap.max() == pytest.approx(gaps[-1], rel=0.02, abs=0.02)
    assert np.mean(gaps) > 1.0, gaps


def test_tumour_follows_its_cycle(irregular):
    """The tumour moves rigidly by the offset of its phase's own cycle (amplitude and baseline)."""
    breathing = Breathing(**irregular.meta["breathing"])
    bins = irregular.meta["phase_bins"]
    grid = Grid.of(irregular.phases.geometry, irregular.phases.shape)
    centre = np.asarray(irregular.meta["tumour_centre_mm"])
    for p in range(10):
        wanted = breathing.tumour_offset(p / 10, bins["amplitude"][p], bins["baseline_mm"][p])
        k, j, i = np.round(grid.point_to_index(centre - wanted)).astype(int)
        assert np.allclose(irregular.dvf[p][k, j, i], wanted, atol=2e-3)
    assert len(set(bins["amplitude"])) == 10


def test_chest_wall_and_ribs_do_not_follow_the_lungs(irregular):
    """Sliding: SI motion is full inside the lungs up to the pleura and near zero in the ribs."""
    bones = irregular.labels[5] == BONE
    lungs = irregular.labels[5] == LUNGS
    si = np.abs(irregular.dvf[0][..., 2])
    assert np.percentile(si[bones], 95) < 1.0
    assert np.percentile(si[lungs], 95) > 10.0
    smooth = make_phantom(seed=3, shape=SHAPE, noise_hu=0.0, sliding=False, **AMPLITUDES)
    assert np.percentile(np.abs(smooth.dvf[0][..., 2])[bones], 95) > 2 * np.percentile(si[bones], 95) + 0.5


def test_lungs_are_darker_at_inhale(regular, irregular):
    """Parenchyma loses density_change_hu x trace x cycle amplitude: about that much at end-inhale (0 %),
    nothing at end-exhale (50 %), against the same phantom breathing regularly."""
    drop = irregular.meta["breathing"]["density_change_hu"] * irregular.meta["phase_bins"]["amplitude"][0]

    def darker(p):
        common = (regular.labels[p] == LUNGS) & (irregular.labels[p] == LUNGS) & (regular.phases.array[p] < -700)
        return float(np.median(regular.phases.array[p][common] - irregular.phases.array[p][common]))

    assert 0.8 * drop <= darker(0) <= 1.2 * drop, (darker(0), drop)
    assert abs(darker(5)) < 0.2 * drop


@pytest.mark.parametrize("hu, expected", [(-900.0, 1.0), (-700.0, 1.0), (-450.0, 0.5), (-200.0, 0.0), (40.0, 0.0)])
def test_parenchyma_weight(hu, expected):
    weight = parenchyma_weight(np.array([hu, hu]), np.array([True, False]))
    assert weight[0] == pytest.approx(expected) and weight[1] == 0.0


def test_same_seed_same_case_bit_for_bit():
    a = make_phantom(seed=11, shape=(24, 32, 32))
    b = make_phantom(seed=11, shape=(24, 32, 32))
    assert np.array_equal(a.phases.array, b.phases.array) and np.array_equal(a.dvf, b.dvf)
    assert a.meta["phase_bins"] == b.meta["phase_bins"]
