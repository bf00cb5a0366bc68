"""labels.py: --names in every form MedLVM writes or meets, and the choice of the structure to track."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from MedLVMLib.commands.labels import choose_structure, parse_names, sidecar_names, structure_names
from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.cases import save_case
from MedLVMLib.synthetic.phantom import make_phantom

LABELS = Path("labels.nii.gz")


def test_the_phantoms_own_labels_json_is_accepted(tmp_path):
    save_case(make_phantom(seed=1, n_phases=1, shape=(8, 8, 8)), tmp_path / "case")
    names = parse_names(str(tmp_path / "case" / "labels.json"), LABELS)
    assert names == {1: "body", 2: "lungs", 3: "heart", 4: "liver", 5: "bone", 6: "tumour"}


@pytest.mark.parametrize("content, expected", [
    ({"liver": 5, "spleen": 1}, {5: "liver", 1: "spleen"}),  # the Slicer module's {name: id}
    ({"1": "body", "6": "tumour"}, {1: "body", 6: "tumour"}),  # a case folder's {"id": name}
    ({"labels.nii.gz": {"Tumor_c40": 1}, "other.nii.gz": {"x": 2}}, {1: "Tumor_c40"}),  # keyed by label file
    ({"labels.nii.gz": {"3": "heart"}}, {3: "heart"}),
])
def test_json_forms(tmp_path, content, expected):
    (tmp_path / "names.json").write_text(json.dumps(content))
    assert parse_names(str(tmp_path / "names.json"), LABELS) == expected


def test_inline_names():
    assert parse_names("5=liver, 1=spleen", LABELS) == {5: "liver", 1: "spleen"}
    assert parse_names(None, LABELS) == {}


@pytest.mark.parametrize("content, match", [
    ('{"liver": "five"}', "expected {name: id} or {\"id\": name}"),
    ('[1, 2]', "expected {name: id}"),
    ('{"a": 1, "2": "b"}', "expected {name: id}"),
    ('{"liver": true}', "expected {name: id}"),
    ("{not json", "is not readable JSON"),
])
def test_bad_json_names(tmp_path, content, match):
    (tmp_path / "names.json").write_text(content)
    with pytest.raises(MedLVMError, match=match):
        parse_names(str(tmp_path / "names.json"), LABELS)


def test_missing_names_file_and_bad_inline_names(tmp_path):
    with pytest.raises(MedLVMError, match="does not exist"):
        parse_names(str(tmp_path / "nope.json"), LABELS)
    with pytest.raises(MedLVMError, match="cannot read 'liver'"):
        parse_names("liver", LABELS)


def test_sidecar_names_beside_the_label_file(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"1": "body", "6": "tumour"}))
    assert sidecar_names(tmp_path / "labels.seq.nrrd") == {1: "body", 6: "tumour"}
    (tmp_path / "labels.json").write_text("{broken")
    assert sidecar_names(tmp_path / "labels.seq.nrrd") == {}  # an unusable sidecar is ignored, not fatal


PHANTOM = {1: "body", 2: "lungs", 6: "tumour"}


@pytest.mark.parametrize("names, structure, expected", [
    (PHANTOM, None, (6, "tumour")),  # the tumour by default, never the body (label 1)
    ({1: "body", 3: "GTV_primary"}, None, (3, "GTV_primary")),
    ({4: "label_4"}, None, (4, "label_4")),  # the only structure
    (PHANTOM, "2", (2, "lungs")),
    (PHANTOM, "LUNGS", (2, "lungs")),
])
def test_choose_structure(names, structure, expected):
    assert choose_structure(names, structure, "--labels 'x'") == expected


def test_several_structures_and_no_tumour_ask_for_structure():
    with pytest.raises(MedLVMError, match=r"--labels 'x' holds 2 structures \(1 body, 2 lungs\) and none is named "
                                          "tumour; choose the one to track with --structure"):
        choose_structure({1: "body", 2: "lungs"}, None, "--labels 'x'")


@pytest.mark.parametrize("structure", ["spleen", "7"])
def test_a_structure_not_in_the_labels(structure):
    with pytest.raises(MedLVMError, match=rf"--structure '{structure}' is not in --labels 'x' \(labels present: "
                                          r"1 body, 2 lungs, 6 tumour\)"):
        choose_structure(PHANTOM, structure, "--labels 'x'")


def test_structure_names_keep_only_present_ids():
    assert structure_names([1, 6], {1: "body", 2: "lungs"}) == {1: "body", 6: "label_6"}
