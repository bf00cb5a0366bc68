"""MedLVMLib.imaging.dicom: 4D CT from DICOM written by the test itself (SimpleITK slices + pydicom edits)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from MedLVMLib.errors import InputError
from MedLVMLib.imaging.dicom import read_dicom_volume, write_dicom_phases
from MedLVMLib.imaging.phases_io import read_phases, write_phases
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.imaging.volume_io import read_volume

ROTATED = Geometry((0.9, 1.1, 2.5), (10.0, -20.0, 30.0), (0.8, -0.6, 0.0, 0.6, 0.8, 0.0, 0.0, 0.0, 1.0))


def phases(n=3, geometry=ROTATED, values=None) -> Phases:
    array = np.random.default_rng(n).integers(-1000, 1500, (n, 4, 5, 6)).astype(np.float32)
    return Phases(array, geometry, index_values=values)


@pytest.mark.parametrize("options, rule", [
    ({}, "percentage in SeriesDescription"),
    ({"phase_in_description": False}, "TemporalPositionIndex/Identifier"),
    ({"phase_in_description": False, "temporal_tags": False}, "acquisition order"),
    ({"single_series": True, "phase_in_description": False}, "TemporalPositionIndex/Identifier"),
])
def test_phase_order_from_headers(tmp_path, options, rule):
    """Series numbers are written in reverse phase order, so only the intended rule gives the right order."""
    ct = phases(4, values=[0.0, 25.0, 50.0, 75.0])
    write_dicom_phases(ct, tmp_path / "dicom", **options)
    back = read_phases(tmp_path / "dicom")
    assert np.array_equal(back.array, ct.array)
    assert back.source_info["order_rule"].startswith(rule)
    assert back.index_values == [0.0, 25.0, 50.0, 75.0]


def test_percent_in_description_gives_the_index_values(tmp_path):
    ct = phases(3, values=[10.0, 40.0, 70.0])
    write_dicom_phases(ct, tmp_path / "dicom")
    assert read_phases(tmp_path / "dicom").index_values == [10.0, 40.0, 70.0]


def test_rotated_geometry_survives_dicom(tmp_path):
    ct = phases(2)
    write_phases(ct, tmp_path / "dicom", suffix="dicom")
    back = read_phases(tmp_path / "dicom")
    assert back.geometry.is_close(ROTATED, tol=1e-5)
    assert np.array_equal(back.array, ct.array)


def test_one_series_per_subfolder(tmp_path):
    ct = phases(3)
    for p in range(3):
        write_dicom_phases(ct.select([p]), tmp_path / "study" / f"series_{p}", description=f"CT {p * 30}%")
    back = read_phases(tmp_path / "study")
    assert np.array_equal(back.array, ct.array)
    assert back.index_values == [0.0, 30.0, 60.0]


def test_rule_is_logged_to_progress(tmp_path):
    from MedLVMLib.progress import CallbackProgress

    lines = []
    write_dicom_phases(phases(2), tmp_path / "dicom")
    read_phases(tmp_path / "dicom", progress=CallbackProgress(lambda *a: None, log=lines.append))
    assert any("ordered by percentage in SeriesDescription" in line for line in lines)


def test_single_series_as_volume(tmp_path):
    ct = phases(1)
    write_dicom_phases(ct, tmp_path / "one")
    volume = read_volume(tmp_path / "one")
    assert np.array_equal(volume.array, ct.array[0])
    with pytest.raises(InputError, match="holds 1 DICOM series|phase"):
        read_phases(tmp_path / "one")


def test_several_series_are_not_one_volume(tmp_path):
    write_dicom_phases(phases(2), tmp_path / "two")
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        read_dicom_volume(tmp_path / "two")


def test_truncated_dicom_file(tmp_path):
    write_dicom_phases(phases(2), tmp_path / "dicom")
    victim = sorted((tmp_path / "dicom").glob("*.dcm"))[3]
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(InputError, match=victim.name):
        read_phases(tmp_path / "dicom")


def test_phases_with_different_slice_spacing(tmp_path):
    write_dicom_phases(phases(1, values=[0.0]), tmp_path / "dicom" / "a", description="CT 0%",
                       phase_in_description=False)
    other = Geometry((0.9, 1.1, 3.0), ROTATED.origin, ROTATED.direction)
    write_dicom_phases(phases(1, other, [50.0]), tmp_path / "dicom" / "b", description="CT 50%",
                       phase_in_description=False)
    with pytest.raises(InputError, match="CT 50%.*spacing"):
        read_phases(tmp_path / "dicom")


def test_repeated_positions_without_temporal_tags(tmp_path):
    write_dicom_phases(phases(2), tmp_path / "dicom", single_series=True, temporal_tags=False,
                       phase_in_description=False)
    for path in (tmp_path / "dicom").glob("*.dcm"):  # also drop AcquisitionNumber: nothing tells phases apart
        ds = pydicom.dcmread(path)
        del ds.AcquisitionNumber
        ds.save_as(path)
    with pytest.raises(InputError, match="repeats slice positions"):
        read_phases(tmp_path / "dicom")


THICK = Geometry((0.9, 1.1, 5.5), (10.0, -20.0, 30.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def thick_phases(n=2, slices=6) -> Phases:
    array = np.random.default_rng(1).integers(-1000, 1500, (n, slices, 5, 6)).astype(np.float32)
    return Phases(array, THICK)


@pytest.mark.parametrize("options", [{}, {"single_series": True, "phase_in_description": False}])
def test_same_slice_missing_in_every_phase_is_refused(tmp_path, options):
    """Slice 2 (z = 41 mm) is missing from every phase: the 11 mm gap must not be read as 5.5 mm spacing."""
    write_dicom_phases(thick_phases(), tmp_path / "dicom", **options)
    for path in (tmp_path / "dicom").glob("phase_*_0002.dcm"):
        path.unlink()
    with pytest.raises(InputError, match=r"gap of 11 mm between slices at 35\.5 and 46\.5 mm.*5\.5 mm") as info:
        read_phases(tmp_path / "dicom")
    assert "\n" not in str(info.value)


def test_missing_slice_in_a_single_volume_is_refused(tmp_path):
    write_dicom_phases(thick_phases(1), tmp_path / "one")
    next((tmp_path / "one").glob("phase_000_0004.dcm")).unlink()
    with pytest.raises(InputError, match=r"between slices at 46\.5 and 57\.5 mm"):
        read_dicom_volume(tmp_path / "one")


def test_rounding_in_slice_positions_is_not_a_gap(tmp_path):
    ct = thick_phases(1)
    write_dicom_phases(ct, tmp_path / "one")
    for k, path in enumerate(sorted((tmp_path / "one").glob("*.dcm"))):  # positions off by up to 4 micrometres
        ds = pydicom.dcmread(path)
        ds.ImagePositionPatient = [10.0, -20.0, 30.0 + 5.5 * k + (0.004 if k % 2 else -0.004)]
        ds.save_as(path)
    volume = read_dicom_volume(tmp_path / "one")
    assert volume.array.shape == ct.array.shape[1:] and abs(volume.geometry.spacing[2] - 5.5) < 0.01
