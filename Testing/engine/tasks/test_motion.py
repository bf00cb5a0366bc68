"""Motion prediction with a tiny random model: shapes, geometry, options, sampling, and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from MedLVMLib.engine import lvm
from MedLVMLib.errors import MedLVMError, TaskOutputError
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.tasks import motion

GEOMETRY = Geometry(spacing=(2.0, 2.0, 3.0), origin=(-20.0, 10.0, 5.0))


def breathing_box(n_phases: int = 10, shape=(12, 14, 16)) -> Phases:
    """A dense box moving superior-inferior by up to 3 voxels over a cycle, in air."""
    array = np.full((n_phases,) + shape, -1000.0, np.float32)
    for p in range(n_phases):
        dz = int(round(3 * np.sin(np.pi * p / n_phases)))
        array[p, 3 + dz : 7 + dz, 4:10, 4:12] = 40.0
    return Phases(array, GEOMETRY)


@pytest.fixture(scope="module")
def model():
    return lvm.random_model("tiny")


@pytest.mark.parametrize("axis, render", [("coronal", "direct"), ("sagittal", "direct"), ("axial", "direct"),
                                          ("coronal", "warp"), ("multi", "direct")])
def test_predicted_phases_follow_the_input(model, axis, render):
    phases = breathing_box()
    result = motion.predict_motion(phases, 5, model=model, axis=axis, render=render)
    predicted = result.predicted
    assert predicted.array.shape == (5,) + phases.shape and predicted.array.dtype == np.float32
    assert predicted.geometry == phases.geometry
    assert predicted.labels == ["50%", "60%", "70%", "80%", "90%"]
    assert result.mean is None and result.std is None
    assert set(result.timings) >= {"tokenize", "generate", "decode"}
    n_slices = {"coronal": 14, "sagittal": 16, "axial": 12, "multi": 14 + 16 + 12}[axis]
    assert result.tokens_generated == n_slices * 5 * model.tokens_per_image
    assert np.isfinite(predicted.array).all()


def test_warp_render_keeps_native_intensities(model):
    result = motion.predict_motion(breathing_box(), 5, model=model, render="warp")
    # warped from the native last phase: only values of that phase (and their interpolations) appear
    assert result.predicted.array.min() >= -1000.0 and result.predicted.array.max() <= 40.0 + 1e-3


@pytest.mark.parametrize("n_phases, n_observed, n_future, expected", [(10, 5, None, 5), (7, 3, None, 4),
                                                                      (5, 5, None, 5), (10, 4, 2, 2)])
def test_default_number_of_future_phases(n_phases, n_observed, n_future, expected):
    assert motion.resolve_n_future(n_phases, n_observed, n_future) == expected


def test_samples_give_mean_and_std(model):
    result = motion.predict_motion(breathing_box(), 5, n_future=2, model=model, samples=3, seed=1, render="direct")
    assert result.n_samples == 3 and result.mean is not None and result.std is not None
    assert result.std.array.shape == result.predicted.array.shape
    assert (result.std.array >= 0).all() and result.std.array.max() > 0  # random weights: samples differ


def test_seed_and_greedy_are_reproducible(model):
    phases = breathing_box()
    a = motion.predict_motion(phases, 5, n_future=1, model=model, greedy=False, seed=3, render="direct").predicted.array
    b = motion.predict_motion(phases, 5, n_future=1, model=model, greedy=False, seed=3, render="direct").predicted.array
    np.testing.assert_array_equal(a, b)
    g1 = motion.predict_motion(phases, 5, n_future=1, model=model, greedy=True, seed=1, render="direct").predicted.array
    g2 = motion.predict_motion(phases, 5, n_future=1, model=model, greedy=True, seed=2, render="direct").predicted.array
    np.testing.assert_array_equal(g1, g2)


def test_one_sample_is_greedy_by_default_and_sampling_is_opt_in(model):
    phases = breathing_box()

    def predict(**kwargs):
        return motion.predict_motion(phases, 5, n_future=1, model=model, render="direct", **kwargs).predicted.array

    greedy = predict(greedy=True, seed=5)
    np.testing.assert_array_equal(predict(seed=1), greedy)  # the default ignores the seed: greedy
    sampled = [predict(greedy=False, seed=s) for s in (1, 2)]
    assert not np.array_equal(sampled[0], sampled[1])  # random weights: two seeds sample differently
    with pytest.raises(MedLVMError, match="several samples"):
        motion.predict_motion(phases, 5, n_future=1, model=model, samples=2, greedy=True)


@pytest.mark.parametrize("kwargs, message", [
    (dict(phases=breathing_box(3), n_observed=5), "3 phase"),
    (dict(phases=breathing_box(10), n_observed=10), "nothing to predict"),
    (dict(phases=np.zeros((8, 8, 8), np.float32), n_observed=5), "4D CT"),
    (dict(phases=breathing_box(), n_observed=5, axis="oblique"), "axis"),
    (dict(phases=breathing_box(), n_observed=5, render="paint"), "render"),
    (dict(phases=breathing_box(), n_observed=5, samples=0), "samples"),
    (dict(phases=breathing_box(), n_observed=0), "at least 1"),
])
def test_bad_requests_fail_before_loading_a_model(kwargs, message):
    with pytest.raises(MedLVMError, match=message):
        motion.predict_motion(model="/nonexistent/model", **kwargs)


def test_mismatched_tokenizer_and_transformer(model):
    other = lvm.random_model("medlvm-tiny")
    mixed = lvm.MedLVMModel(model.tokenizer, other.transformer, model.preprocess, "mixed", model.device, model.dtype)
    with pytest.raises(MedLVMError, match="not trained"):
        motion.predict_motion(breathing_box(), 5, model=mixed)


@pytest.mark.parametrize("method", ["copy-last", "mirror"])
def test_baselines_through_the_same_entry(method):
    phases = breathing_box()
    result = motion.predict_with_method(method, phases, 5)
    assert result.predicted.array.shape == (5,) + phases.shape
    assert result.predicted.labels[0] == "50%"
    if method == "copy-last":
        np.testing.assert_array_equal(result.predicted.array[2], phases.array[4])
    with pytest.raises(MedLVMError, match="unknown method"):
        motion.predict_with_method("oracle", phases, 5)


def test_warp_run_also_returns_the_direct_rendering(model):
    phases = breathing_box()
    direct = motion.predict_motion(phases, 5, n_future=2, model=model, seed=4, render="direct")
    warp = motion.predict_motion(phases, 5, n_future=2, model=model, seed=4, render="warp")
    assert direct.decoded is None
    np.testing.assert_array_equal(warp.decoded.array, direct.predicted.array)
    assert not np.array_equal(warp.predicted.array, direct.predicted.array)


@pytest.mark.parametrize("render", ["direct", "warp"])
def test_a_model_that_decodes_nan_is_an_error(nan_model, render):
    """With render "warp", NaN predictions used to come out as the warp's constant fill (-1000 HU everywhere)."""
    with pytest.raises(TaskOutputError, match="motion: the decoded phases hold .* NaN or infinite"):
        motion.predict_motion(breathing_box(), 3, 2, model=nan_model, render=render)


def test_a_constant_prediction_is_flagged(caplog):
    constant = lvm.random_model("tiny")  # a decoder that paints every image black: -1000 HU everywhere
    state = constant.tokenizer.state_dict()
    state["decoder.conv_out.weight"] = torch.zeros_like(state["decoder.conv_out.weight"])
    state["decoder.conv_out.bias"] = torch.zeros_like(state["decoder.conv_out.bias"])
    constant.tokenizer.load_state_dict(state)
    with caplog.at_level(logging.WARNING):
        result = motion.predict_motion(breathing_box(), 3, 2, model=constant, render="direct")
    assert result.warnings == ["motion: the output is -1000 HU everywhere although the input varies; the model is "
                               "probably broken (try another model)"]
    assert any(r.getMessage() == result.warnings[0] for r in caplog.records)


def test_model_grid_works_coarse_and_answers_on_the_native_grid(model):
    phases = breathing_box(shape=(12, 40, 48))  # coronal frames 12 x 48 for a 32-pixel model, 40 slices of 2 mm
    fine = motion.predict_motion(phases, 5, n_future=2, model=model, grid="native")
    coarse = motion.predict_motion(phases, 5, n_future=2, model=model)  # grid="model" by default
    assert fine.working_shape == phases.shape
    # x: 48 -> 32 voxels of 3 mm; z stays (12 < 32); y: no finer than 3 mm -> 80 mm / 3 mm = 27 slices
    assert coarse.working_shape == (12, 27, 32)
    assert coarse.predicted.array.shape == fine.predicted.array.shape == (2,) + phases.shape
    assert coarse.tokens_generated == 27 * 2 * model.tokens_per_image < fine.tokens_generated
    assert coarse.decoded.array.shape == (2,) + phases.shape and coarse.decoded.geometry == phases.geometry


def test_unknown_grid_is_refused_before_loading_a_model():
    with pytest.raises(MedLVMError, match="grid"):
        motion.predict_motion(breathing_box(), 5, model="/nonexistent/model", grid="fine")


def test_median_of_the_sampled_fields(model):
    phases = breathing_box()
    result = motion.predict_motion(phases, 5, n_future=2, model=model, samples=3, seed=1, combine="field")
    per_sample = motion.predict_motion(phases, 5, n_future=2, model=model, samples=3, seed=1)
    # the same samples: their mean agrees, the prediction itself is the median-field warp, not sample 0
    np.testing.assert_array_equal(result.mean.array, per_sample.mean.array)
    assert not np.array_equal(result.predicted.array, per_sample.predicted.array)
    last = phases.array[4]
    assert result.predicted.array.min() >= last.min() and result.predicted.array.max() <= last.max()
    with pytest.raises(MedLVMError, match="combine field"):
        motion.predict_motion(phases, 5, model=model, samples=1, combine="field")
    with pytest.raises(MedLVMError, match="combine"):
        motion.predict_motion(phases, 5, model=model, samples=2, combine="vote")


def test_observed_motion_keeps_the_prediction_on_the_observed_breathing(model):
    phases = breathing_box()
    free = motion.predict_motion(phases, 5, n_future=3, model=model, motion="free")
    kept = motion.predict_motion(phases, 5, n_future=3, model=model)  # the default with warp
    assert kept.motion == "observed" and len(kept.projections) == 1 and free.motion == "free"
    projection = kept.projections[0]
    assert len(projection.observed) == 5 and projection.observed[-1] == 0.0 and projection.observed[0] >= 0
    assert all(projection.low <= a <= projection.high for a in projection.predicted)
    assert kept.predicted.shape == free.predicted.shape and not free.projections
    last = phases.array[4]
    assert kept.predicted.array.min() >= last.min() and kept.predicted.array.max() <= last.max()


@pytest.mark.parametrize("render, n_observed, expected", [("warp", 5, "observed"), ("warp", 1, "free"),
                                                          ("direct", 5, "free")])
def test_the_default_motion_is_observed_where_it_applies(render, n_observed, expected):
    assert motion.check_motion_choice(None, render, n_observed) == expected
    assert motion.check_motion_choice("free", render, n_observed) == "free"


@pytest.mark.parametrize("kwargs, message", [(dict(motion="observed", render="direct"), "needs --render warp"),
                                             (dict(motion="observed", n_observed=1), "at least 2 observed"),
                                             (dict(motion="any"), "--motion must be one of"),
                                             (dict(codes="all"), "--codes must be one of")])
def test_observed_motion_is_checked_before_loading_a_model(kwargs, message):
    n_observed = kwargs.pop("n_observed", 5)
    with pytest.raises(MedLVMError, match=message):
        motion.predict_motion(breathing_box(), n_observed, model="/nonexistent/model", **kwargs)


@pytest.mark.parametrize("codes, radius", [(None, 1), ("any", None), ("same", 0)])
def test_the_codes_choice_reaches_generation(monkeypatch, model, codes, radius):
    radii, generate = [], lvm.generate

    def spy(*args, **kwargs):
        radii.append(kwargs.get("prompt_radius", "missing"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(lvm, "generate", spy)
    result = motion.predict_motion(breathing_box(), 3, 1, model=model, **({} if codes is None else {"codes": codes}))
    assert radii and set(radii) == {radius}
    assert result.codes == (codes or motion.DEFAULT_CODES) == (codes or "nearby")
