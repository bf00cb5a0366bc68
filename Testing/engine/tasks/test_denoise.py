"""Denoising: the analogy engine (example choice, tiles vs resize), each method end to end, and bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from MedLVMLib.engine import lvm
from MedLVMLib.errors import MedLVMError, TaskOutputError
from MedLVMLib.evaluation import metrics
from MedLVMLib.tasks import denoise
from MedLVMLib.tasks.prompts import Pairs


@pytest.fixture(scope="module")
def model():
    return lvm.random_model("tiny")


def noisy_phantom(shape=(3, 40, 48), sigma=60.0, seed=0):
    clean = np.full(shape, -900.0, np.float32)
    clean[:, 8:32, 6:42] = 40.0
    clean[:, 14:24, 14:22] = 300.0
    noisy = clean + np.random.default_rng(seed).normal(0, sigma, shape).astype(np.float32)
    return noisy, clean


def test_choose_examples_puts_the_most_similar_last():
    pool = np.stack([np.full((16, 16), v, np.float32) for v in (0.0, 0.5, 0.9)])
    queries = np.stack([np.full((16, 16), 0.85, np.float32), np.full((16, 16), 0.1, np.float32)])
    chosen = denoise.choose_examples(pool, queries, 2)
    assert chosen.tolist() == [[1, 2], [1, 0]]


@pytest.mark.parametrize("method", ["tv", "nlm", "bilateral"])
def test_baselines_reduce_the_error(method):
    noisy, clean = noisy_phantom()
    result = denoise.denoise_volume(noisy, method=method)
    assert result.denoised.shape == noisy.shape and result.denoised.dtype == np.float32
    assert metrics.mae(result.denoised, clean) < 0.8 * metrics.mae(noisy, clean)


@pytest.mark.parametrize("tile", [True, False])
def test_medlvm_end_to_end_with_user_examples(model, tile):
    noisy, clean = noisy_phantom()
    examples = denoise.volume_pairs(noisy, clean)
    result = denoise.denoise_volume(noisy, model=model, examples=examples, tile=tile)
    assert result.denoised.shape == noisy.shape and np.isfinite(result.denoised).all()
    # values beyond the window come back from the input, inside it they lie in the window
    assert result.denoised.min() >= min(-1000.0, noisy.min()) and result.denoised.max() <= max(1000.0, noisy.max())


def test_medlvm_on_coronal_frames(model):
    noisy, clean = noisy_phantom(shape=(6, 20, 24))
    result = denoise.denoise_volume(noisy, model=model, examples=denoise.volume_pairs(noisy, clean, "coronal"),
                                    axis="coronal")
    assert result.denoised.shape == noisy.shape


def test_restore_frames_tiles_frames_larger_than_the_model(model):
    frames = np.random.default_rng(0).random((2, 40, 70)).astype(np.float32)
    out = denoise.restore_frames(model, frames, frames, frames, tile=True)
    assert out.shape == frames.shape and out.min() >= 0.0 and out.max() <= 1.0


def test_keep_outside_window():
    restored = np.array([0.0, 0.0, 0.0], np.float32)
    original = np.array([-1200.0, 10.0, 1500.0], np.float32)
    np.testing.assert_array_equal(denoise.keep_outside_window(restored, original, (-1000, 1000)), [-1200, 0, 1500])


def test_a_2d_image_is_an_error():
    with pytest.raises(MedLVMError, match="2D image"):
        denoise.denoise_volume(np.zeros((16, 16), np.float32), method="tv")


def test_unknown_method_is_an_error():
    with pytest.raises(MedLVMError, match="method"):
        denoise.denoise_volume(np.zeros((2, 16, 16), np.float32), method="bm4d")


def test_example_volumes_on_different_grids_are_an_error():
    with pytest.raises(MedLVMError, match="differ in size"):
        denoise.volume_pairs(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)))


def test_medlvm_output_stays_in_the_input_range_with_a_warning(model, caplog):
    """Soft tissue only (-38..179 HU): the random model answers with air (-1000 HU), which is clipped."""
    clean = np.full((3, 40, 48), 40.0, np.float32)
    clean[:, 10:30, 10:38] = 120.0
    noisy = clean + np.random.default_rng(0).normal(0, 20, clean.shape).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        result = denoise.denoise_volume(noisy, model=model, examples=Pairs(noisy, clean))
    assert noisy.min() <= result.denoised.min() and result.denoised.max() <= noisy.max()
    assert len(result.warnings) == 1 and result.warnings[0].startswith("denoising: ")
    assert "clipped to it" in result.warnings[0] and any("clipped" in r.getMessage() for r in caplog.records)


def test_a_model_that_decodes_nan_is_an_error(nan_model):
    noisy, clean = noisy_phantom()
    with pytest.raises(TaskOutputError, match="denoising: .*NaN"):
        denoise.denoise_volume(noisy, model=nan_model, examples=Pairs(noisy, clean))
