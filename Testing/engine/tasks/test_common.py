"""Volume <-> frames <-> codes plumbing shared by the tasks."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.engine import lvm
from MedLVMLib.engine.config import PreprocessConfig
from MedLVMLib.errors import MedLVMError
from MedLVMLib.tasks import common

WINDOW = PreprocessConfig(hu_min=-1000.0, hu_max=1000.0)


@pytest.mark.parametrize("axis, shape, n", [("axial", (5, 32, 32), 5), ("coronal", (32, 6, 32), 6),
                                            ("sagittal", (32, 32, 7), 7)])
def test_square_slices_round_trip_exactly(axis, shape, n):
    rng = np.random.default_rng(0)
    volume = rng.uniform(-1000, 1000, shape).astype(np.float32)
    frames = common.volume_to_frames(volume, axis, WINDOW, image_size=32)
    assert frames.shape == (n, 32, 32) and frames.min() >= 0 and frames.max() <= 1
    back = common.frames_to_volume(frames, axis, shape, WINDOW)
    np.testing.assert_allclose(back, volume, atol=0.05)


def test_non_square_round_trip_is_close_for_smooth_volume():
    z, y, x = np.meshgrid(np.linspace(0, 1, 12), np.linspace(0, 1, 9), np.linspace(0, 1, 20), indexing="ij")
    volume = (800 * (z - x) + 100 * y).astype(np.float32)
    frames = common.volume_to_frames(volume, "coronal", WINDOW, image_size=32)
    assert frames.shape == (9, 32, 32)
    back = common.frames_to_volume(frames, "coronal", volume.shape, WINDOW)
    assert back.shape == volume.shape
    assert np.abs(back - volume).max() < 40  # HU; linear resizes of a linear ramp


def test_out_of_window_values_come_back_clipped():
    volume = np.full((4, 32, 32), 3000.0, np.float32)
    back = common.frames_to_volume(common.volume_to_frames(volume, "axial", WINDOW, 32), "axial", volume.shape, WINDOW)
    np.testing.assert_allclose(back, 1000.0)


def test_errors():
    with pytest.raises(MedLVMError, match="3D"):
        common.volume_to_frames(np.zeros((4, 4)), "axial", WINDOW, 32)
    with pytest.raises(MedLVMError, match="axis"):
        common.volume_to_frames(np.zeros((4, 4, 4)), "oblique", WINDOW, 32)
    with pytest.raises(MedLVMError, match="frames"):
        common.frames_to_volume(np.zeros((3, 32, 32)), "axial", (4, 8, 8), WINDOW)


def test_encode_decode_volumes_shapes():
    model = lvm.random_model("tiny")
    volumes = np.random.default_rng(1).uniform(-1000, 500, (2, 6, 10, 12)).astype(np.float32)
    codes = common.encode_volumes(model, volumes, "coronal")
    assert codes.shape == (2, 10, model.tokens_per_image) and codes.dtype == np.int64
    assert codes.max() < model.tokenizer.config.codebook_size
    np.testing.assert_array_equal(common.encode_volume(model, volumes[1], "coronal"), codes[1])
    back = common.decode_volumes(model, codes, "coronal", volumes.shape[1:])
    assert back.shape == volumes.shape and back.dtype == np.float32
    assert back.min() >= -1000 and back.max() <= 1000
    assert common.reconstruct_volume(model, volumes[0], "axial").shape == volumes.shape[1:]


def test_check_model_pair_rejects_mismatched_codebooks():
    tiny, other = lvm.random_model("tiny"), lvm.random_model("medlvm-tiny")
    common.check_model_pair(tiny)
    mixed = lvm.MedLVMModel(tiny.tokenizer, other.transformer, tiny.preprocess, "mixed", tiny.device, tiny.dtype)
    with pytest.raises(MedLVMError, match="64 codes"):
        common.check_model_pair(mixed)
