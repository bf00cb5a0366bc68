"""evaluation/likelihood.py: teacher-forced scores agree with step-by-step scoring and with greedy generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedLVMLib.engine import lvm
from MedLVMLib.engine.sentences import MotionSentence
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import likelihood
from MedLVMLib.imaging.volume import Geometry, Phases


@pytest.fixture(scope="module")
def model():
    return lvm.random_model("tiny", seed=3)


def breathing_box(n_phases: int = 6, shape=(8, 10, 12)) -> Phases:
    array = np.full((n_phases,) + shape, -1000.0, np.float32)
    for p in range(n_phases):
        dz = int(round(2 * np.sin(np.pi * p / n_phases)))
        array[p, 2 + dz:5 + dz, 3:7, 3:9] = 40.0
    return Phases(array, Geometry((2.0, 2.0, 3.0)))


def test_teacher_forced_equals_scoring_token_by_token(model):
    rng = np.random.default_rng(0)
    tpi, codebook = model.tokens_per_image, model.tokenizer.config.codebook_size
    prompt = rng.integers(0, codebook, (2, 2 * tpi))
    continuation = rng.integers(0, codebook, (1, 2, tpi))
    log_prob, accuracy = likelihood.teacher_forced(model, prompt, continuation)
    tokens = torch.as_tensor(np.concatenate([prompt, continuation[0]], axis=1))
    expected, hits = [], []
    with torch.inference_mode():
        for i in range(tpi):
            logits = model.transformer(tokens[:, :2 * tpi + i])[:, -1, :codebook]
            target = tokens[:, 2 * tpi + i]
            expected.append(torch.log_softmax(logits, -1).gather(-1, target[:, None])[:, 0])
            hits.append((logits.argmax(-1) == target).float())
    assert log_prob.shape == accuracy.shape == (1,)
    assert log_prob[0] == pytest.approx(float(torch.stack(expected).mean()), abs=1e-5)
    assert accuracy[0] == pytest.approx(float(torch.stack(hits).mean()))


def test_greedy_continuation_is_the_argmax_under_teacher_forcing(model):
    rows = likelihood.diagnose_case(model, breathing_box(), n_observed=3, case="box", decodings=("greedy",))
    greedy = [r["value"] for r in rows if (r["kind"], r["name"], r["metric"]) == ("teacher", "greedy", "argmax_acc")]
    assert len(greedy) == 3 and min(greedy) >= 0.99  # cached generation and full forward pick the same codes
    frames = {r["frame"] for r in rows}
    assert frames == {3, 4, 5}
    for name in likelihood.CONTINUATIONS:
        values = [r["value"] for r in rows if r["name"] == name and r["metric"] == "log_prob"]
        assert len(values) == 3 and all(v < 0 for v in values)


def test_restricted_vocabularies_cover_copy_last_and_restrict_greedy(model):
    rows = likelihood.diagnose_case(model, breathing_box(), n_observed=3, case="box",
                                    decodings=("greedy", "greedy-nearby"))

    def values(kind, name, metric):
        return [r["value"] for r in rows if (r["kind"], r["name"], r["metric"]) == (kind, name, metric)]

    for vocabulary in likelihood.VOCABULARIES:  # the last observed phase's codes are always allowed
        assert values("vocab", vocabulary, "covers_copy-last") == [1.0, 1.0, 1.0]
    same, nearby = values("vocab", "same", "covers_true"), values("vocab", "nearby", "covers_true")
    assert len(same) == 3 and all(0.0 <= s <= n <= 1.0 for s, n in zip(same, nearby))
    assert len(values("free", "greedy-nearby", "agree_true")) == 3
    with pytest.raises(MedLVMError, match="unknown decoding"):
        likelihood.diagnose_case(model, breathing_box(), n_observed=3, decodings=("beam",))


def test_agreement_and_summary_margin():
    a = np.zeros((2, 3, 4), np.int64)
    b = a.copy()
    b[1, :, :2] = 7
    assert likelihood.agreement(a, b).tolist() == [1.0, 0.5]
    rows = [{"case": "c", "kind": "teacher", "name": n, "frame": 5, "metric": "log_prob", "value": v}
            for n, v in (("true", -0.9), ("copy-last", -0.6), ("mirror", -0.8))]
    assert likelihood.summarize(rows)["margin"] == pytest.approx(-0.3)
    assert "| teacher | true | log_prob | -0.900 |" in likelihood.frame_table(rows)


def test_context_too_small_for_the_future_is_refused(model):
    small = lvm.random_model("tiny")
    small.transformer.config = type(small.transformer.config)(**{**small.transformer.config.to_dict(),
                                                                 "block_size": 3 * model.tokens_per_image})
    with pytest.raises(MedLVMError, match="context holds 3 images"):
        likelihood.diagnose_case(small, breathing_box(), n_observed=2)


def test_prompt_keeps_the_most_recent_observed_phases(model):
    sentence = likelihood._prompt_for(model, n_observed=15, n_future=5)
    assert isinstance(sentence, MotionSentence) and sentence.n_observed == 11  # 16 images fit, 5 are future


def test_csv_rows_keep_kind_name_and_frame(tmp_path):
    from MedLVMLib.evaluation import report

    rows = [dict(case="phantom-1000", kind="teacher", name="copy-last", frame=6, metric="log_prob", value=-0.5),
            dict(case="phantom-1000", kind="free", name="greedy", frame=7, metric="agree_true", value=0.25)]
    back = report.read_csv(report.write_csv(likelihood.as_report_rows(rows), tmp_path / "likelihood.csv"))
    assert [(r["method"], r["phase"], r["metric"]) for r in back] == [
        ("teacher:copy-last", "6", "log_prob"), ("free:greedy", "7", "agree_true")]
    assert float(back[0]["value"]) == -0.5
