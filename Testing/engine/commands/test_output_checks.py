"""Every command that writes (`predict *`, `evaluate *`, `phantom`, `demo`) checks its output before any heavy
work: '.', '..', a system folder or a path under a file stop with one line and status 2, the heavy work never
starts, and `--overwrite` never deletes a file MedLVM did not write."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.cli import main
from MedLVMLib.evaluation import denoise as eval_denoise
from MedLVMLib.evaluation import motion as eval_motion
from MedLVMLib.evaluation import segment as eval_segment
from MedLVMLib.evaluation import superres as eval_superres
from MedLVMLib.imaging.phases_io import write_phases
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.imaging.volume_io import write_volume
from MedLVMLib.synthetic import phantom
from MedLVMLib.tasks import denoise, motion, segment, superres

GEO = Geometry(spacing=(2.0, 2.0, 3.0))


@pytest.fixture
def inputs(tmp_path, monkeypatch):
    """Small inputs in tmp_path/in, and every heavy step replaced by one that fails the test if it runs."""
    folder = tmp_path / "in"
    ct = np.full((6, 12, 14), -900.0, np.float32)
    ct[:, 3:9, 3:11] = 40.0
    labels = (ct > 0).astype(np.uint8)
    write_phases(Phases(np.stack([ct] * 4), GEO), folder / "ct.seq.nrrd")
    write_volume(ct, folder / "ct.nii.gz", GEO)
    write_volume(labels, folder / "labels.nii.gz", GEO)
    (folder / "notes.txt").write_text("a user's file")

    def heavy(*args, **kwargs):
        raise AssertionError("heavy work started before the output was checked")

    for module, name in [(motion, "predict_with_method"), (segment, "propagate_slices"), (segment, "propagate_phases"),
                         (denoise, "denoise_volume"), (superres, "superres_volume"), (phantom, "make_phantom"),
                         (phantom, "demo_case"), (motion, "resolve_model"), (eval_motion, "evaluate_motion"),
                         (eval_motion, "make_evaluation_set"), (eval_segment, "evaluate_segment"),
                         (eval_denoise, "evaluate_denoise"), (eval_superres, "evaluate_superres")]:
        monkeypatch.setattr(module, name, heavy)
    monkeypatch.chdir(folder)
    return folder


COMMANDS = {  # OUT is replaced by the output under test
    "predict motion": ["predict", "motion", "ct.seq.nrrd", "--method", "copy-last", "--out", "OUT"],
    "predict segment": ["predict", "segment", "ct.nii.gz", "--labels", "labels.nii.gz", "--method", "nearest",
                        "--out", "OUT.nii.gz"],
    "predict denoise": ["predict", "denoise", "ct.nii.gz", "--method", "tv", "--out", "OUT.nii.gz"],
    "predict superres": ["predict", "superres", "ct.nii.gz", "--factor", "2", "--method", "linear",
                         "--out", "OUT.nii.gz"],
    "evaluate motion": ["evaluate", "motion", ".", "--methods", "copy-last", "--make-phantoms", "1", "--out", "OUT"],
    "evaluate segment": ["evaluate", "segment", "--no-real", "--phantoms", "1", "--methods", "nearest", "--out", "OUT"],
    "evaluate denoise": ["evaluate", "denoise", "--no-real", "--phantoms", "1", "--methods", "tv", "--out", "OUT"],
    "evaluate superres": ["evaluate", "superres", "--no-real", "--phantoms", "1", "--methods", "linear",
                          "--out", "OUT"],
    "phantom": ["phantom", "OUT"],
    "demo": ["demo", "--out", "OUT"],
}
FOLDER_OUTPUTS = ["predict motion", "evaluate motion", "evaluate segment", "evaluate denoise", "evaluate superres",
                  "phantom", "demo"]


def _argv(command: str, out: str) -> list[str]:
    argv = COMMANDS[command]
    if out in (".", "..") and argv[-1] != "OUT":
        return argv[:-1] + [out]  # the bare name, not 'OUT.nii.gz' made from it
    return [a.replace("OUT", out) for a in argv]


BAD_OUTPUTS = [
    ("/proc/medlvm-test", "is inside /proc, a system folder"),
    ("/sys/medlvm-test", "is inside /sys, a system folder"),
    ("notes.txt/out", "notes.txt' is a file, not a folder"),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("out, message", BAD_OUTPUTS, ids=["proc", "sys", "under-a-file"])
def test_unwritable_output_is_refused_before_any_work(inputs, capsys, command, out, message):
    before = sorted(p.name for p in inputs.iterdir())
    assert main(_argv(command, out)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3  # usage + error line
    assert sorted(p.name for p in inputs.iterdir()) == before


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
@pytest.mark.parametrize("out", [".", ".."])
def test_dot_and_dot_dot_are_refused(inputs, capsys, command, out):
    assert main(_argv(command, out) + ["--overwrite"] * (command != "demo")) == 2
    assert "names an existing folder itself" in capsys.readouterr().err
    assert (inputs / "notes.txt").read_text() == "a user's file"


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_overwrite_keeps_files_medlvm_did_not_write(inputs, capsys, command):
    folder = inputs / "outdir"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(_argv(command, "outdir") + ["--overwrite"]) == 2
    assert "holds files MedLVM did not write (notes.txt)" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_what_medlvm_wrote(tmp_path, capsys):
    """The reported case: `predict motion ... --out p --method copy-last --overwrite` with p/notes.txt."""
    ct = np.stack([np.full((4, 6, 6), v, np.float32) for v in (-800.0, -700.0, -600.0)])
    write_phases(Phases(ct, GEO), tmp_path / "good.seq.nrrd")
    argv = ["predict", "motion", str(tmp_path / "good.seq.nrrd"), "--observed", "2", "--out", str(tmp_path / "p"),
            "--method", "copy-last"]
    assert main(argv) == 0
    assert main(argv + ["--overwrite"]) == 0  # its own earlier output is replaced
    (tmp_path / "p" / "notes.txt").write_text("x")
    assert main(argv + ["--overwrite"]) == 2
    assert "'" + str(tmp_path / "p") + "' holds files MedLVM did not write (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "p" / "notes.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.seq.nrrd", "p"]  # no partial output beside it


@pytest.mark.parametrize("command, argv", [
    ("predict motion", ["predict", "motion", "ct.seq.nrrd", "--method", "copy-last", "--out", "ct.seq.nrrd"]),
    ("predict segment", ["predict", "segment", "ct.nii.gz", "--labels", "labels.nii.gz", "--method", "nearest",
                         "--out", "labels.nii.gz"]),
    ("predict denoise", ["predict", "denoise", "ct.nii.gz", "--method", "tv", "--out", "ct.nii.gz"]),
    ("phantom", ["phantom", "ct.nii.gz", "--real", "ct.nii.gz"]),
])
def test_an_input_is_never_the_output(inputs, capsys, command, argv):
    before = (inputs / argv[-1 if command != "phantom" else 1]).read_bytes()
    assert main(argv + ["--overwrite"]) == 2
    assert "choose another" in capsys.readouterr().err
    assert (inputs / argv[-1 if command != "phantom" else 1]).read_bytes() == before
