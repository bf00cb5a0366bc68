"""MedLVMLib.imaging.cases: a case folder round-trips exactly; a dataset is a folder of case folders."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.errors import InputError, MedLVMError
from MedLVMLib.imaging.cases import Case, list_cases, load_case, save_case
from MedLVMLib.synthetic.phantom import make_phantom


@pytest.fixture(scope="module")
def small_case():
    return make_phantom(seed=4, n_phases=4, shape=(16, 24, 24))


def test_round_trip_is_exact(tmp_path, small_case):
    save_case(small_case, tmp_path / "case_000")
    names = sorted(p.name for p in (tmp_path / "case_000").iterdir())
    assert names == [".medlvm-outputs.json", "case.json", "ct.seq.nrrd", "dvf.npz", "labels.json", "labels.seq.nrrd"]
    back = load_case(tmp_path / "case_000")
    assert np.array_equal(back.phases.array, small_case.phases.array)
    assert back.phases.geometry.is_close(small_case.phases.geometry, tol=1e-9)
    assert back.phases.labels == small_case.phases.labels
    assert np.array_equal(back.labels, small_case.labels) and back.labels.dtype == np.uint8
    assert np.array_equal(back.dvf, small_case.dvf)
    assert back.label_names == small_case.label_names
    assert back.meta["breathing"] == small_case.meta["breathing"]
    assert back.meta["tumour_centre_mm"] == pytest.approx(small_case.meta["tumour_centre_mm"])


def test_case_without_ground_truth(tmp_path, small_case):
    bare = Case(small_case.phases, meta={"source": "scanner"})
    save_case(bare, tmp_path / "bare")
    back = load_case(tmp_path / "bare")
    assert back.labels is None and back.dvf is None and back.meta == {"source": "scanner"}


def test_mask_by_name(small_case):
    assert small_case.mask("tumour").any()
    with pytest.raises(KeyError, match="spleen"):
        small_case.mask("spleen")


def test_shape_mismatch_is_rejected(small_case):
    with pytest.raises(ValueError, match="labels shape"):
        Case(small_case.phases, labels=small_case.labels[:2])
    with pytest.raises(ValueError, match="dvf shape"):
        Case(small_case.phases, dvf=small_case.dvf[..., :2])


def test_list_cases_finds_case_folders_in_name_order(tmp_path, small_case):
    for name in ("b", "a"):
        save_case(small_case, tmp_path / "data" / name)
    (tmp_path / "data" / "notes").mkdir()
    assert [p.name for p in list_cases(tmp_path / "data")] == ["a", "b"]


def test_not_a_case_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="no ct.seq.nrrd"):
        load_case(tmp_path / "x")
    with pytest.raises(InputError, match="does not exist"):
        list_cases(tmp_path / "missing")


def test_existing_case_needs_overwrite(tmp_path, small_case):
    save_case(small_case, tmp_path / "c")
    with pytest.raises(MedLVMError, match="already exists"):
        save_case(small_case, tmp_path / "c")
    save_case(small_case, tmp_path / "c", overwrite=True)
    assert load_case(tmp_path / "c").phases.n_phases == 4


def test_labels_open_in_slicer_as_a_label_map_sequence(tmp_path, small_case):
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel")
    from slicer.util import arrayFromVolume

    save_case(small_case, tmp_path / "c")
    scene = slicer.vtkMRMLScene()
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(tmp_path / "c" / "labels.seq.nrrd"))
    assert storage.ReadData(sequence) == 1
    node = sequence.GetNthDataNode(2)
    assert node.GetClassName() == "vtkMRMLLabelMapVolumeNode"
    assert np.array_equal(arrayFromVolume(node), small_case.labels[2])
