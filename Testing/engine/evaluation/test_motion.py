"""Motion evaluation on two tiny cases: rows, CSV, figures and HTML report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedLVMLib.engine import lvm
from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.engine.config import TokenizerConfig, TransformerConfig
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import motion as motion_eval
from MedLVMLib.evaluation import report
from MedLVMLib.imaging import cases
from MedLVMLib.imaging.volume import Geometry, Phases


def tiny_case(seed: int = 0, n_phases: int = 6, shape=(12, 14, 16)) -> cases.Case:
    """Body (1) with lungs (2) and a tumour (6) moving superior-inferior."""
    rng = np.random.default_rng(seed)
    array = np.full((n_phases,) + shape, -1000.0, np.float32)
    labels = np.zeros(array.shape, np.uint8)
    for p in range(n_phases):
        dz = int(round(2 * np.sin(np.pi * p / n_phases)))
        labels[p, 1:-1, 2:-2, 2:-2] = 1
        labels[p, 2:-2, 3:-3, 3:8] = 2
        labels[p, 4 + dz : 7 + dz, 5:9, 4:7] = 6
    array[labels == 1] = 40.0
    array[labels == 2] = -800.0
    array[labels == 6] = 30.0
    array += rng.normal(0, 5, array.shape).astype(np.float32)
    return cases.Case(Phases(array, Geometry(spacing=(2.0, 2.0, 2.5))), labels,
                      {1: "body", 2: "lungs", 6: "tumour"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    for i in range(2):
        cases.save_case(tiny_case(i), root / f"case{i}")
    return root


def test_parse_method_variants():
    config = motion_eval.MotionEvalConfig(axis="sagittal")
    assert motion_eval.parse_method("medlvm", config)[1]["axis"] == "sagittal"
    name, options = motion_eval.parse_method("medlvm:multi:warp", config)
    assert name == "medlvm" and (options["axis"], options["render"]) == ("multi", "warp")
    assert motion_eval.parse_method("pca", config) == ("pca", {})
    for bad in ("medlvm:diagonal", "oracle", "medlvm:::hot", "medlvm:::t0", "medlvm:::t1p1.5", "medlvm::::x"):
        with pytest.raises(MedLVMError):
            motion_eval.parse_method(bad, config)


def test_parse_method_sampling():
    config = motion_eval.MotionEvalConfig(temperature=0.8, top_p=0.95)
    default = motion_eval.parse_method("medlvm", config)[1]
    assert (default["temperature"], default["top_p"], default["greedy"]) == (0.8, 0.95, None)
    assert motion_eval.parse_method("medlvm:::greedy", config)[1]["greedy"] is True
    options = motion_eval.parse_method("medlvm:axial:direct:t0.5p0.9", config)[1]
    assert (options["axis"], options["render"], options["temperature"], options["top_p"]) == (
        "axial", "direct", 0.5, 0.9)
    assert motion_eval.parse_method("medlvm:::t0.7", config)[1]["top_p"] == 1.0
    assert motion_eval.parse_method("medlvm:::t0.7", config)[1]["greedy"] is False


def test_combine_field_reaches_the_prediction_and_is_checked_first():
    config = motion_eval.MotionEvalConfig(samples=3, combine="field")
    options = motion_eval.parse_method("medlvm:coronal:warp:t0.7", config)[1]
    assert (options["samples"], options["combine"], options["temperature"]) == (3, "field", 0.7)
    for bad, cfg in (("medlvm:coronal:direct", config), ("medlvm", motion_eval.MotionEvalConfig(combine="field"))):
        with pytest.raises(MedLVMError, match="--combine field"):
            motion_eval.parse_method(bad, cfg)
    assert motion_eval.parse_method("copy-last", config) == ("copy-last", {})


def test_motion_choice_in_the_method_name_or_the_config():
    config = motion_eval.MotionEvalConfig()
    assert motion_eval.parse_method("medlvm", config)[1]["motion"] == "observed"  # the default with warp
    assert motion_eval.parse_method("medlvm:coronal:direct", config)[1]["motion"] == "free"
    options = motion_eval.parse_method("medlvm:coronal:warp:free", config)[1]
    assert options["motion"] == "free" and options["greedy"] is None
    options = motion_eval.parse_method("medlvm:coronal:warp:t0.7:observed", config)[1]
    assert (options["motion"], options["temperature"]) == ("observed", 0.7)
    free = motion_eval.MotionEvalConfig(motion="free")
    assert motion_eval.parse_method("medlvm", free)[1]["motion"] == "free"
    assert motion_eval.parse_method("medlvm:::observed", free)[1]["motion"] == "observed"
    with pytest.raises(MedLVMError, match="needs --render warp"):
        motion_eval.parse_method("medlvm:coronal:direct:observed", config)
    with pytest.raises(MedLVMError, match="more than"):
        motion_eval.parse_method("medlvm:coronal:warp:observed:free", config)


def test_codes_choice_in_the_method_name_or_the_config():
    config = motion_eval.MotionEvalConfig()
    assert motion_eval.parse_method("medlvm", config)[1]["codes"] == "nearby"  # the default
    options = motion_eval.parse_method("medlvm:::free:any", config)[1]
    assert (options["codes"], options["motion"]) == ("any", "free")
    same = motion_eval.MotionEvalConfig(codes="same")
    assert motion_eval.parse_method("medlvm", same)[1]["codes"] == "same"
    assert motion_eval.parse_method("medlvm:::nearby", same)[1]["codes"] == "nearby"
    with pytest.raises(MedLVMError, match="more than"):
        motion_eval.parse_method("medlvm:::any:same", config)


def test_parse_method_with_another_model():
    loaded = lvm.random_model("tiny")
    config = motion_eval.MotionEvalConfig(model="default-id", models=(("other", loaded),))
    assert motion_eval.model_spec("medlvm@other:axial:direct") == "other" and motion_eval.model_spec("medlvm") is None
    name, options = motion_eval.parse_method("medlvm@other:axial:direct", config)
    assert name == "medlvm" and options["model"] is loaded
    assert (options["axis"], options["render"]) == ("axial", "direct")
    assert motion_eval.parse_method("medlvm@/not/loaded", config)[1]["model"] == "/not/loaded"
    assert motion_eval.parse_method("medlvm", config)[1]["model"] == "default-id"
    for bad in ("pca@other", "medlvm@", "medlvm@:coronal"):
        with pytest.raises(MedLVMError, match="only medlvm takes a model"):
            motion_eval.parse_method(bad, config)


def test_copy_last_scores_are_exact_when_nothing_moves():
    case = tiny_case()
    case.phases.array[:] = case.phases.array[3]
    case.labels[:] = case.labels[3]
    rows = motion_eval.score_prediction(case, "c", "copy-last", case.phases.select([4, 5]), 4)
    dsc = [r["value"] for r in rows if r["metric"] == "dsc"]
    assert len(dsc) == 2 * 2 and min(dsc) > 0.99  # lungs + tumour on 2 phases
    mae = [r["value"] for r in rows if r["metric"] == "mae_hu"]
    assert max(mae) == 0.0


def test_evaluate_motion_writes_report(dataset, tmp_path):
    config = motion_eval.MotionEvalConfig(methods=("medlvm", "medlvm:coronal:warp", "copy-last", "mirror"),
                                       n_observed=4, model=lvm.random_model("tiny"), heatmap_cases=1)
    result = motion_eval.evaluate_motion(dataset, tmp_path / "rep", config)
    rows = report.read_csv(result.csv)
    methods = {r["method"] for r in rows}
    assert methods == {"medlvm", "medlvm:coronal:warp", "copy-last", "mirror", "reference"}
    assert {r["case"] for r in rows} == {"case0", "case1"}
    assert {r["phase"] for r in rows} == {"66.6667%", "83.3333%"}
    assert {r["organ"] for r in rows} == {"lungs", "tumour", "body"}
    keys = {(r["case"], r["phase"], r["method"], r["organ"], r["metric"]) for r in rows}
    assert ("case1", "83.3333%", "medlvm", "tumour", "dsc") in keys
    assert ("case0", "66.6667%", "copy-last", "body", "ssim") in keys
    assert len(keys) == len(rows)  # one value per key
    names = {p.name for p in result.figures}
    assert {"dsc_per_phase.png", "mae_per_phase.png", "difference_case0.png"} <= names
    html = result.html.read_text(encoding="utf-8")
    assert "Figure 3" in html and "reference" in html and html.count("data:image/png") == 3
    paired = (tmp_path / "rep" / "motion_paired.csv").read_text(encoding="utf-8").splitlines()
    assert paired[0].startswith("metric,organ,method,comparison,against") and len(paired) > 1
    verdict = html.split("<h2>Setup</h2>")[0]  # the verdict comes before everything else
    assert "not better than copy-last" in verdict or "better than copy-last on every case" in verdict
    merged = motion_eval.merge_runs([tmp_path / "rep"], tmp_path / "merged", config, embed=False)
    assert len(report.read_csv(merged.csv)) == len(rows)
    assert 'src="dsc_per_phase.png"' in merged.html.read_text(encoding="utf-8")
    assert (tmp_path / "merged" / "difference_case0.png").exists()
    other = tmp_path / "other"  # a second run on the same case with its own figure: the first run's is kept
    other.mkdir()
    for name in ("motion_metrics.csv", "seconds.json"):
        (other / name).write_bytes((tmp_path / "rep" / name).read_bytes())
    (other / "difference_case0.png").write_bytes(b"not the first run's")
    twice = motion_eval.merge_runs([tmp_path / "rep", other], tmp_path / "twice", config, embed=False)
    first = (tmp_path / "rep" / "difference_case0.png").read_bytes()
    assert (tmp_path / "twice" / "difference_case0.png").read_bytes() == first
    assert [f.name for f in twice.figures].count("difference_case0.png") == 1


def test_two_models_in_one_evaluation(dataset, tmp_path):
    torch.manual_seed(1)
    other = save_checkpoint(tmp_path / "other", tokenizer=VQGAN(TokenizerConfig.from_name("tiny")),
                            transformer=Transformer(TransformerConfig.from_name("tiny")), model_id="other-tiny")
    method = f"medlvm@{other}:coronal:direct"
    config = motion_eval.MotionEvalConfig(methods=("medlvm:coronal:direct", method), n_observed=4,
                                          model=lvm.random_model("tiny"), heatmap_cases=0, reference=False)
    rows = report.read_csv(motion_eval.evaluate_motion(dataset, tmp_path / "rep", config).csv)
    mae = {m: [r["value"] for r in rows if r["method"] == m and r["metric"] == "mae_hu"]
           for m in config.methods}
    assert len(mae[method]) == len(mae["medlvm:coronal:direct"]) == 4  # 2 cases x 2 phases each
    assert mae[method] != mae["medlvm:coronal:direct"]  # another model, other predictions
    bad = motion_eval.MotionEvalConfig(methods=("copy-last", f"medlvm@{tmp_path / 'missing'}"), n_observed=4)
    with pytest.raises(MedLVMError):
        motion_eval.evaluate_motion(dataset, tmp_path / "bad", bad)
    assert not (tmp_path / "bad" / "motion_metrics.csv").exists()  # refused before any work


def test_progress_shows_each_case_predicting_then_scoring(dataset, tmp_path):
    from MedLVMLib.progress import Progress

    class Recorder(Progress):
        def __init__(self):
            self.stages, self.logs = [], []

        def stage(self, name, total=None):
            self.stages.append([name, total, 0])

        def advance(self, n=1):
            self.stages[-1][2] += n

        def log(self, message):
            self.logs.append(message)

    recorder = Recorder()
    config = motion_eval.MotionEvalConfig(methods=("copy-last", "mirror"), n_observed=4, heatmap_cases=0)
    motion_eval.evaluate_motion(dataset, tmp_path / "rep", config, progress=recorder)
    assert recorder.logs == ["case 1/2: case0", "case 2/2: case1"]
    # 2 methods; scoring: 2 methods + reference, 2 predicted phases each; every stage runs to its total
    assert recorder.stages == [["case0: predicting", 2, 2], ["case0: scoring", 6, 6],
                               ["case1: predicting", 2, 2], ["case1: scoring", 6, 6]]


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(MedLVMError, match="no case folders"):
        motion_eval.evaluate_motion(tmp_path, tmp_path / "rep", motion_eval.MotionEvalConfig(methods=("copy-last",)))
