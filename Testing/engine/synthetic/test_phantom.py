"""MedLVMLib.synthetic.phantom / breathing / realct: anatomy, HU, breathing model, ground truth consistency."""

from __future__ import annotations

import time

import numpy as np
import pytest

from MedLVMLib.errors import InputError
from MedLVMLib.synthetic.breathing import Breathing, Grid, warp
from MedLVMLib.synthetic.phantom import BODY, BONE, HEART, LIVER, LUNGS, TUMOUR, build_anatomy, demo_case, make_phantom

SMALL = (24, 32, 32)


@pytest.fixture(scope="module")
def case():
    return make_phantom(seed=0)


@pytest.fixture(scope="module")
def quiet():
    """Noise-free small phantom with fixed amplitudes, breathing regularly (every cycle the same)."""
    return make_phantom(seed=3, n_phases=10, shape=(32, 48, 48), diaphragm_mm=20.0, tumour_si_mm=15.0,
                        tumour_ap_mm=2.5, hysteresis_mm=4.0, noise_hu=0.0, regular=True)


def test_shapes_types_and_labels(case):
    assert case.phases.array.shape == (10, 48, 64, 64) and case.phases.array.dtype == np.float32
    assert case.labels.shape == case.phases.array.shape and case.labels.dtype == np.uint8
    assert case.dvf.shape == case.phases.array.shape + (3,) and case.dvf.dtype == np.float32
    assert set(np.unique(case.labels)) == {0, 1, 2, 3, 4, 5, 6}
    assert case.label_names == {1: "body", 2: "lungs", 3: "heart", 4: "liver", 5: "bone", 6: "tumour"}
    assert case.phases.labels[0] == "0%" and case.phases.labels[5] == "50%"
    assert all(3.5 <= s <= 6.0 for s in case.phases.geometry.spacing)


@pytest.mark.parametrize("label, low, high", [
    (LUNGS, -880, -780), (HEART, 20, 75), (LIVER, 40, 75), (BONE, 300, 1100), (TUMOUR, -300, 75),
    (BODY, -120, 75),
])
def test_median_hu_per_structure_is_realistic(case, label, low, high):
    values = case.phases.array[5][case.labels[5] == label]
    assert low <= np.median(values) <= high, np.median(values)


def test_air_outside_and_noise_level(case):
    air = case.phases.array[:, :, :3, :3]  # a corner far outside the body
    assert abs(float(air.mean()) + 1000) < 5
    assert 8 < float(air.std()) < 25  # ~15 HU noise


def test_lungs_have_vessel_texture(case):
    lungs = case.phases.array[5][case.labels[5] == LUNGS]
    assert np.percentile(lungs, 99) > -500  # bright vessels inside the lungs


def test_generation_is_fast_and_deterministic():
    start = time.process_time()  # CPU time: wall time on a shared machine measures the neighbours
    a = make_phantom(seed=1)
    elapsed = time.process_time() - start
    assert elapsed < 3.0, f"10-phase phantom took {elapsed:.1f} s of CPU (target < 2 s)"
    b = make_phantom(seed=1)
    assert np.array_equal(a.phases.array, b.phases.array) and np.array_equal(a.labels, b.labels)


def test_seeds_change_anatomy_and_breathing():
    a, b = make_phantom(seed=1, shape=SMALL), make_phantom(seed=2, shape=SMALL)
    assert not np.array_equal(a.labels[5], b.labels[5])
    assert a.meta["breathing"]["diaphragm_mm"] != b.meta["breathing"]["diaphragm_mm"]


def test_end_exhale_has_no_motion_and_end_inhale_the_diaphragm_amplitude(quiet):
    assert np.abs(quiet.dvf[5]).max() < 1e-4
    assert quiet.dvf[0][..., 2].max() == pytest.approx(20.0, abs=0.5)
    lung_volume = (quiet.labels == LUNGS).sum(axis=(1, 2, 3))
    assert lung_volume[0] > 1.08 * lung_volume[5]  # inhale fills the lungs


def test_tumour_follows_the_chosen_trajectory(quiet):
    """The tumour moves rigidly: the dvf at its displaced centre equals the wanted SI/AP offset."""
    breathing = Breathing(**quiet.meta["breathing"])
    grid = Grid.of(quiet.phases.geometry, quiet.phases.shape)
    centre = np.asarray(quiet.meta["tumour_centre_mm"])
    for p in range(10):
        wanted = breathing.tumour_offset(p / 10)
        k, j, i = np.round(grid.point_to_index(centre - wanted)).astype(int)
        near = quiet.dvf[p][k, j, i]
        assert np.allclose(near, wanted, atol=1e-3)
    assert breathing.tumour_offset(0.0)[2] == pytest.approx(15.0)
    sizes = (quiet.labels == TUMOUR).sum(axis=(1, 2, 3))
    assert sizes.max() - sizes.min() <= 0.25 * sizes.max()


def test_hysteresis_makes_inhale_and_exhale_paths_differ(quiet):
    breathing = Breathing(**quiet.meta["breathing"])
    inhale_side, exhale_side = breathing.tumour_offset(0.3), breathing.tumour_offset(0.7)
    assert inhale_side[2] == pytest.approx(exhale_side[2])  # same SI position
    assert abs(inhale_side[1] - exhale_side[1]) == pytest.approx(4.0 * np.sin(0.6 * np.pi), abs=1e-6)


@pytest.mark.parametrize("t, expected", [(0.0, 1.0), (0.5, 0.0), (1.0, 1.0)])
def test_lujan_trace(t, expected):
    assert Breathing(n=2).trace(t) == pytest.approx(expected, abs=1e-12)


def test_labels_are_the_reference_warped_by_the_ground_truth_dvf(quiet):
    grid = Grid.of(quiet.phases.geometry, quiet.phases.shape)
    for p in (0, 3, 8):
        assert np.array_equal(warp(quiet.labels[5], quiet.dvf[p], grid, order=0), quiet.labels[p])


def test_breathing_ranges_for_many_seeds():
    for seed in range(20):
        b = Breathing.random(np.random.default_rng(seed))
        assert 10 <= b.diaphragm_mm <= 30 and 0 <= b.tumour_si_mm <= 25
        assert 2 <= b.tumour_ap_mm <= 3 and 1 <= b.hysteresis_mm <= 5


def test_tumour_position_and_diameter_are_honoured():
    anatomy, geometry = build_anatomy(seed=0, shape=(48, 64, 64), tumour_diameter_mm=30.0,
                                      tumour_position=(-60.0, 10.0, 20.0))
    voxel = float(np.prod(geometry.spacing))
    volume = (anatomy.labels == TUMOUR).sum() * voxel
    assert volume == pytest.approx(4 / 3 * np.pi * 15.0**3, rel=0.35)
    grid = Grid.of(geometry, anatomy.labels.shape)
    centroid = grid.world()[anatomy.labels == TUMOUR].mean(axis=0)
    assert np.allclose(centroid, (-60.0, 10.0, 20.0), atol=5.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_phases": 0}, "n_phases"), ({"shape": (4, 64, 64)}, "shape"), ({"tumour_diameter_mm": 0}, "diameter"),
])
def test_bad_phantom_arguments(kwargs, message):
    with pytest.raises(InputError, match=message):
        make_phantom(**kwargs)


def test_demo_case_is_deterministic_phantom_seed_0(case):
    demo = demo_case()
    assert np.array_equal(demo.phases.array, case.phases.array)
    assert demo.meta["seed"] == 0


# ---------------------------------------------------------------------------------------------- real CT

@pytest.mark.shared_data
def test_real_ct_with_tumour_labels_breathes(shared_data):
    from MedLVMLib.synthetic.phantom import breathe_real_ct

    case = breathe_real_ct(shared_data / "4dlung_p113_phase40.nii.gz", n_phases=6, max_shape=(40, 64, 64),
                           diaphragm_mm=20.0, tumour_si_mm=12.0, regular=True)
    assert case.phases.array.shape[0] == 6 and max(case.phases.shape) <= 64
    assert (case.labels == TUMOUR).any() and (case.labels == LUNGS).any()
    assert np.median(case.phases.array[0][case.labels[0] == TUMOUR]) > -200
    grid = Grid.of(case.phases.geometry, case.phases.shape)
    world = grid.world()
    shift = world[case.labels[3] == TUMOUR].mean(axis=0) - world[case.labels[0] == TUMOUR].mean(axis=0)
    assert shift[2] == pytest.approx(12.0, abs=4.0)  # 0 % inhale lies 12 mm below 50 % exhale
    assert np.abs(case.dvf[3]).max() < 1e-4


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["popi_phase00.nii.gz", "totalseg_abdomen_ct.nii.gz"])
def test_real_ct_without_tumour(shared_data, name):
    from MedLVMLib.synthetic.phantom import breathe_real_ct

    case = breathe_real_ct(shared_data / name, n_phases=4, max_shape=(32, 48, 48), diaphragm_mm=15.0, regular=True)
    assert case.phases.array.shape[0] == 4
    assert (case.labels == BODY).any() and (case.labels == BONE).any()
    assert case.dvf[0][..., 2].max() == pytest.approx(15.0, abs=1.0)
    if name.startswith("totalseg"):
        assert (case.labels == LIVER).any()  # mapped from the TotalSegmentator names
