"""Learned motion baselines: the networks, their fields in mm on the native grid, loading, and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedLVMLib.baselines import learned_motion, motion
from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import resample
from MedLVMLib.imaging.volume import Geometry, Phases

GEOMETRY = Geometry(spacing=(4.0, 3.0, 5.0), origin=(-20.0, 10.0, 5.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))


def box_phases(n_phases: int = 6, shape=(24, 20, 28)) -> Phases:
    array = np.full((n_phases,) + shape, -1000.0, np.float32)
    for p in range(n_phases):
        dz = p % 3
        array[p, 6 + dz:14 + dz, 5:15, 8:20] = 40.0
    return Phases(array, GEOMETRY)


@pytest.fixture
def nets(tmp_path):
    torch.manual_seed(0)
    folders = {}
    for kind in learned_motion.KINDS:
        net = learned_motion.MotionNet(learned_motion.MotionNetConfig(kind=kind, frame_size=16, hidden=8))
        folders[kind] = learned_motion.save(net, tmp_path / kind, card="# test\n")
    return folders


@pytest.mark.parametrize("kind", learned_motion.KINDS)
def test_an_untrained_net_predicts_copy_last(nets, kind):
    # the last decoder layer starts at zero: no change, no displacement
    phases = box_phases()
    observed = phases.select([0, 1, 2])
    out = learned_motion.predict(kind, observed, 2, folder=nets[kind])
    assert out.array.shape == (2,) + phases.shape and out.geometry == phases.geometry
    assert out.labels[0] != observed.labels[-1]
    if kind == "rmsim":  # a zero field warps the native last phase onto itself exactly
        np.testing.assert_allclose(out.array[1], observed.array[-1], atol=1e-3)
    else:  # through the frames: the last phase at the frame resolution, back on the native grid
        assert np.abs(out.array[1] - observed.array[-1]).mean() < 150


def test_a_frame_shift_becomes_a_superior_inferior_field_in_mm():
    native = resample.Grid((24, 20, 28), GEOMETRY)
    working = resample.working_grid(native, learned_motion.AXIS, 16)
    s = 16
    fields = np.zeros((working.shape[1], 2, s, s), np.float32)
    fields[:, 1] = 2.0 / s  # one frame row down in every coronal frame: rows run superior -> inferior
    field = learned_motion._field_mm(fields, working)
    assert field.shape == working.shape + (3,)
    row_mm = working.shape[0] * working.geometry.spacing[2] / s  # one frame row in mm along z
    np.testing.assert_allclose(field[..., 2], -row_mm, rtol=1e-5)  # pull from one row lower = smaller z
    np.testing.assert_allclose(field[..., :2], 0.0, atol=1e-6)


def test_warp_frames_moves_content_by_the_field():
    frames = torch.zeros(1, 1, 8, 8)
    frames[0, 0, 2, 3] = 1.0
    field = torch.zeros(1, 2, 8, 8)
    field[:, 0] = 2.0 / 8  # pull from one column to the right
    out = learned_motion.warp_frames(frames, field)
    assert out[0, 0, 2, 2] == pytest.approx(1.0) and out[0, 0, 2, 3] == pytest.approx(0.0)


def test_missing_or_wrong_weights_are_named(tmp_path, nets):
    with pytest.raises(MedLVMError, match="no trained 'rmsim'"):
        learned_motion.load("rmsim", tmp_path / "nothing")
    with pytest.raises(MedLVMError, match="holds a 'convlstm'"):
        learned_motion.load("rmsim", nets["convlstm"])
    with pytest.raises(MedLVMError, match="unknown"):
        learned_motion.MotionNetConfig(kind="lstm")


def test_baselines_table_runs_the_shipped_or_says_how_to_train(monkeypatch, nets, tmp_path):
    observed = box_phases().select([0, 1, 2])
    monkeypatch.setattr(learned_motion, "default_folder", lambda kind: nets[kind])
    out = motion.MOTION_BASELINES["rmsim"](observed, 3)
    assert out.n_phases == 3 and out.geometry == GEOMETRY and out.array.shape[1:] == observed.shape
    monkeypatch.setattr(learned_motion, "default_folder", lambda kind: tmp_path / "missing" / kind)
    with pytest.raises(MedLVMError, match="train_motion_baselines"):
        motion.MOTION_BASELINES["convlstm"](observed, 3)


def test_training_refuses_evaluation_phantoms_and_runs_a_few_steps(tmp_path):
    from MedLVMLib.training import motion_baselines

    with pytest.raises(MedLVMError, match="evaluation phantoms"):
        motion_baselines.build_frames(motion_baselines.MotionTrainConfig(seeds=(990, 1005)))
    rng = np.random.default_rng(0)
    frames = np.clip(rng.random((8, 10, 16, 16)), 0, 1).astype(np.float16)
    config = motion_baselines.MotionTrainConfig(kind="rmsim", batch_size=4, max_steps=3, max_minutes=2.0,
                                                hidden=8, frame_size=16)
    net, summary = motion_baselines.fit(config, tmp_path, frames)
    assert summary["steps"] == 3 and summary["slice_sequences"] == 8
    assert np.isfinite(summary["final"]["loss"]) and summary["final"]["l1_copy_last"] > 0
    assert any(p.abs().sum() > 0 for p in net.decoder[-1].parameters())  # it learned something
