"""Non-medical training images: scikit-image's bundled photographs and procedural textures.

This is MedLVM's analogue of LVM's natural-image / natural-video pretraining. Nothing here is medical:
the photographs are scikit-image's offline sample images (no microscopy, retina or CT phantom), and the
textures are made from noise. Everything is grey (CT is grey), float32 in [0, 1], and deterministic
for a given seed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

# scikit-image samples shipped inside the wheel (no download). Medical / biological images are left out
# on purpose (shepp_logan_phantom, retina, cell, immunohistochemistry, microaneurysms) to keep the
# zero-shot model free of medical data.
NATURAL_IMAGES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "text", "moon",
    "page", "coins", "horse", "cat", "clock", "hubble_deep_field", "colorwheel", "checkerboard", "logo",
)

TEXTURE_KINDS = ("noise", "blobs", "stripes", "cells", "mix")


def _to_grey(image: np.ndarray) -> np.ndarray:
    """Any skimage sample (grey, RGB, RGBA, bool) -> float32 grey in [0, 1]."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1)
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / max(hi - lo, 1e-6)).astype(np.float32)


@lru_cache(maxsize=1)
def natural_images() -> tuple:
    """The bundled photographs, grey float32 [H, W] in [0, 1] (loaded once per process)."""
    import skimage.data

    out = []
    for name in NATURAL_IMAGES:
        try:
            out.append(_to_grey(getattr(skimage.data, name)()))
        except Exception:  # an image missing from this scikit-image build: skip it
            continue
    if not out:
        raise RuntimeError("no scikit-image sample image could be loaded")
    return tuple(out)


def _normalise(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, 1), np.percentile(a, 99)
    return np.clip((a - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _noise(rng: np.random.Generator, size: int) -> np.ndarray:
    sigma = rng.uniform(1.0, size / 8)
    return _normalise(ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma))


def _blobs(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.full((size, size), rng.uniform(0, 0.4), np.float32)
    for _ in range(int(rng.integers(3, 12))):
        cy, cx = rng.uniform(0, size, 2)
        ry, rx = rng.uniform(size / 20, size / 4, 2)
        img += rng.uniform(-0.6, 0.8) * np.exp(-(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2))
    return _normalise(img)


def _stripes(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    img = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        angle, freq = rng.uniform(0, np.pi), rng.uniform(1.5, 12) * 2 * np.pi / size
        img += np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
    if rng.random() < 0.5:
        img = np.sign(img) * np.abs(img) ** 0.3  # sharper bars
    return _normalise(img)


def _cells(rng: np.random.Generator, size: int) -> np.ndarray:
    """Voronoi-like cells: each pixel takes the grey value of its nearest seed, with dark borders."""
    n = int(rng.integers(6, 40))
    seeds = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2  # (H, W, n)
    order = np.sort(dist, axis=-1)
    label = dist.argmin(axis=-1)
    img = rng.uniform(0.1, 1.0, n)[label]
    edge = np.sqrt(order[..., 1]) - np.sqrt(order[..., 0]) < rng.uniform(0.5, 2.0)
    img = np.where(edge, rng.uniform(0, 0.2), img)
    return ndimage.gaussian_filter(img, rng.uniform(0, 1.2)).astype(np.float32)


def texture(rng: np.random.Generator, size: int, kind: str = "") -> np.ndarray:
    """One procedural grey texture [size, size] in [0, 1]; `kind` in TEXTURE_KINDS ("" = random)."""
    kind = kind or str(rng.choice(TEXTURE_KINDS))
    makers = {"noise": _noise, "blobs": _blobs, "stripes": _stripes, "cells": _cells}
    if kind == "mix":
        a, b = makers[str(rng.choice(list(makers)))](rng, size), makers[str(rng.choice(list(makers)))](rng, size)
        w = rng.uniform(0.3, 0.7)
        return _normalise(w * a + (1 - w) * b)
    return makers[kind](rng, size)


def random_crop(rng: np.random.Generator, size: int, zoom_range=(0.5, 1.0)) -> np.ndarray:
    """A square region of a random bundled photograph, resampled to [size, size] in [0, 1]."""
    images = natural_images()
    img = images[int(rng.integers(len(images)))]
    side = int(min(img.shape) * rng.uniform(*zoom_range))
    y0 = int(rng.integers(0, img.shape[0] - side + 1))
    x0 = int(rng.integers(0, img.shape[1] - side + 1))
    crop = img[y0 : y0 + side, x0 : x0 + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.clip(ndimage.zoom(crop, size / side, order=1)[:size, :size], 0, 1).astype(np.float32)


def random_image(rng: np.random.Generator, size: int, p_texture: float = 0.4) -> np.ndarray:
    """A photograph crop or a procedural texture, grey [size, size] in [0, 1]."""
    if rng.random() < p_texture:
        return texture(rng, size)
    return random_crop(rng, size)
