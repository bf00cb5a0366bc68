"""tools/build_motion_tokens.py: breathing sentences in the 4D CT order from a frames cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from MedLVMLib.engine.checkpoints.formats import save_checkpoint
from MedLVMLib.engine.config import TokenizerConfig, TransformerConfig
from MedLVMLib.engine.models.transformer import Transformer
from MedLVMLib.engine.models.vqgan import VQGAN
from Testing.engine.scripts import load_script


@pytest.fixture(scope="module")
def tool():
    return load_script("tools", "build_motion_tokens")


def test_orders_start_at_phase_0_then_at_random_phases(tool):
    orders = tool.sentence_orders(7, 10, 3, seed=1)
    assert orders.shape == (21, 2)
    np.testing.assert_array_equal(orders[:7], np.stack([np.arange(7), np.zeros(7, int)], axis=1))
    np.testing.assert_array_equal(orders[7:, 0], np.tile(np.arange(7), 2))
    assert orders[7:, 1].min() >= 1 and orders[7:, 1].max() <= 9 and len(set(orders[7:, 1])) > 1


def test_sentences_are_the_encoded_phases_in_cycle_order(tool, tmp_path):
    torch.manual_seed(0)
    tokenizer = VQGAN(TokenizerConfig.from_name("tiny"))
    model = save_checkpoint(tmp_path / "tiny", tokenizer=tokenizer,
                            transformer=Transformer(TransformerConfig.from_name("tiny")), model_id="tiny")
    size = tokenizer.config.resolution
    frames = np.random.default_rng(0).random((3, 10, size, size)).astype(np.float16)
    np.save(tmp_path / "frames.npy", frames)
    mix = np.full((2, 10, tokenizer.config.tokens_per_image), 5, np.int16)
    np.savez(tmp_path / "mix.npz", codes=mix)
    out = tmp_path / "tokens.npz"
    tool.main(["--frames", str(tmp_path / "frames.npy"), "--model", str(model), "--rotations", "2",
               "--mix", str(tmp_path / "mix.npz"), "--threads", "1", "--out", str(out)])
    saved = np.load(out)
    codes, orders = saved["codes"], saved["orders"]
    assert codes.shape == (3 * 2 + 2, 10, tokenizer.config.tokens_per_image) and codes.dtype == np.int16
    with torch.inference_mode():
        first = torch.from_numpy(frames[1].astype(np.float32))[:, None].expand(-1, 3, -1, -1).contiguous()
        expected = tokenizer.encode(first).reshape(10, -1).numpy()
    np.testing.assert_array_equal(codes[1], expected)  # slice position 1 from phase 0
    start = orders[3 + 1, 1]
    np.testing.assert_array_equal(codes[3 + 1], np.roll(expected, -start, axis=0))  # the same, cyclic from `start`
    np.testing.assert_array_equal(codes[-2:], mix)
    assert not list(tmp_path.glob("*.partial.npz"))


# ---------------------------------------------------------------------------------------------- real anatomy

def test_the_motion_evaluations_real_cts_are_never_trained_on(tmp_path):
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.evaluation.motion_cases import REAL_CT
    from MedLVMLib.training import corpus, motion_baselines

    assert {ct for ct, _ in REAL_CT.values()} <= set(corpus.HELD_OUT_CT)
    held_out = tmp_path / corpus.HELD_OUT_CT[0]
    held_out.write_bytes(b"not read: refused by name")
    with pytest.raises(MedLVMError, match="never trained on"):
        motion_baselines.build_real_frames(held_out, (0, 2))
    with pytest.raises(MedLVMError, match="not found"):
        motion_baselines.build_real_frames(tmp_path / "missing.nii.gz", (0, 2))


@pytest.mark.shared_data
def test_real_ct_frames_breathe_in_the_4dct_phase_order(shared_data):
    from MedLVMLib.training import motion_baselines

    frames = motion_baselines.build_real_frames(shared_data / "totalseg_abdomen_ct.nii.gz", (0, 2),
                                                shape=(24, 32, 32), size=32, workers=1)
    assert frames.dtype == np.float16 and frames.shape[1:] == (10, 32, 32) and len(frames) > 10
    change = np.abs(frames[:, 1:].astype(np.float32) - frames[:, :1]).mean(axis=(0, 2, 3))  # against phase 0
    assert change[4] > 2 * change[0]  # exhale (phase 5) is far from end-inhale; phase 1 is near it
    assert change[8] < change[4]  # and the cycle returns towards phase 0
