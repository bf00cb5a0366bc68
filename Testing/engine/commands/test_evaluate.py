"""`medlvm evaluate ...`: no cases to evaluate is refused up front and writes nothing; a failed evaluation
leaves no partial report; `--cases N` takes the first N."""

from __future__ import annotations

import pytest

from MedLVMLib.cli import main
from MedLVMLib.evaluation import denoise as eval_denoise
from MedLVMLib.imaging.cases import save_case
from MedLVMLib.synthetic.phantom import make_phantom


@pytest.mark.parametrize("task", ["denoise", "segment", "superres"])
def test_zero_cases_are_refused_and_nothing_is_written(tmp_path, capsys, task):
    out = tmp_path / "report"
    assert main(["evaluate", task, "--no-real", "--phantoms", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no cases to evaluate: --phantoms 0 and --no-real" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_zero_cases_without_the_real_ct_files(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert main(["evaluate", "denoise", str(tmp_path / "data"), "--phantoms", "0", "--out",
                 str(tmp_path / "report")]) == 2
    assert f"no cases to evaluate: --phantoms 0 and no real CT files in '{tmp_path / 'data'}'" in \
        capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_a_failed_evaluation_leaves_no_partial_report(tmp_path, monkeypatch):
    def half_then_crash(out, config, progress):
        (out / "denoise_metrics.csv").write_text("case,phase\n")
        raise ZeroDivisionError("a bug after the CSV")

    monkeypatch.setattr(eval_denoise, "evaluate_denoise", half_then_crash)
    with pytest.raises(ZeroDivisionError):
        main(["evaluate", "denoise", "--no-real", "--phantoms", "1", "--methods", "tv", "--out", str(tmp_path / "r")])
    assert list(tmp_path.iterdir()) == []


def test_an_empty_report_folder_is_used_without_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(eval_denoise, "evaluate_denoise", lambda out, config, progress: [{"value": 1.0}])
    (tmp_path / "r").mkdir()
    argv = ["evaluate", "denoise", "--no-real", "--phantoms", "1", "--methods", "tv", "--out", str(tmp_path / "r")]
    assert main(argv) == 0
    assert "1 rows; report:" in capsys.readouterr().out
    assert main(argv) == 2  # now it holds a report
    assert "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


@pytest.fixture
def dataset(tmp_path):
    for i in range(2):
        save_case(make_phantom(seed=i, n_phases=4, shape=(8, 12, 12), noise_hu=0.0), tmp_path / "data" / f"case{i}")
    return tmp_path / "data"


def test_evaluate_motion_with_no_cases(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", "motion", str(tmp_path / "empty"), "--methods", "copy-last", "--out",
                 str(tmp_path / "report")]) == 2
    assert "holds no case folders" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_cases_n_takes_the_first_n(dataset):
    from MedLVMLib.evaluation.motion import list_dataset

    assert [p.name for p in list_dataset(dataset, 1)] == ["case0"]
    assert len(list_dataset(dataset)) == 2
    with pytest.raises(ValueError, match="--cases must be at least 1, got 0"):
        list_dataset(dataset, 0)  # 0 used to mean "every case"


def test_register_voxels_reaches_the_scoring_registration(tmp_path, monkeypatch):
    from MedLVMLib.evaluation import motion as motion_eval
    from MedLVMLib.imaging import registration

    save_case(make_phantom(seed=0, n_phases=4, shape=(16, 32, 32), noise_hu=0.0), tmp_path / "data" / "case0")
    seen = []
    register = registration.register

    def spy(*args, levels=(4, 2, 1), **kwargs):
        seen.append(tuple(levels))
        return register(*args, levels=levels, **kwargs)

    monkeypatch.setattr(registration, "register", spy)
    argv = ["evaluate", "motion", str(tmp_path / "data"), "--methods", "copy-last", "--no-reference", "--observed", "3"]
    assert main(argv + ["--out", str(tmp_path / "default")]) == 0
    assert set(seen) == {(4, 2, 1)}  # a 16 x 32 x 32 case is under the default cap: every level
    seen.clear()
    assert main(argv + ["--register-voxels", "100", "--out", str(tmp_path / "capped")]) == 0
    assert seen and min(min(levels) for levels in seen) > 1  # stops at a coarser level
    assert motion_eval.MotionEvalConfig().register_voxels == motion_eval.SCORE_REGISTER_VOXELS
    assert main(argv + ["--register-voxels", "0", "--out", str(tmp_path / "zero")]) == 2
