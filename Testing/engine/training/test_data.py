"""Training data: shapes, ranges, determinism per seed, palette masks, held-out phantom seeds."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.engine import palette
from MedLVMLib.engine.config import PreprocessConfig
from MedLVMLib.errors import MedLVMError
from MedLVMLib.training import corpus, natural, video


@pytest.mark.parametrize("kind", natural.TEXTURE_KINDS)
def test_textures_are_grey_unit_range(kind):
    img = natural.texture(np.random.default_rng(0), 48, kind)
    assert img.shape == (48, 48) and img.dtype == np.float32
    assert img.min() >= 0.0 and img.max() <= 1.0 and img.std() > 0.01


def test_natural_images_are_bundled_and_non_medical():
    images = natural.natural_images()
    assert len(images) >= 10
    assert not {"shepp_logan_phantom", "retina", "cell"} & set(natural.NATURAL_IMAGES)


@pytest.mark.parametrize("motions", [("breathing",), ("sinusoidal",), ("drift",), None])
def test_clips_move_smoothly_and_are_deterministic(motions):
    def clip(seed):
        rng = np.random.default_rng(seed)
        return video.animate(natural.random_image(rng, 45), 32, 16, rng, motions)

    a, b, c = clip(3), clip(3), clip(4)
    assert a.shape == (16, 32, 32) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    step = np.abs(np.diff(a, axis=0)).mean()
    assert step < 0.2  # consecutive frames are close: a video, not noise


def test_breathing_motion_is_periodic():
    rng = np.random.default_rng(0)
    dy, _ = video._breathing_field(rng, 32, 30)
    course = dy.reshape(30, -1).max(axis=1)
    assert course.max() > 0.5 and (np.diff(np.sign(np.diff(course))) != 0).sum() >= 2  # several turns


@pytest.mark.parametrize("kind", corpus.PAIR_KINDS)
def test_pair_transforms(kind):
    rng = np.random.default_rng(1)
    img = natural.random_crop(rng, 32)
    a, b = corpus.pair_transform(kind)(rng, img)
    assert a.shape == b.shape == (3, 32, 32)
    if kind == "segment":
        colours = {tuple(c) for c in np.round(b.reshape(3, -1).T * 255).astype(int)}
        assert colours <= {tuple(int(v) for v in c) for c in palette.PALETTE}
        assert len(colours) >= 2
    else:
        np.testing.assert_allclose(b[0], img)
        assert np.abs(a - b).mean() > 1e-3


@pytest.mark.parametrize("weights", [{"video": 1.0}, {"pairs": 1.0}])
def test_sentences_shape_and_seed(weights):
    s1 = corpus.sentence(np.random.default_rng(5), 32, 6, weights)
    s2 = corpus.sentence(np.random.default_rng(5), 32, 6, weights)
    assert s1.shape == (6, 3, 32, 32) and s1.dtype == np.float32
    np.testing.assert_array_equal(s1, s2)


def test_tokenizer_images_mix():
    w = {"natural": 1, "texture": 1, "masks": 1, "degrade": 1, "ct": 0}
    imgs = [corpus.tokenizer_image(np.random.default_rng(i), 32, w) for i in range(12)]
    assert all(i.shape == (3, 32, 32) and 0 <= i.min() and i.max() <= 1 for i in imgs)
    assert any(not np.allclose(i[0], i[1]) for i in imgs)  # some coloured masks


def test_held_out_phantom_seeds_are_refused():
    from MedLVMLib.training.data import ct_pool_for

    with pytest.raises(MedLVMError, match="held out"):
        ct_pool_for((990, 1010), 32, PreprocessConfig())


def test_ct_pool_sentences_follow_breathing_cycle():
    pytest.importorskip("MedLVMLib.synthetic.phantom")
    pool = corpus.CTPool([0], 32, PreprocessConfig(), shape=(24, 32, 32), n_phases=10)
    rng = np.random.default_rng(0)
    s = pool.sentence(rng, 12)
    assert s.shape == (12, 3, 32, 32) and 0 <= s.min() and s.max() <= 1
    np.testing.assert_array_equal(s[0], s[10])  # cyclic: phase p and p + 10 are the same image


def test_ct_pool_sentences_can_start_at_phase_0():
    pytest.importorskip("MedLVMLib.synthetic.phantom")
    pool = corpus.CTPool([0], 32, PreprocessConfig(), shape=(24, 32, 32), n_phases=10)
    case = pool.frames[0]  # (phases, slices, s, s)

    def starts(phase0: float) -> list:
        """The start phase of 12 sentences: the k with sentence == slice z's phases rolled by k."""
        out = []
        for seed in range(12):
            s = pool.sentence(np.random.default_rng(seed), 10, phase0)[:, 0]
            out.append(next(k for z in range(case.shape[1]) for k in range(10)
                            if np.array_equal(s, np.roll(case[:, z], -k, axis=0))))
        return out

    assert starts(1.0) == [0] * 12
    assert len(set(starts(0.0))) > 3  # random start phases
