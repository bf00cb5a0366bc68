"""What the models are trained on: single images (tokenizer) and visual sentences (transformer).

Images are float32 RGB [3, H, W] in [0, 1]; grey content is replicated to 3 channels, masks use the
fixed palette of `MedLVMLib.engine.palette` (the one the segmentation task draws with).

Sentence kinds (each [n_images, 3, H, W]):
    video   16 frames of a deformed photograph or texture (`video.natural_clip`)
    pairs   analogy pairs on natural images, one transform per sentence:
            (noisy, clean), (blurred / downsampled, sharp), (image, palette threshold mask)
    ct      one coronal slice position of a 4D CT phantom, phases in breathing order, cyclic
            (phase 9 is followed by phase 0), starting at a random phase
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence

import numpy as np
from scipy import ndimage

from MedLVMLib.engine import palette
from MedLVMLib.training import natural, video

PAIR_KINDS = ("denoise", "superres", "segment")
HELD_OUT_SEED_START = 1000  # phantom seeds >= 1000 are evaluation cases: never trained on
# real CTs of the motion evaluation (`evaluation.motion_cases.REAL_CT`): never trained on
HELD_OUT_CT = ("4dlung_p113_phase40.nii.gz", "popi_phase00.nii.gz")


def grey3(frames: np.ndarray) -> np.ndarray:
    """[..., H, W] grey -> [..., 3, H, W] float32."""
    frames = np.asarray(frames, dtype=np.float32)
    return np.repeat(frames[..., None, :, :], 3, axis=-3)


def noisy(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    sigma = rng.uniform(0.03, 0.15)
    out = img + rng.standard_normal(img.shape).astype(np.float32) * sigma
    if rng.random() < 0.5:  # correlated (CT-like streaky/blotchy) noise
        out = img + ndimage.gaussian_filter(rng.standard_normal(img.shape), rng.uniform(0.5, 1.2)) * sigma * 2
    return np.clip(out, 0, 1).astype(np.float32)


def blurred(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Downsampled by 2-4 (in one or both axes) and brought back with nearest or linear interpolation."""
    f = int(rng.integers(2, 5))
    fy, fx = (f, f) if rng.random() < 0.6 else ((f, 1) if rng.random() < 0.5 else (1, f))
    small = img[::fy, ::fx]
    order = int(rng.choice([0, 1]))
    up = ndimage.zoom(small, (img.shape[0] / small.shape[0], img.shape[1] / small.shape[1]), order=order)
    return np.clip(up[: img.shape[0], : img.shape[1]], 0, 1).astype(np.float32)


def threshold_mask(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A palette mask [3, H, W] from 1-3 grey thresholds of a smoothed image."""
    n = int(rng.integers(1, 4))
    smooth = ndimage.gaussian_filter(img, rng.uniform(0.5, 2.0))
    levels = np.sort(np.quantile(smooth, rng.uniform(0.3, 0.9, n)))
    slots_of_level = rng.permutation(np.arange(1, 7))[:n]
    classes = np.digitize(smooth, levels)  # 0..n
    table = np.concatenate([[0], slots_of_level]).astype(np.uint8)
    rgb = palette.render(table[classes])  # (H, W, 3)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32)


def pair_transform(kind: str) -> Callable[[np.random.Generator, np.ndarray], tuple]:
    """(rng, grey image) -> (input [3,H,W], answer [3,H,W]) for one pair kind."""
    if kind == "denoise":
        return lambda rng, img: (grey3(noisy(rng, img)), grey3(img))
    if kind == "superres":
        return lambda rng, img: (grey3(blurred(rng, img)), grey3(img))
    return lambda rng, img: (grey3(img), threshold_mask(rng, img))


def pair_sentence(rng: np.random.Generator, size: int, n_images: int) -> np.ndarray:
    """[n_images, 3, H, W]: n_images // 2 (input, answer) pairs of one transform on different images."""
    transform = pair_transform(str(rng.choice(PAIR_KINDS)))
    out = []
    for _ in range(n_images // 2):
        a, b = transform(rng, natural.random_image(rng, size, p_texture=0.3))
        out += [a, b]
    if n_images % 2:
        out.append(grey3(natural.random_image(rng, size)))
    return np.stack(out)


def video_sentence(rng: np.random.Generator, size: int, n_images: int) -> np.ndarray:
    return grey3(video.natural_clip(rng, size, n_images))


class CTPool:
    """Coronal slices of 4D CT phantoms, windowed and resized: frames[case] is [P, N, size, size]."""

    def __init__(self, seeds: Sequence[int], size: int, preprocess, shape=(48, 64, 64), n_phases: int = 10):
        from MedLVMLib.synthetic import phantom
        from MedLVMLib.tasks.common import volume_to_frames

        bad = [s for s in seeds if s >= HELD_OUT_SEED_START]
        assert not bad, f"phantom seeds {bad[:3]} are held out for evaluation"
        self.frames: List[np.ndarray] = []
        for seed in seeds:
            case = phantom.make_phantom(seed=int(seed), n_phases=n_phases, shape=shape)
            vols = np.asarray(case.phases.array, dtype=np.float32)  # (P, Z, Y, X) HU
            per_phase = [volume_to_frames(v, "coronal", preprocess, size) for v in vols]
            slices = np.stack(per_phase)  # (P, N, s, s)
            keep = slices.reshape(slices.shape[0], slices.shape[1], -1).std(axis=(0, 2)) > 0.01  # drop empty slices
            self.frames.append(slices[:, keep] if keep.any() else slices)

    def sentence(self, rng: np.random.Generator, n_images: int, phase0: float = 0.0) -> np.ndarray:
        """Phases of one slice position in breathing order, cyclic; from phase 0 (end-inhale) with probability
        `phase0`, else from a random phase."""
        case = self.frames[int(rng.integers(len(self.frames)))]
        p, n = case.shape[:2]
        z, start = int(rng.integers(n)), int(rng.integers(p))
        if phase0 > 0 and rng.random() < phase0:
            start = 0
        order = [(start + t) % p for t in range(n_images)]
        return grey3(case[order, z])

    def image(self, rng: np.random.Generator) -> np.ndarray:
        case = self.frames[int(rng.integers(len(self.frames)))]
        return grey3(case[int(rng.integers(case.shape[0])), int(rng.integers(case.shape[1]))])


def _choose(rng: np.random.Generator, weights: Dict[str, float]) -> str:
    names = [k for k, w in weights.items() if w > 0]
    probs = np.array([weights[k] for k in names], dtype=np.float64)
    return names[int(rng.choice(len(names), p=probs / probs.sum()))]


def tokenizer_image(rng: np.random.Generator, size: int, weights: Dict[str, float], ct: CTPool = None) -> np.ndarray:
    """One training image [3, size, size] for the tokenizer; weights over natural/texture/masks/degrade/ct."""
    kind = _choose(rng, weights)
    if kind == "ct":
        return ct.image(rng)
    if kind == "texture":
        return grey3(natural.texture(rng, size))
    img = natural.random_crop(rng, size, zoom_range=(0.15, 1.0))
    if kind == "masks":
        return threshold_mask(rng, img)
    if kind == "degrade":
        return grey3(noisy(rng, img) if rng.random() < 0.5 else blurred(rng, img))
    return grey3(img)


def sentence(rng: np.random.Generator, size: int, n_images: int, weights: Dict[str, float],
             ct: CTPool = None, phase0: float = 0.0) -> np.ndarray:
    """One visual sentence [n_images, 3, size, size]; weights over video/pairs/ct (`phase0`: CTPool.sentence)."""
    kind = _choose(rng, weights)
    if kind == "ct":
        return ct.sentence(rng, n_images, phase0)
    if kind == "pairs":
        return pair_sentence(rng, size, n_images)
    return video_sentence(rng, size, n_images)
