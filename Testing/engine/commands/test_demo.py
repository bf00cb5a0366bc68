"""`medlvm demo` end to end on a small phantom with a tiny checkpoint (the real demo size is benchmarked)."""

from __future__ import annotations

import html
import json

import pytest

from MedLVMLib.cli import main
from MedLVMLib.engine import lvm
from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.imaging.phases_io import read_phases
from MedLVMLib.synthetic import phantom


@pytest.fixture
def small_demo(monkeypatch, tmp_path):
    monkeypatch.setattr(phantom, "demo_case", lambda: phantom.make_phantom(seed=0, shape=(16, 20, 24)))
    model = lvm.random_model("tiny")
    return save_checkpoint(tmp_path / "model", tokenizer=model.tokenizer, transformer=model.transformer,
                                       model_id="tiny-test")


def test_demo_writes_everything_and_reruns(small_demo, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--model", str(small_demo), "--device", "cpu"]) == 0
    expected = {"input.seq.nrrd", "predicted.seq.nrrd", "clinical", "demo.png", "report.html", "metrics.csv",
                "demo.json", "motion.png", "difference.png"}
    assert expected <= {p.name for p in out.iterdir()}
    predicted = read_phases(out / "predicted.seq.nrrd")
    assert predicted.array.shape == (5, 16, 20, 24) and predicted.labels[0] == "50%"
    summary = json.loads((out / "demo.json").read_text(encoding="utf-8"))
    assert set(summary["mae_hu"]) == {"MedLVM", "copy-last", "mirror"}
    assert {"amplitude.csv", "mip.nrrd", "itv_tumour.nrrd"} <= {p.name for p in (out / "clinical").iterdir()}
    printed = capsys.readouterr().out
    assert str(out / "report.html") in printed and "MAE" in printed
    better = summary["mae_hu"]["MedLVM"] < summary["mae_hu"]["copy-last"]
    assert summary["verdict"][0].startswith(f"MedLVM's predicted phases are {'better' if better else 'NOT better'}")
    assert summary["verdict"][0] in printed and html.escape(summary["verdict"][0]) in (out / "report.html").read_text()
    assert summary["motion"] == "observed" and summary["projection"].startswith("motion kept to the observed")
    assert f"MedLVM's {summary['projection']}." in summary["verdict"] and summary["projection"] in printed
    warnings = summary["motion_check"]["warnings"]
    assert summary["motion_check"]["ok"] == (not warnings)
    assert all(f"Warning: {w}" in printed for w in warnings)
    # a second run replaces its own earlier output without --overwrite
    assert main(["demo", "--out", str(out), "--model", str(small_demo), "--device", "cpu"]) == 0


def test_demo_refuses_a_foreign_folder(small_demo, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    assert main(["demo", "--out", str(out), "--model", str(small_demo)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "notes.txt").read_text(encoding="utf-8") == "keep"


def test_help_describes_every_flag(capsys):
    assert main(["demo", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, words in [("--device DEVICE", "auto (a GPU if there is one) | cpu | cuda"),
                        ("--observed OBSERVED", "phases of the 10-phase demo 4D CT given to the model"),
                        ("--seed SEED", "random seed of the prediction")]:
        assert f"{flag} {words}" in text
