"""Clinical outputs on a known translation: the trajectory amplitude is the shift we made."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.tasks import clinical

SPACING = (1.5, 2.0, 2.5)  # x, y, z mm
SHIFTS_Z = [0, 1, 2, 3, 4, 3, 2, 1]  # voxels per phase: 4 voxels = 10 mm peak to peak in z


def _moving_cube(shifts_z=SHIFTS_Z, shift_x=0):
    n = len(shifts_z)
    labels = np.zeros((n, 16, 12, 12), np.uint8)
    array = np.full((n, 16, 12, 12), -800.0, np.float32)
    for p, dz in enumerate(shifts_z):
        dx = shift_x if p == n - 1 else 0
        labels[p, 4 + dz : 8 + dz, 4:8, 3 + dx : 7 + dx] = 6
        array[p][labels[p] == 6] = 40.0
    phases = Phases(array, Geometry(spacing=SPACING, origin=(10.0, -20.0, 5.0)))
    return phases, labels


def test_trajectory_amplitude_equals_known_shift():
    phases, labels = _moving_cube(shift_x=2)
    traj = clinical.trajectory(labels, phases.geometry, 6, phases.labels, n_observed=5, structure="tumour")
    np.testing.assert_allclose(traj.amplitude_mm, [2 * 1.5, 0.0, 4 * 2.5], atol=1e-9)
    assert traj.observed.tolist() == [True] * 5 + [False] * 3
    # centroid of phase 0 in LPS: origin + spacing * mean index (x: 3..6 -> 4.5, y: 4..7 -> 5.5, z: 4..7 -> 5.5)
    np.testing.assert_allclose(traj.centroids_mm[0], [10 + 1.5 * 4.5, -20 + 2.0 * 5.5, 5 + 2.5 * 5.5])


def test_centroid_follows_direction_cosines():
    geometry = Geometry(spacing=(1, 1, 2), origin=(0, 0, 0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    mask = np.zeros((4, 4, 4), bool)
    mask[1, 2, 3] = True
    np.testing.assert_allclose(clinical.centroid_mm(mask, geometry), [-3, -2, 2])
    assert np.isnan(clinical.centroid_mm(np.zeros((2, 2, 2), bool), geometry)).all()


def test_itv_is_union_and_mip_is_max():
    phases, labels = _moving_cube()
    itv = clinical.itv(labels, 6)
    assert itv.dtype == np.uint8
    assert itv.sum() == 4 * 4 * (4 + 4)  # z extent 4 voxels + 4 voxels of motion
    np.testing.assert_array_equal(clinical.mip(phases.array), phases.array.max(axis=0))


@pytest.mark.parametrize("names, structure, expected", [
    ({1: "body", 6: "tumour"}, None, 6),
    ({1: "body", 2: "Tumor_c40"}, None, 2),
    ({3: "lungs", 1: "body"}, None, 1),
    ({1: "body", 3: "Lungs"}, "lungs", 3),
])
def test_find_label(names, structure, expected):
    assert clinical.find_label(names, structure)[0] == expected


def test_find_label_unknown_structure():
    with pytest.raises(MedLVMError, match="liver"):
        clinical.find_label({1: "body"}, "liver")


def test_write_clinical_files(tmp_path):
    phases, labels = _moving_cube()
    paths = clinical.write_clinical(tmp_path / "clinical", phases, labels, {1: "body", 6: "tumour"}, n_observed=5)
    assert all(p.exists() for p in paths.values())
    rows = list(csv.DictReader(open(paths["amplitude_csv"], encoding="utf-8")))
    si = [r for r in rows if r["axis"].startswith("SI")][0]
    assert float(si["amplitude_mm"]) == pytest.approx(10.0)
    traj_rows = list(csv.DictReader(open(paths["trajectory_csv"], encoding="utf-8")))
    assert [r["source"] for r in traj_rows].count("predicted") == 3
    itv = sitk.ReadImage(str(paths["itv"]))
    assert itv.GetSpacing() == pytest.approx(SPACING)
    assert sitk.GetArrayFromImage(itv).sum() == clinical.itv(labels, 6).sum()


def test_write_clinical_rejects_mismatched_labels(tmp_path):
    phases, labels = _moving_cube()
    with pytest.raises(MedLVMError, match="do not match"):
        clinical.write_clinical(tmp_path / "c", phases, labels[:3], {6: "tumour"}, n_observed=2)
    assert not (tmp_path / "c").exists()
