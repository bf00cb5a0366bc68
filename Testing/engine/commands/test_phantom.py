"""`medlvm phantom`: case folder / .seq.nrrd output, preview PNG, --real, errors."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.cli import main
from MedLVMLib.commands import phantom as command
from MedLVMLib.imaging.cases import load_case
from MedLVMLib.imaging.phases_io import read_phases

SMALL = ["--shape", "16", "24", "24", "--phases", "4"]


def test_writes_a_case_folder_and_a_preview(tmp_path, capsys):
    out, png = tmp_path / "case", tmp_path / "preview.png"
    assert main(["phantom", str(out), "--seed", "2", "--preview", str(png)] + SMALL) == 0
    case = load_case(out)
    assert case.phases.array.shape == (4, 16, 24, 24) and case.meta["seed"] == 2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert str(out) in capsys.readouterr().out


def test_seq_nrrd_output(tmp_path):
    assert main(["phantom", str(tmp_path / "ct.seq.nrrd")] + SMALL) == 0
    phases = read_phases(tmp_path / "ct.seq.nrrd")
    assert phases.n_phases == 4 and phases.index_values == [0.0, 25.0, 50.0, 75.0]


def test_existing_output_is_an_error_without_overwrite(tmp_path, capsys):
    out = tmp_path / "case"
    assert main(["phantom", str(out)] + SMALL) == 0
    before = (out / "ct.seq.nrrd").read_bytes()
    assert main(["phantom", str(out), "--seed", "5"] + SMALL) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "ct.seq.nrrd").read_bytes() == before
    assert main(["phantom", str(out), "--seed", "5", "--overwrite"] + SMALL) == 0
    assert load_case(out).meta["seed"] == 5


def test_amplitude_options_reach_the_model(tmp_path):
    assert main(["phantom", str(tmp_path / "c"), "--diaphragm", "12", "--tumour-si", "7", "--noise", "0"]
                + SMALL) == 0
    case = load_case(tmp_path / "c")
    assert case.meta["breathing"]["diaphragm_mm"] == 12.0 and case.meta["breathing"]["tumour_si_mm"] == 7.0
    assert case.meta["noise_hu"] == 0.0


def test_unknown_real_ct_is_an_error(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "c"), "--real", "no_such_ct"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


@pytest.mark.shared_data
def test_real_ct_by_name(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("MEDLVM_SHARED_DATA", str(shared_data))
    assert command.resolve_real("4dlung") == shared_data / "4dlung_p113_phase40.nii.gz"
    out = tmp_path / "real"
    assert main(["phantom", str(out), "--real", "totalseg", "--phases", "3"]) == 0
    case = load_case(out)
    assert case.meta["source_ct"] == "totalseg_abdomen_ct.nii.gz"
    assert np.isin([4, 5], np.unique(case.labels)).all()
