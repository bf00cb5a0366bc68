"""flags.py: every numeric flag of every command is checked when it is parsed, with a message naming the flag
and the allowed range; nothing runs and nothing is written."""

from __future__ import annotations

import argparse

import pytest

from MedLVMLib.cli import main
from MedLVMLib.commands import flags

MOTION = ["predict", "motion", "ct.seq.nrrd", "--out", "p.seq.nrrd"]
SEGMENT = ["predict", "segment", "ct.nii.gz", "--labels", "l.nii.gz", "--out", "s.nii.gz"]
DENOISE = ["predict", "denoise", "ct.nii.gz", "--out", "d.nii.gz"]
SUPERRES = ["predict", "superres", "ct.nii.gz", "--factor", "2", "--out", "s.nii.gz"]
EVAL_MOTION = ["evaluate", "motion", "data", "--out", "report"]

BAD_FLAGS = [
    (MOTION + ["--temperature", "-1"], "--temperature: must be a number > 0, got -1 (for the most likely token"),
    (MOTION + ["--temperature", "0"], "--temperature: must be a number > 0"),
    (MOTION + ["--temperature", "nan"], "--temperature: must be a number > 0"),
    (MOTION + ["--top-p", "2"], "--top-p: must be a number > 0 and <= 1, got 2"),
    (MOTION + ["--top-p", "0"], "--top-p: must be a number > 0 and <= 1, got 0"),
    (MOTION + ["--batch-size", "0"], "--batch-size: must be a whole number >= 1, got 0"),
    (MOTION + ["--samples", "0"], "--samples: must be a whole number >= 1, got 0"),
    (MOTION + ["--observed", "-2"], "--observed: must be a whole number >= 1, got -2"),
    (MOTION + ["--seed", "-1"], "--seed: must be a whole number from 0 to 4294967295, got -1"),
    (MOTION + ["--labels-phase", "-1"], "--labels-phase: must be a whole number >= 0, got -1"),
    (MOTION + ["--observed", "five"], "--observed: expected a whole number >= 1, got 'five'"),
    (SEGMENT + ["--examples", "0"], "--examples: must be a whole number >= 1, got 0"),
    (SEGMENT + ["--batch-size", "0"], "--batch-size: must be a whole number >= 1, got 0"),
    (SEGMENT + ["--from-phase", "-1"], "--from-phase: must be a whole number >= 0, got -1"),
    (DENOISE + ["--photons", "0"], "--photons: must be a number > 0, got 0"),
    (DENOISE + ["--n-examples", "0"], "--n-examples: must be a whole number >= 1, got 0"),
    (DENOISE + ["--top-p", "1.5"], "--top-p: must be a number > 0 and <= 1, got 1.5"),
    (SUPERRES + ["--temperature", "-0.5"], "--temperature: must be a number > 0, got -0.5"),
    (SUPERRES + ["--n-examples", "-3"], "--n-examples: must be a whole number >= 1, got -3"),
    (SUPERRES[:-3] + ["nan", "--out", "s.nii.gz"], "--factor: must be a finite number, got nan"),
    (["evaluate", "superres", "--out", "r", "--factor", "inf"], "--factor: must be a finite number, got inf"),
    (["phantom", "c", "--tumour-position", "0", "nan", "0"], "--tumour-position: must be a finite number, got nan"),
    (EVAL_MOTION + ["--cases", "0"], "--cases: must be a whole number >= 1, got 0"),
    (EVAL_MOTION + ["--heatmaps", "-1"], "--heatmaps: must be a whole number >= 0, got -1"),
    (EVAL_MOTION + ["--make-phantoms", "-2"], "--make-phantoms: must be a whole number >= 0, got -2"),
    (EVAL_MOTION + ["--top-p", "0"], "--top-p: must be a number > 0 and <= 1, got 0"),
    (EVAL_MOTION + ["--samples", "0"], "--samples: must be a whole number >= 1, got 0"),
    (["evaluate", "segment", "--out", "r", "--every", "1"], "--every: must be a whole number >= 2, got 1"),
    (["evaluate", "segment", "--out", "r", "--phases", "0"], "--phases: must be a whole number >= 1, got 0"),
    (["evaluate", "segment", "--out", "r", "--phantoms", "-1"], "--phantoms: must be a whole number >= 0, got -1"),
    (["evaluate", "denoise", "--out", "r", "--slices", "0"], "--slices: must be a whole number >= 1, got 0"),
    (["evaluate", "superres", "--out", "r", "--planes", "0"], "--planes: must be a whole number >= 1, got 0"),
    (["evaluate", "superres", "--out", "r", "--examples", "0"], "--examples: must be a whole number >= 1, got 0"),
    (["phantom", "c", "--diaphragm", "-50"], "--diaphragm: must be a number >= 0 and <= 50, got -50"),
    (["phantom", "c", "--tumour-si", "80"], "--tumour-si: must be a number >= 0 and <= 50, got 80"),
    (["phantom", "c", "--phases", "0"], "--phases: must be a whole number >= 1, got 0"),
    (["phantom", "c", "--shape", "4", "24", "24"], "--shape: must be a whole number from 8 to 512, got 4"),
    (["phantom", "c", "--noise", "-1"], "--noise: must be a number >= 0, got -1"),
    (["phantom", "c", "--tumour-diameter", "0"], "--tumour-diameter: must be a number > 0 and <= 80, got 0"),
    (["phantom", "c", "--seed", "-4"], "--seed: must be a whole number from 0 to 4294967295, got -4"),
    (["demo", "--out", "d", "--observed", "0"], "--observed: must be a whole number from 1 to 9, got 0"),
    (["demo", "--out", "d", "--observed", "10"], "--observed: must be a whole number from 1 to 9, got 10"),
    (["demo", "--out", "d", "--seed", "-1"], "--seed: must be a whole number from 0 to 4294967295, got -1"),
    (["convert", "src", "out", "--hu-min", "nan"], "--hu-min: must be a finite number, got nan"),
]


@pytest.mark.parametrize("argv, message", BAD_FLAGS, ids=[" ".join(a[-2:]) + f" ({a[0]} {a[1]})" for a, _ in BAD_FLAGS])
def test_bad_numeric_flags_stop_at_parsing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"argument {message}" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_convert_needs_a_window_low_below_high(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out"), "--hu-min", "500", "--hu-max", "-500"]) == 2
    assert "--hu-min 500 must be below --hu-max -500" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("parse, text, value", [
    (flags.POSITIVE_INT, "3", 3), (flags.NON_NEGATIVE_INT, "0", 0), (flags.TOP_P, "1", 1.0),
    (flags.TOP_P, "0.05", 0.05), (flags.TEMPERATURE, "1e-3", 1e-3), (flags.whole(8, 512), "512", 512),
    (flags.number(0.0, 50.0), "50", 50.0), (flags.FINITE, "-1000", -1000.0),
])
def test_good_values_pass(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("parse, text", [(flags.POSITIVE_INT, "2.5"), (flags.TOP_P, "inf"), (flags.POSITIVE, "-inf"),
                                         (flags.whole(2), "1")])
def test_bad_values_raise_argument_type_errors(parse, text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)
