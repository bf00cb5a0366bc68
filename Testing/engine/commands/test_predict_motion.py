"""`medlvm predict motion` / `medlvm evaluate motion` end to end on a tiny 4D CT with a tiny checkpoint."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from MedLVMLib.cli import main
from MedLVMLib.engine import lvm
from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.imaging import cases
from MedLVMLib.imaging.phases_io import read_phases, write_phases
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.imaging.volume_io import write_volume

GEOMETRY = Geometry(spacing=(2.0, 2.0, 2.5), origin=(-10.0, 4.0, 30.0))


def _case(n_phases: int = 8, shape=(10, 12, 14)) -> cases.Case:
    array = np.full((n_phases,) + shape, -1000.0, np.float32)
    labels = np.zeros(array.shape, np.uint8)
    for p in range(n_phases):
        dz = int(round(2 * np.sin(np.pi * p / n_phases)))
        labels[p, 1:-1, 2:-2, 2:-2] = 1
        labels[p, 3 + dz : 6 + dz, 4:8, 4:8] = 6
    array[labels == 1] = 0.0
    array[labels == 6] = 60.0
    return cases.Case(Phases(array, GEOMETRY), labels, {1: "body", 6: "tumour"})


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = lvm.random_model("tiny")
    save_checkpoint(root / "model", tokenizer=model.tokenizer, transformer=model.transformer,
                                model_id="tiny-test")
    case = _case()
    write_phases(case.phases, root / "ct.seq.nrrd")
    write_phases(case.phases, root / "ct_folder")
    write_volume(case.labels[4], root / "labels_phase4.nrrd", GEOMETRY)
    write_volume(case.phases.array[0], root / "one_phase.nrrd", GEOMETRY)
    cases.save_case(case, root / "dataset" / "case0")
    other = lvm.random_model("medlvm-tiny")
    save_checkpoint(root / "mixed", tokenizer=model.tokenizer, transformer=other.transformer)
    return root


def _predict(files, out, *extra):
    return main(["predict", "motion", str(files / "ct.seq.nrrd"), "--observed", "5", "--out", str(out),
                 "--model", str(files / "model"), "--device", "cpu", *extra])


@pytest.mark.parametrize("out_name, source", [("pred.seq.nrrd", "ct.seq.nrrd"), ("pred_folder", "ct_folder")])
def test_output_forms(files, tmp_path, out_name, source):
    out = tmp_path / out_name
    rc = main(["predict", "motion", str(files / source), "--observed", "5", "--out", str(out),
               "--model", str(files / "model"), "--device", "cpu"])
    assert rc == 0 and out.exists()
    predicted = read_phases(out)
    assert predicted.array.shape == (3, 10, 12, 14)
    assert predicted.geometry.is_close(GEOMETRY)
    assert predicted.index_values == pytest.approx([62.5, 75.0, 87.5])
    if out.is_dir():
        names = sorted(p.name for p in out.iterdir() if p.suffix == ".nrrd")
        observed = sorted(p.name for p in (files / "ct_folder").iterdir() if p.suffix == ".nrrd")[:5]
        assert len(names) == 3 and observed[-1] < names[0]  # predicted files sort after the observed ones


def test_dtype_flag_loads_bf16_weights(files, tmp_path, monkeypatch):
    loaded = []
    real = lvm.load_model

    def spy(*args, **kwargs):
        loaded.append(real(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(lvm, "load_model", spy)
    out = tmp_path / "pred.seq.nrrd"
    assert _predict(files, out, "--dtype", "bf16", "--future", "2") == 0
    assert [m.transformer.lm_head.weight.dtype for m in loaded] == [torch.bfloat16]
    predicted = read_phases(out)
    assert predicted.array.shape == (2, 10, 12, 14) and np.isfinite(predicted.array).all()


def test_median_field_and_native_grid_flags(files, tmp_path):
    out = tmp_path / "pred.seq.nrrd"
    assert _predict(files, out, "--samples", "2", "--future", "2", "--combine", "field", "--grid", "native") == 0
    predicted, mean = read_phases(out), read_phases(tmp_path / "pred_mean.seq.nrrd")
    assert predicted.array.shape == mean.array.shape == (2, 10, 12, 14)


def test_observed_motion_flag_says_where_the_phases_lie(files, tmp_path, capsys):
    out = tmp_path / "pred.seq.nrrd"
    assert _predict(files, out, "--future", "2", "--motion", "observed") == 0
    captured = capsys.readouterr()
    assert "motion kept to the observed breathing" in captured.out + captured.err
    assert read_phases(out).array.shape == (2, 10, 12, 14)
    assert _predict(files, tmp_path / "d.seq.nrrd", "--render", "direct", "--motion", "observed") == 2
    assert "needs --render warp" in capsys.readouterr().err and not (tmp_path / "d.seq.nrrd").exists()


def test_samples_write_mean_and_std(files, tmp_path):
    out = tmp_path / "pred.seq.nrrd"
    assert _predict(files, out, "--samples", "2", "--future", "2") == 0
    mean, std = read_phases(tmp_path / "pred_mean.seq.nrrd"), read_phases(
        tmp_path / "pred_std.seq.nrrd", check_hu_values=False)
    assert mean.array.shape == std.array.shape == (2, 10, 12, 14)
    assert std.array.min() >= 0


@pytest.mark.parametrize("method", ["copy-last", "mirror", "dvf", "pca"])
def test_each_baseline_through_the_cli(files, tmp_path, method):
    out = tmp_path / f"{method}.seq.nrrd"
    assert _predict(files, out, "--method", method) == 0
    predicted = read_phases(out)
    assert predicted.n_phases == 3
    if method == "copy-last":
        source = read_phases(files / "ct.seq.nrrd")
        np.testing.assert_allclose(predicted.array[1], source.array[4])


def test_labels_give_clinical_outputs(files, tmp_path):
    out = tmp_path / "pred.seq.nrrd"
    assert _predict(files, out, "--method", "copy-last", "--labels", str(files / "labels_phase4.nrrd"),
                    "--structure", "6") == 0
    folder = tmp_path / "pred_clinical"
    assert {"amplitude.csv", "trajectory_label_6.csv", "trajectory_label_6.png", "itv_label_6.nrrd",
            "mip.nrrd"} <= {p.name for p in folder.iterdir()}
    rows = list(csv.DictReader(open(folder / "trajectory_label_6.csv", encoding="utf-8")))
    assert len(rows) == 8 and rows[-1]["source"] == "predicted"


@pytest.mark.parametrize("args, message", [
    (["--observed", "9"], "phase"),
    (["--observed", "8", "--future", "0"], "nothing to predict"),
    (["--samples", "2", "--method", "mirror"], "samples"),
    (["--model", "MIXED"], "codes"),
    (["--labels", "ONE_PHASE_LABELS_WRONG_SHAPE"], "shape"),
    (["--combine", "field"], "--samples 2 or more"),
    (["--combine", "field", "--samples", "2", "--render", "direct"], "--render warp"),
])
def test_bad_input_writes_nothing(files, tmp_path, capsys, args, message):
    args = [a.replace("MIXED", str(files / "mixed")) for a in args]
    if "ONE_PHASE_LABELS_WRONG_SHAPE" in args:
        write_volume(np.ones((4, 4, 4), np.uint8), tmp_path / "small.nrrd")
        args = [a.replace("ONE_PHASE_LABELS_WRONG_SHAPE", str(tmp_path / "small.nrrd")) for a in args]
    out = tmp_path / "pred.seq.nrrd"
    rc = main(["predict", "motion", str(files / "ct.seq.nrrd"), "--observed", "5", "--out", str(out),
               "--model", str(files / "model"), "--device", "cpu"] + args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "small.nrrd"])


def test_3d_input_is_refused(files, tmp_path, capsys):
    rc = main(["predict", "motion", str(files / "one_phase.nrrd"), "--out", str(tmp_path / "p.seq.nrrd")])
    assert rc == 2 and "3D" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_overwrite(files, tmp_path, capsys):
    out = tmp_path / "pred.seq.nrrd"
    out.write_text("keep me")
    assert _predict(files, out, "--method", "copy-last") == 2
    assert "already exists" in capsys.readouterr().err and out.read_text(encoding="utf-8") == "keep me"
    assert _predict(files, out, "--method", "copy-last", "--overwrite") == 0
    assert read_phases(out).n_phases == 3


def test_evaluate_command(files, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["evaluate", "motion", str(files / "dataset"), "--out", str(out), "--methods", "medlvm,copy-last",
               "--model", str(files / "model"), "--device", "cpu", "--heatmaps", "1"])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "motion_metrics.csv", encoding="utf-8")))
    assert {r["method"] for r in rows} == {"medlvm", "copy-last", "reference"}
    assert {"report.html", "dsc_per_phase.png", "difference_case0.png"} <= {p.name for p in out.iterdir()}
    assert "report:" in capsys.readouterr().out
    assert main(["evaluate", "motion", str(files / "dataset"), "--out", str(out), "--methods", "copy-last"]) == 2


# ------------------------------------------------------------------------------------------ labels (issue 16)


def _clinical(files, tmp_path, labels, *extra):
    return main(["predict", "motion", str(files / "ct.seq.nrrd"), "--observed", "5", "--out",
                 str(tmp_path / "pred.seq.nrrd"), "--method", "copy-last", "--labels", str(labels), *extra])


@pytest.fixture
def no_prediction(monkeypatch):
    """Fails the test if the prediction starts: the checks must come first."""
    from MedLVMLib.tasks import motion

    def heavy(*args, **kwargs):
        raise AssertionError("the prediction ran before the labels were checked")

    monkeypatch.setattr(motion, "predict_with_method", heavy)


@pytest.mark.parametrize("extra, message", [
    (["--structure", "spleen"], "--structure 'spleen' is not in --labels"),
    (["--structure", "7"], "--structure '7' is not in --labels"),
    ([], "holds 2 structures (1 label_1, 6 label_6) and none is named tumour; choose the one to track with "
         "--structure"),
])
def test_structure_is_checked_before_the_prediction(files, tmp_path, capsys, no_prediction, extra, message):
    assert _clinical(files, tmp_path, files / "labels_phase4.nrrd", *extra) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("labels", ["ct_as_labels.nrrd", "ct.seq.nrrd"])
def test_a_ct_given_as_labels_is_refused(files, tmp_path, capsys, no_prediction, labels):
    if labels == "ct_as_labels.nrrd":  # an integer CT (int16 HU), as scanners store it
        write_volume(np.rint(read_phases(files / "ct.seq.nrrd").array[4]).astype(np.int16), tmp_path / labels, GEOMETRY)
    path = tmp_path / labels if labels == "ct_as_labels.nrrd" else files / labels
    assert _clinical(files, tmp_path / "out", path) == 2
    err = capsys.readouterr().err
    assert "is not a label map: it has negative values (down to -1000)" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_the_tumour_is_tracked_by_default_when_named(files, tmp_path):
    assert _clinical(files, tmp_path, files / "labels_phase4.nrrd", "--names", "1=body,6=tumour") == 0
    assert (tmp_path / "pred_clinical" / "trajectory_tumour.csv").exists()
    assert not (tmp_path / "pred_clinical" / "trajectory_body.csv").exists()


def test_a_case_folders_labels_and_names(files, tmp_path):
    """The label sequence `medlvm phantom` writes, its labels.json found beside it or given with --names."""
    case = files / "dataset" / "case0"
    assert _clinical(files, tmp_path, case / "labels.seq.nrrd") == 0
    assert {p.name for p in (tmp_path / "pred_clinical").iterdir()} >= {"trajectory_tumour.csv", "itv_tumour.nrrd"}
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_volume(read_phases(case / "labels.seq.nrrd", check_hu_values=False).array[4].astype(np.uint8),
                 other / "labels.nrrd", GEOMETRY)
    out = tmp_path / "second.seq.nrrd"
    assert main(["predict", "motion", str(files / "ct.seq.nrrd"), "--out", str(out), "--method", "copy-last",
                 "--labels", str(other / "labels.nrrd"), "--names", str(case / "labels.json")]) == 0
    assert (tmp_path / "second_clinical" / "trajectory_tumour.csv").exists()


def test_a_single_structure_is_tracked_without_structure(files, tmp_path):
    gtv = (read_phases(files / "ct.seq.nrrd").array[4] > 30).astype(np.uint8) * 3
    write_volume(gtv, tmp_path / "gtv.nrrd", GEOMETRY)
    assert _clinical(files, tmp_path, tmp_path / "gtv.nrrd") == 0
    assert (tmp_path / "pred_clinical" / "trajectory_label_3.csv").exists()


def test_label_ids_beyond_255_are_refused(files, tmp_path, capsys, no_prediction):
    labels = np.zeros((10, 12, 14), np.int32)
    labels[2:5, 4:8, 4:8] = 300
    write_volume(labels, tmp_path / "big_ids.nrrd", GEOMETRY)
    assert _clinical(files, tmp_path / "out", tmp_path / "big_ids.nrrd") == 2
    assert "has label ids up to 300; motion prediction takes ids 0..255" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, value", [("--names", "6=tumour"), ("--structure", "6"), ("--labels-phase", "2")])
def test_label_flags_without_labels(files, tmp_path, capsys, flag, value):
    assert _predict(files, tmp_path / "p.seq.nrrd", "--method", "copy-last", flag, value) == 2
    assert f"{flag} applies to --labels; give the label map with --labels" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _chest(n_phases: int = 10, shape=(20, 16, 16)) -> Phases:
    """Body with one lung cavity whose bottom moves down 3 voxels on inhale (phase 0) and back."""
    array = np.full((n_phases,) + shape, -1000.0, np.float32)
    for p in range(n_phases):
        bottom = 4 + int(round(3 * np.sin(np.pi * p / n_phases)))
        array[p, :, 2:14, 2:14] = 40.0
        array[p, bottom:17, 4:12, 4:12] = -800.0
    return Phases(array, GEOMETRY)


@pytest.mark.parametrize("method, warned", [("copy-last", True), ("mirror", False)])
def test_the_motion_check_warns_about_a_prediction_without_motion(tmp_path, capsys, method, warned):
    write_phases(_chest(), tmp_path / "chest.seq.nrrd")
    assert main(["predict", "motion", str(tmp_path / "chest.seq.nrrd"), "--out", str(tmp_path / "p.seq.nrrd"),
                 "--method", method]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert ("Warning: lung volume: the prediction moves 0.0 mL" in printed) == warned
    assert ("almost no motion" in printed) == warned
