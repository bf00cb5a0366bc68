"""MedLVMLib.imaging.volume (+ seqnrrd, phasefolder): 4D CT in every file form, and clear errors for bad input."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from MedLVMLib.errors import InputError, MedLVMError
from MedLVMLib.imaging.phasefolder import index_from_numbers, phase_number
from MedLVMLib.imaging.phases_io import read_phases, write_phases
from MedLVMLib.imaging.volume import Geometry, Phases, Volume, to_image
from MedLVMLib.imaging.volume_io import read_volume, write_volume
from MedLVMLib.outputs import MANIFEST

ROTATED = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])  # 37 degrees about z
GEOMETRY = Geometry((0.9, 1.1, 2.5), (10.0, -20.0, 30.0), tuple(ROTATED.ravel()))


def ct_array(n_phases=4, shape=(5, 6, 7), seed=0) -> np.ndarray:
    """Integer HU with air and bone, like a CT."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1200, (n_phases,) + shape).astype(np.float32)


def write_phase_files(folder, names, array, geometries=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        geometry = geometries[i] if geometries else GEOMETRY
        sitk.WriteImage(to_image(array[i], geometry), str(folder / name))


# ---------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("compress", [True, False])
def test_seq_nrrd_round_trip_keeps_voxels_rotated_geometry_and_index(tmp_path, compress):
    phases = Phases(ct_array(), GEOMETRY, index_values=[0.0, 25.0, 50.0, 75.0])
    write_phases(phases, tmp_path / "x.seq.nrrd", compress=compress)
    assert (b"encoding: gzip" in (tmp_path / "x.seq.nrrd").read_bytes()[:600]) == compress
    back = read_phases(tmp_path / "x.seq.nrrd")
    assert np.array_equal(back.array, phases.array)
    assert back.geometry.is_close(GEOMETRY, tol=1e-9)
    assert back.index_values == [0.0, 25.0, 50.0, 75.0]
    assert back.labels == ["0%", "25%", "50%", "75%"]
    assert (back.index_name, back.index_unit) == ("phase", "%")
    assert back.source_info["format"] == "seq.nrrd"
    assert back.array.flags.writeable and back.array.flags.c_contiguous and back.array.dtype == np.float32


def test_seq_nrrd_keeps_float_values_and_custom_labels(tmp_path):
    array = ct_array() + 0.25
    phases = Phases(array, GEOMETRY, labels=["a", "b", "c", "d"], index_values=[50.0, 60.0, 70.0, 80.0])
    write_phases(phases, tmp_path / "x.seq.nrrd")
    back = read_phases(tmp_path / "x.seq.nrrd")
    assert np.array_equal(back.array, array)
    assert back.labels == ["a", "b", "c", "d"]
    assert back.index_values == [50.0, 60.0, 70.0, 80.0]


def test_seq_nrrd_with_list_axis_first_is_read(tmp_path):
    """Older Slicer files put the list axis first (kinds: list domain domain domain, axis 0 index values)."""
    array = ct_array(3, (2, 3, 4)).astype(np.int16)
    data = np.moveaxis(array, 0, -1)  # (Z, Y, X, P): the list axis is the fastest in the file
    header = ("NRRD0004\ntype: short\ndimension: 4\nspace: right-anterior-superior\nsizes: 3 4 3 2\n"
              "space directions: none (2,0,0) (0,3,0) (0,0,4)\nkinds: list domain domain domain\n"
              'labels: "frame" "" "" ""\nunits: "%" "" "" ""\nendian: little\nencoding: gzip\n'
              "space origin: (1,2,3)\naxis 0 index type:=numeric\naxis 0 index values:=0 33 66\n\n")
    path = tmp_path / "old.seq.nrrd"
    path.write_bytes(header.encode() + gzip.compress(data.astype("<i2").tobytes()))
    back = read_phases(path)
    assert np.array_equal(back.array, array)
    assert back.index_values == [0.0, 33.0, 66.0]
    assert back.index_name == "frame"
    assert back.geometry.spacing == (2.0, 3.0, 4.0)
    assert np.allclose(back.geometry.origin, (-1.0, -2.0, 3.0))  # RAS -> LPS
    assert np.allclose(back.geometry.direction, (-1, 0, 0, 0, -1, 0, 0, 0, 1))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
def test_folder_round_trip(tmp_path, suffix):
    phases = Phases(ct_array(), GEOMETRY)
    write_phases(phases, tmp_path / "out", suffix=suffix)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if p.name not in ("phases.json", MANIFEST))
    assert names == [f"phase_{v:03d}{suffix}" for v in (0, 25, 50, 75)]
    back = read_phases(tmp_path / "out")
    assert np.array_equal(back.array, phases.array)
    assert back.geometry.is_close(GEOMETRY)
    assert back.index_values == phases.index_values


@pytest.mark.parametrize("names, expected_values", [
    (["phase_50.nii.gz", "phase_0.nii.gz", "phase_20.nii.gz"], [0.0, 20.0, 50.0]),
    (["CT 60%.nrrd", "CT 0%.nrrd", "CT 30%.nrrd"], [0.0, 30.0, 60.0]),
    (["P40.mha", "P0.mha", "P80.mha"], [0.0, 40.0, 80.0]),
    (["ct_02.nii.gz", "ct_00.nii.gz", "ct_01.nii.gz"], [0.0, 100 / 3, 200 / 3]),  # ordinals -> percent
])
def test_folder_without_sidecar_is_ordered_by_phase_number_in_names(tmp_path, names, expected_values):
    array = ct_array(3)
    write_phase_files(tmp_path / "in", names, array)
    back = read_phases(tmp_path / "in")
    order = np.argsort([phase_number(n.split(".")[0])[0] for n in names])
    assert np.array_equal(back.array, array[order])
    assert np.allclose(back.index_values, expected_values)
    assert back.source_info["order_rule"] == "phase number in the file names"


@pytest.mark.parametrize("name, number, percent", [
    ("phase_50", 50.0, False), ("Gated, 40.0%B", 40.0, True), ("P50", 50.0, False), ("ct_05", 5.0, False),
    ("no digits", None, False),
])
def test_phase_number(name, number, percent):
    assert phase_number(name) == (number, percent)


def test_index_from_numbers_treats_0_to_n_minus_1_as_ordinals():
    assert index_from_numbers([0, 1, 2, 3], False) == [0.0, 25.0, 50.0, 75.0]
    assert index_from_numbers([0, 10, 20], False) == [0.0, 10.0, 20.0]
    assert index_from_numbers([0, 1], True) == [0.0, 1.0]


def test_4d_nifti_is_read_as_phases(tmp_path):
    array = ct_array(3)
    image = sitk.JoinSeries([to_image(a, Geometry((1.0, 2.0, 3.0))) for a in array])
    sitk.WriteImage(image, str(tmp_path / "ct4d.nii.gz"))
    back = read_phases(tmp_path / "ct4d.nii.gz")
    assert np.array_equal(back.array, array)
    assert back.geometry.spacing == (1.0, 2.0, 3.0)


def test_case_folder_is_read_through_its_ct(tmp_path):
    phases = Phases(ct_array(), GEOMETRY)
    (tmp_path / "case").mkdir()
    write_phases(phases, tmp_path / "case" / "ct.seq.nrrd")
    assert np.array_equal(read_phases(tmp_path / "case").array, phases.array)


def test_volume_round_trip_float_and_label_dtype(tmp_path):
    hu = ct_array(1)[0] + 0.5
    write_volume(Volume(hu, GEOMETRY), tmp_path / "ct.nii.gz")
    back = read_volume(tmp_path / "ct.nii.gz")
    assert back.array.dtype == np.float32 and np.array_equal(back.array, hu)
    assert back.geometry.is_close(GEOMETRY)
    labels = np.random.default_rng(1).integers(0, 7, hu.shape).astype(np.uint8)
    write_volume(labels, tmp_path / "labels.nrrd", GEOMETRY)
    lab = read_volume(tmp_path / "labels.nrrd", labels=True)
    assert lab.array.dtype == np.uint8 and np.array_equal(lab.array, labels)


def test_auto_dtype_stores_integer_hu_as_int16(tmp_path):
    write_phases(Phases(ct_array(), GEOMETRY), tmp_path / "i.seq.nrrd")
    write_phases(Phases(ct_array() + 0.5, GEOMETRY), tmp_path / "f.seq.nrrd")
    assert b"\ntype: int16\n" in (tmp_path / "i.seq.nrrd").read_bytes()[:400]
    assert b"\ntype: float\n" in (tmp_path / "f.seq.nrrd").read_bytes()[:400]


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("field, other, message", [
    ("size", None, "size"),
    ("spacing", Geometry((1.0, 1.1, 2.5), GEOMETRY.origin, GEOMETRY.direction), "spacing"),
    ("origin", Geometry(GEOMETRY.spacing, (10.0, -20.0, 35.0), GEOMETRY.direction), "origin"),
    ("direction", Geometry(GEOMETRY.spacing, GEOMETRY.origin), "direction"),
])
def test_phases_on_different_grids_are_rejected(tmp_path, field, other, message):
    array = ct_array(3)
    write_phase_files(tmp_path / "in", ["phase_0.nrrd", "phase_10.nrrd"], array[:2])
    odd = ct_array(1, (5, 6, 8))[0] if field == "size" else array[2]
    sitk.WriteImage(to_image(odd, other or GEOMETRY), str(tmp_path / "in" / "phase_20.nrrd"))
    with pytest.raises(InputError, match=f"phase_20.nrrd.*{message}"):
        read_phases(tmp_path / "in")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_single_3d_volume_where_a_sequence_is_needed(tmp_path, suffix):
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(to_image(ct_array(1)[0], GEOMETRY), str(path))
    with pytest.raises(InputError, match="single 3D volume"):
        read_phases(path)


def test_fewer_phases_than_asked(tmp_path):
    write_phases(Phases(ct_array(3), GEOMETRY), tmp_path / "x.seq.nrrd")
    assert read_phases(tmp_path / "x.seq.nrrd", n_phases=3).n_phases == 3
    with pytest.raises(InputError, match="has 3 phase.*10 are needed"):
        read_phases(tmp_path / "x.seq.nrrd", n_phases=10)


def test_one_phase_folder_is_not_a_4d_ct(tmp_path):
    write_phase_files(tmp_path / "in", ["phase_0.nrrd"], ct_array(1))
    with pytest.raises(InputError, match="1 phase"):
        read_phases(tmp_path / "in")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_voxels_are_rejected(tmp_path, bad):
    array = ct_array(2)
    array[1, 2, 3, 4] = bad
    write_phase_files(tmp_path / "in", ["phase_0.mha", "phase_50.mha"], array)
    with pytest.raises(InputError, match="phase_50.mha.*NaN or infinite"):
        read_phases(tmp_path / "in")


def test_nan_phases_are_not_written(tmp_path):
    array = ct_array(2)
    array[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_phases(Phases(array, GEOMETRY), tmp_path / "x.seq.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_truncated_seq_nrrd(tmp_path):
    path = tmp_path / "x.seq.nrrd"
    write_phases(Phases(ct_array(), GEOMETRY), path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InputError, match="x.seq.nrrd.*truncated"):
        read_phases(path)


def test_truncated_phase_file(tmp_path):
    write_phases(Phases(ct_array(), GEOMETRY), tmp_path / "in", suffix=".nii.gz")
    target = tmp_path / "in" / "phase_050.nii.gz"
    target.write_bytes(target.read_bytes()[:60])
    with pytest.raises(InputError, match="phase_050.nii.gz"):
        read_phases(tmp_path / "in")


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.seq.nrrd"
    path.write_text("this is not an image\n")
    with pytest.raises(InputError, match="notes.seq.nrrd.*not a NRRD"):
        read_phases(path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown file type"):
        read_phases(tmp_path / "notes.txt")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        read_phases(tmp_path / "empty")


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_phases(tmp_path / "nope.seq.nrrd")


def test_normalised_intensities_are_rejected_with_the_reason(tmp_path):
    phases = Phases(np.random.default_rng(0).random((2, 4, 5, 6)).astype(np.float32), GEOMETRY)
    write_phases(phases, tmp_path / "x.seq.nrrd")
    with pytest.raises(InputError, match=r"normalised image, not CT in Hounsfield units"):
        read_phases(tmp_path / "x.seq.nrrd")
    assert read_phases(tmp_path / "x.seq.nrrd", check_hu_values=False).n_phases == 2


def test_intensities_without_air_give_a_warning(tmp_path, caplog):
    array = ct_array() + 1024.0  # stored values without the rescale intercept: no voxel below 0
    write_phases(Phases(array, GEOMETRY), tmp_path / "x.seq.nrrd")
    with caplog.at_level(logging.WARNING):
        phases = read_phases(tmp_path / "x.seq.nrrd")
    assert phases.source_info["warnings"] and "Hounsfield" in phases.source_info["warnings"][0]
    assert "Hounsfield" in caplog.text


def test_duplicate_phase_numbers_in_names(tmp_path):
    write_phase_files(tmp_path / "in", ["a_phase_10.nrrd", "b_phase_10.nrrd"], ct_array(2))
    with pytest.raises(InputError, match="same phase number 10"):
        read_phases(tmp_path / "in")


def test_existing_output_needs_overwrite(tmp_path):
    phases = Phases(ct_array(), GEOMETRY)
    write_phases(phases, tmp_path / "x.seq.nrrd")
    with pytest.raises(MedLVMError, match="already exists"):
        write_phases(phases, tmp_path / "x.seq.nrrd")
    write_phases(phases.select([0, 1]), tmp_path / "x.seq.nrrd", overwrite=True)
    assert read_phases(tmp_path / "x.seq.nrrd").n_phases == 2


def test_4d_ct_is_not_written_as_a_3d_format(tmp_path):
    with pytest.raises(InputError, match=".seq.nrrd file or a folder"):
        write_phases(Phases(ct_array(), GEOMETRY), tmp_path / "x.nii.gz")


def test_sidecar_listing_a_missing_file(tmp_path):
    write_phases(Phases(ct_array(), GEOMETRY), tmp_path / "out")
    (tmp_path / "out" / "phase_025.nrrd").unlink()
    with pytest.raises(InputError, match="missing files.*phase_025.nrrd"):
        read_phases(tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "phases.json").read_text(encoding="utf-8"))
    assert meta["files"][1] == "phase_025.nrrd"


# ---------------------------------------------------------------------------------------------- 3D Slicer

@pytest.fixture
def slicer_scene():
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    return slicer, slicer.vtkMRMLScene()


def _ras_matrix(geometry: Geometry) -> np.ndarray:
    """IJK -> RAS matrix that Slicer should show for `geometry` (LPS)."""
    matrix = np.eye(4)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    matrix[:3, :3] = lps_to_ras @ np.asarray(geometry.direction).reshape(3, 3) @ np.diag(geometry.spacing)
    matrix[:3, 3] = lps_to_ras @ np.asarray(geometry.origin)
    return matrix


@pytest.mark.parametrize("compress", [True, False])
def test_seq_nrrd_written_here_opens_in_slicer_as_a_volume_sequence(tmp_path, slicer_scene, compress):
    slicer, scene = slicer_scene
    from slicer.util import arrayFromVolume
    from vtk import vtkMatrix4x4

    phases = Phases(ct_array(3), GEOMETRY, index_values=[0.0, 10.0, 20.0])
    write_phases(phases, tmp_path / "x.seq.nrrd", compress=compress)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "x.seq.nrrd"))
    assert storage.ReadData(sequence) == 1
    assert sequence.GetNumberOfDataNodes() == 3
    assert (sequence.GetIndexName(), sequence.GetIndexUnit(), sequence.GetIndexType()) == ("phase", "%", 0)
    assert [sequence.GetNthIndexValue(i) for i in range(3)] == ["0", "10", "20"]
    for i in range(3):
        node = sequence.GetNthDataNode(i)
        assert np.array_equal(arrayFromVolume(node), phases.array[i])
        matrix = vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        got = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        assert np.allclose(got, _ras_matrix(GEOMETRY), atol=1e-6)


def test_seq_nrrd_written_by_slicer_is_read_here(tmp_path, slicer_scene):
    slicer, scene = slicer_scene
    from slicer.util import updateVolumeFromArray
    from vtk import vtkMatrix4x4

    array = ct_array(3).astype(np.int16)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    sequence.SetIndexName("phase")
    sequence.SetIndexUnit("%")
    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, _ras_matrix(GEOMETRY)[r, c])
    for i, value in enumerate(["0", "30", "60"]):
        volume = slicer.vtkMRMLScalarVolumeNode()
        updateVolumeFromArray(volume, array[i])
        volume.SetIJKToRASMatrix(matrix)
        sequence.SetDataNodeAtValue(volume, value)
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "slicer.seq.nrrd"))
    assert storage.WriteData(sequence) == 1
    back = read_phases(tmp_path / "slicer.seq.nrrd")
    assert np.array_equal(back.array, array)
    assert back.index_values == [0.0, 30.0, 60.0]
    assert back.labels == ["0%", "30%", "60%"]
    assert back.geometry.is_close(GEOMETRY, tol=1e-6)


def test_text_index_values_are_parsed_as_phase_percentages(tmp_path):
    from MedLVMLib.imaging.seqnrrd import SequenceArray, write_sequence_array

    array = ct_array(2).astype(np.int16)
    write_sequence_array(SequenceArray(array, GEOMETRY, ["0%", "50%"], index_type="text"), tmp_path / "t.seq.nrrd")
    back = read_phases(tmp_path / "t.seq.nrrd")
    assert back.index_values == [0.0, 50.0] and back.labels == ["0%", "50%"]
    assert np.array_equal(back.array, array)


def test_seq_nrrd_keeps_item_attributes_and_node_class(tmp_path):
    """Slicer's per-item `axis 3 item I name:=value` fields and the node class survive a write and a read."""
    from MedLVMLib.imaging.seqnrrd import SequenceArray, read_sequence_array, write_sequence_array

    array = ct_array(2).astype(np.int16)
    seq = SequenceArray(array, GEOMETRY, [0.0, 50.0], item_attributes={1: {"MedLVM.Label": "50% exhale"}},
                        node_class="vtkMRMLLabelMapVolumeNode")
    write_sequence_array(seq, tmp_path / "a.seq.nrrd", compress_level=0)
    header = (tmp_path / "a.seq.nrrd").read_bytes().split(b"\n\n")[0].decode()
    assert "axis 3 item 1 MedLVM.Label:=50% exhale" in header.splitlines()
    back = read_sequence_array(tmp_path / "a.seq.nrrd")
    assert back.item_attributes == {1: {"MedLVM.Label": "50% exhale"}}
    assert back.node_class == "vtkMRMLLabelMapVolumeNode" and back.index_values == [0.0, 50.0]
    assert np.array_equal(back.array, array) and back.geometry.is_close(GEOMETRY)


@pytest.mark.parametrize("header_line, message", [
    ("sizes: 7 6 5", "not a NRRD|dimension|malformed"),
    ("space: scanner-xyz", "unsupported NRRD space"),
])
def test_seq_nrrd_bad_headers_are_named(tmp_path, header_line, message):
    from MedLVMLib.imaging.seqnrrd import SequenceArray, write_sequence_array

    path = tmp_path / "b.seq.nrrd"
    write_sequence_array(SequenceArray(ct_array(2).astype(np.int16), GEOMETRY, [0.0, 50.0]), path, compress_level=0)
    head, data = path.read_bytes().split(b"\n\n", 1)
    key = header_line.split(":")[0]
    lines = [line if not line.startswith(key + ":") else header_line for line in head.decode().splitlines()]
    path.write_bytes("\n".join(lines).encode() + b"\n\n" + data)
    with pytest.raises(InputError, match=message):
        read_phases(path)
