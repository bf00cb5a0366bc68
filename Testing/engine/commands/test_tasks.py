"""`medlvm predict segment|denoise|superres` and `medlvm evaluate ...` end to end on tiny files, with a tiny
random-weight checkpoint written by the test; bad input exits with status 2 and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedLVMLib import cli
from MedLVMLib.engine import lvm
from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.imaging.phases_io import read_phases, write_phases
from MedLVMLib.imaging.volume import Geometry, Phases, Volume
from MedLVMLib.imaging.volume_io import read_volume, write_volume

GEO = Geometry(spacing=(2.0, 2.0, 3.0), origin=(-10.0, 5.0, 20.0))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = lvm.random_model("tiny")
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(folder, tokenizer=model.tokenizer, transformer=model.transformer, model_id="tiny")
    return folder


def box_ct(shape=(6, 20, 24)):
    ct = np.full(shape, -900.0, np.float32)
    ct[:, 5:15, 4:20] = 40.0
    ct[:, 8:12, 8:14] = 400.0
    return ct


@pytest.fixture
def ct_files(tmp_path):
    ct = box_ct()
    labels = np.zeros(ct.shape, np.uint8)
    labels[:, 8:12, 8:14] = 4
    labels[:, 5:7, 4:20] = 9
    write_volume(Volume(ct, GEO), tmp_path / "ct.nii.gz")
    write_volume(Volume(labels, GEO), tmp_path / "labels.nii.gz")
    return tmp_path / "ct.nii.gz", tmp_path / "labels.nii.gz", labels


def test_predict_segment_slices(ct_files, model_dir, tmp_path, capsys):
    ct, labels, truth = ct_files
    out = tmp_path / "seg.nii.gz"
    rc = cli.main(["predict", "segment", str(ct), "--labels", str(labels), "--slices", "0,5", "--out", str(out),
                   "--model", str(model_dir), "--device", "cpu", "--names", "4=bone,9=strip"])
    assert rc == 0
    result = read_volume(out, labels=True)
    assert result.array.shape == truth.shape and result.geometry.is_close(GEO)
    assert set(np.unique(result.array)) <= {0, 4, 9}
    np.testing.assert_array_equal(result.array[0], truth[0])
    segments = json.loads((tmp_path / "seg.segments.json").read_text(encoding="utf-8"))["segments"]
    assert [(s["name"], s["label"]) for s in segments] == [("bone", 4), ("strip", 9)]
    assert "segments:" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["medlvm", "registration"])
def test_predict_segment_from_phase(ct_files, model_dir, tmp_path, method):
    _, labels, truth = ct_files
    phases = Phases(np.stack([np.roll(box_ct(), d, axis=2) for d in (0, 1, 2)]), GEO)
    write_phases(phases, tmp_path / "4d.seq.nrrd")
    out = tmp_path / "seg.seq.nrrd"
    rc = cli.main(["predict", "segment", str(tmp_path / "4d.seq.nrrd"), "--labels", str(labels), "--from-phase",
                   "0", "--out", str(out), "--model", str(model_dir), "--device", "cpu", "--method", method])
    assert rc == 0
    result = read_phases(out, check_hu_values=False)
    assert result.array.shape == (3,) + truth.shape
    np.testing.assert_array_equal(result.array[0], truth)


@pytest.mark.parametrize("method", ["medlvm", "tv"])
def test_predict_denoise(ct_files, model_dir, tmp_path, method):
    ct, _, _ = ct_files
    noisy = box_ct() + np.random.default_rng(0).normal(0, 40, box_ct().shape).astype(np.float32)
    write_volume(Volume(noisy, GEO), tmp_path / "noisy.nii.gz")
    out = tmp_path / "den.nii.gz"
    args = ["predict", "denoise", str(tmp_path / "noisy.nii.gz"), "--out", str(out), "--method", method,
            "--model", str(model_dir), "--device", "cpu"]
    if method == "medlvm":
        args += ["--examples", str(tmp_path / "noisy.nii.gz"), str(ct)]
    assert cli.main(args) == 0
    assert read_volume(out).array.shape == noisy.shape


def test_predict_denoise_with_the_shipped_library(ct_files, model_dir, tmp_path):
    ct, _, _ = ct_files
    out = tmp_path / "den.nii.gz"
    assert cli.main(["predict", "denoise", str(ct), "--out", str(out), "--model", str(model_dir), "--device",
                     "cpu"]) == 0
    assert out.exists()


@pytest.mark.parametrize("method, axis, shape, spacing", [
    ("medlvm", "z", (12, 20, 24), (2.0, 2.0, 1.5)), ("cubic", "z", (12, 20, 24), (2.0, 2.0, 1.5)),
    ("linear", "xy", (6, 40, 48), (1.0, 1.0, 3.0)),
])
def test_predict_superres(ct_files, model_dir, tmp_path, method, axis, shape, spacing):
    ct, _, _ = ct_files
    out = tmp_path / "sr.nii.gz"
    assert cli.main(["predict", "superres", str(ct), "--factor", "2", "--axis", axis, "--out", str(out),
                     "--method", method, "--model", str(model_dir), "--device", "cpu"]) == 0
    result = read_volume(out)
    assert result.array.shape == shape and result.geometry.spacing == pytest.approx(spacing)


def test_evaluate_superres_baselines(tmp_path):
    out = tmp_path / "report"
    assert cli.main(["evaluate", "superres", "--no-real", "--phantoms", "1", "--methods", "linear,cubic",
                     "--planes", "2", "--out", str(out)]) == 0
    assert (out / "report.html").exists() and (out / "superres_metrics.csv").exists()


# ------------------------------------------------------------------------------------------ bad input


def _fails(args, capsys, match):
    assert cli.main(args) == 2
    assert match in capsys.readouterr().err


def test_labels_on_another_grid(ct_files, tmp_path, capsys):
    ct, _, truth = ct_files
    write_volume(Volume(truth, Geometry(spacing=(1.0, 1.0, 3.0))), tmp_path / "other.nii.gz")
    out = tmp_path / "seg.nii.gz"
    _fails(["predict", "segment", str(ct), "--labels", str(tmp_path / "other.nii.gz"), "--out", str(out),
            "--method", "nearest"], capsys, "differs from the CT")
    assert not out.exists() and not (tmp_path / "seg.segments.json").exists()


def test_empty_mask(ct_files, tmp_path, capsys):
    ct, _, truth = ct_files
    write_volume(Volume(np.zeros_like(truth), GEO), tmp_path / "empty.nii.gz")
    out = tmp_path / "seg.nii.gz"
    _fails(["predict", "segment", str(ct), "--labels", str(tmp_path / "empty.nii.gz"), "--out", str(out),
            "--method", "nearest"], capsys, "empty")
    assert not out.exists()


def test_labels_beyond_the_palette(ct_files, tmp_path, capsys):
    ct, _, truth = ct_files
    many = np.zeros_like(truth)
    many[0].flat[:30] = np.arange(1, 31)
    write_volume(Volume(many, GEO), tmp_path / "many.nii.gz")
    out = tmp_path / "seg.nii.gz"
    _fails(["predict", "segment", str(ct), "--labels", str(tmp_path / "many.nii.gz"), "--out", str(out),
            "--method", "nearest"], capsys, "beyond the palette")
    assert not out.exists()


@pytest.mark.parametrize("factor", ["0.5", "1.5"])
def test_bad_factor(ct_files, tmp_path, capsys, factor):
    ct, _, _ = ct_files
    out = tmp_path / "sr.nii.gz"
    _fails(["predict", "superres", str(ct), "--factor", factor, "--out", str(out), "--method", "linear"], capsys,
           "--factor")
    assert not out.exists()


@pytest.mark.parametrize("command", [["denoise", "--method", "tv"], ["superres", "--factor", "2", "--method",
                                                                     "linear"]])
def test_a_2d_image(tmp_path, capsys, command):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.int16)), str(tmp_path / "flat.nii.gz"))
    out = tmp_path / "out.nii.gz"
    _fails(["predict", command[0], str(tmp_path / "flat.nii.gz"), "--out", str(out)] + command[1:], capsys, "2D")
    assert not out.exists()


def test_existing_output_needs_overwrite(ct_files, tmp_path, capsys):
    ct, labels, _ = ct_files
    out = tmp_path / "seg.nii.gz"
    out.write_text("keep me")
    _fails(["predict", "segment", str(ct), "--labels", str(labels), "--out", str(out), "--method", "nearest"],
           capsys, "already exists")
    assert out.read_text(encoding="utf-8") == "keep me"


# ------------------------------------------------------------------------------------------ labels (issue 16)


def test_segment_accepts_the_phantoms_labels_json(ct_files, tmp_path):
    """`medlvm phantom` writes labels.json as {"id": name}; --names takes it as it is."""
    ct, labels, _ = ct_files
    (tmp_path / "case").mkdir()
    (tmp_path / "case" / "labels.json").write_text(json.dumps({"4": "bone", "9": "strip", "6": "tumour"}))
    out = tmp_path / "seg.nii.gz"
    assert cli.main(["predict", "segment", str(ct), "--labels", str(labels), "--slices", "0,5", "--out", str(out),
                     "--method", "nearest", "--names", str(tmp_path / "case" / "labels.json")]) == 0
    segments = json.loads((tmp_path / "seg.segments.json").read_text(encoding="utf-8"))["segments"]
    assert [(s["name"], s["label"]) for s in segments] == [("bone", 4), ("strip", 9)]


@pytest.mark.parametrize("kind, message", [
    ("int16", "is not a label map: it has negative values (down to -"),
    ("offset", "distinct values (a label map has at most 256)"),
    ("float", "it has non-integer voxel values"),
])
def test_segment_refuses_a_ct_as_labels(ct_files, tmp_path, capsys, kind, message):
    ct, _, _ = ct_files
    hu = box_ct() + np.random.default_rng(1).normal(0, 30, box_ct().shape).astype(np.float32)
    array = {"int16": np.rint(hu).astype(np.int16), "offset": (np.rint(hu) + 1024).astype(np.uint16),
             "float": hu}[kind]
    write_volume(Volume(array, GEO), tmp_path / "ct_labels.nrrd")
    out = tmp_path / "seg.nii.gz"
    _fails(["predict", "segment", str(ct), "--labels", str(tmp_path / "ct_labels.nrrd"), "--out", str(out),
            "--method", "nearest"], capsys, message)
    assert not out.exists() and not (tmp_path / "seg.segments.json").exists()
