"""Sentence layouts: prompts are plain concatenations, split() inverts them, block_size drops the oldest."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.engine.sentences import MotionSentence, PairSentence, context_images
from MedLVMLib.errors import MedLVMError


def _codes(n_phases: int, n_slices: int, tpi: int) -> np.ndarray:
    # code value = 100 * phase + 10 * slice + token, so positions are readable in failures
    p, n, t = np.meshgrid(np.arange(n_phases), np.arange(n_slices), np.arange(tpi), indexing="ij")
    return 100 * p + 10 * n + t


@pytest.mark.parametrize("block_size, kept", [(None, 5), (4 * 6, 5), (4 * 4, 3), (4 * 2, 1)])
def test_motion_prompt_keeps_newest_phases(block_size, kept):
    sentence = MotionSentence(n_observed=5, tokens_per_image=4, block_size=block_size)
    prompt = sentence.build(_codes(5, 3, 4))
    assert prompt.shape == (3, kept * 4)
    assert prompt.dtype == np.int64
    # slice 1: the newest `kept` phases in order, no separators
    expected = np.concatenate([100 * p + 10 + np.arange(4) for p in range(5 - kept, 5)])
    np.testing.assert_array_equal(prompt[1], expected)


def test_motion_split_inverts_layout():
    sentence = MotionSentence(n_observed=2, tokens_per_image=4)
    future = _codes(3, 5, 4)  # (F, N, tpi)
    generated = future.transpose(1, 0, 2)  # what the generator returns: (N, F, tpi)
    np.testing.assert_array_equal(sentence.split(generated), future)
    np.testing.assert_array_equal(sentence.split(generated.reshape(5, -1)), future)


def test_motion_max_context_leaves_room_for_one_image():
    sentence = MotionSentence(n_observed=5, tokens_per_image=256, block_size=4096)
    assert sentence.max_context_images == 15  # LVM keeps the last 15 of 16 frames
    assert MotionSentence(5, 4).max_context_images is None


@pytest.mark.parametrize("bad", [np.zeros((4, 3, 4)), np.zeros((5, 3, 5)), np.zeros((5, 12))])
def test_motion_rejects_wrong_code_shapes(bad):
    with pytest.raises(MedLVMError):
        MotionSentence(5, 4).build(bad)


def test_context_images_rejects_tiny_context():
    with pytest.raises(MedLVMError, match="fewer than 2 images"):
        context_images(5, 4)


def test_pair_sentence_interleaves_and_drops_oldest_pairs():
    tpi = 2
    inputs = np.array([[[1, 1], [3, 3], [5, 5]]])  # (B=1, n=3, tpi)
    answers = inputs + 1
    query = np.array([[9, 9]])
    full = PairSentence(tpi).build(inputs, answers, query)
    np.testing.assert_array_equal(full[0], [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 9, 9])
    # block of 6 images: 2 pairs + query + answer; the first pair is dropped
    short = PairSentence(tpi, block_size=6 * tpi).build(inputs, answers, query)
    np.testing.assert_array_equal(short[0], [3, 3, 4, 4, 5, 5, 6, 6, 9, 9])


def test_pair_sentence_shared_examples_broadcast_and_split():
    sentence = PairSentence(3)
    prompts = sentence.build(np.zeros((2, 3)), np.ones((2, 3)), np.full((4, 3), 7))
    assert prompts.shape == (4, 5 * 3)
    assert (prompts[:, -3:] == 7).all()
    assert sentence.split(np.arange(12).reshape(4, 3)).shape == (4, 1, 3)


def test_pair_sentence_errors():
    with pytest.raises(MedLVMError, match="differ"):
        PairSentence(2).build(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)), np.zeros((1, 2)))
    with pytest.raises(MedLVMError, match="cannot hold"):
        PairSentence(2, block_size=6).max_pairs()
