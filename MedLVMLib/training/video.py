"""Synthetic "videos" from still images: smooth periodic and non-periodic deformations.

A clip is `n_frames` views of one base image through a time-varying coordinate map:
- a periodic vertical squeeze/stretch (period 6-14 frames, amplitude growing towards one edge), a
  generic breathing-like prior on arbitrary content;
- sinusoidal warps: a few low-frequency spatial displacement modes oscillating in time with random periods;
- non-periodic drift: translation, zoom and small rotation changing linearly in time;
- intensity gain / offset changes.
Every frame is grey float32 [size, size] in [0, 1]. Deterministic for a given generator state.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from scipy import ndimage

from MedLVMLib.training import natural


def _temporal(rng: np.random.Generator, n_frames: int, periodic: bool) -> np.ndarray:
    """A smooth time course in [-1, 1] (periodic: sine of period 6-14 frames; else a slow ramp)."""
    t = np.arange(n_frames, dtype=np.float32)
    if periodic:
        period = rng.uniform(6.0, 14.0)
        return np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return np.linspace(-1.0, 1.0, n_frames, dtype=np.float32) * rng.choice([-1.0, 1.0])


def _breathing_field(rng: np.random.Generator, size: int, n_frames: int):
    """Vertical squeeze/stretch, strongest towards one edge, plus a little lateral expansion."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / max(size - 1, 1)  # (H, W) in [0, 1]
    weight = yy if rng.random() < 0.5 else 1.0 - yy
    amp_y = rng.uniform(0.03, 0.12) * size
    amp_x = rng.uniform(0.0, 0.04) * size
    period = rng.uniform(6.0, 14.0) if rng.random() < 0.5 else 10.0
    phase = rng.uniform(0, 2 * np.pi)
    course = 0.5 * (1 - np.cos(2 * np.pi * np.arange(n_frames) / period + phase))  # (T,) in [0, 1]
    dy = course[:, None, None] * amp_y * weight ** rng.uniform(1.0, 2.0)
    dx = course[:, None, None] * amp_x * (xx - 0.5) * 2
    return dy.astype(np.float32), dx.astype(np.float32)


def _sinusoidal_field(rng: np.random.Generator, size: int, n_frames: int):
    """A few low-frequency displacement modes, each with its own temporal sine (or ramp)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / max(size - 1, 1)
    dy = np.zeros((n_frames, size, size), np.float32)
    dx = np.zeros_like(dy)
    for _ in range(int(rng.integers(1, 4))):
        ky, kx = rng.uniform(0.5, 2.0, 2) * np.pi
        mode = np.sin(ky * yy + rng.uniform(0, 6.3)) * np.sin(kx * xx + rng.uniform(0, 6.3))
        course = _temporal(rng, n_frames, periodic=rng.random() < 0.7)
        amp = rng.uniform(0.01, 0.06) * size
        dy += amp * rng.uniform(-1, 1) * course[:, None, None] * mode
        dx += amp * rng.uniform(-1, 1) * course[:, None, None] * mode
    return dy, dx


def _affine_drift(rng: np.random.Generator, size: int, n_frames: int):
    """Translation, zoom and rotation growing linearly (non-periodic)."""
    t = np.arange(n_frames, dtype=np.float32)[:, None, None] / max(n_frames - 1, 1)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) - (size - 1) / 2
    shift = rng.uniform(-0.15, 0.15, 2) * size * rng.choice([0.0, 1.0], p=[0.3, 0.7])
    zoom = rng.uniform(-0.2, 0.2) * rng.choice([0.0, 1.0], p=[0.4, 0.6])
    angle = rng.uniform(-0.2, 0.2) * rng.choice([0.0, 1.0], p=[0.6, 0.4])
    cos, sin, scale = np.cos(angle * t), np.sin(angle * t), 1.0 + zoom * t
    dy = (cos * yy - sin * xx) / scale - yy + shift[0] * t
    dx = (sin * yy + cos * xx) / scale - xx + shift[1] * t
    return dy.astype(np.float32), dx.astype(np.float32)


MOTIONS = {"breathing": _breathing_field, "sinusoidal": _sinusoidal_field, "drift": _affine_drift}


def animate(base: np.ndarray, size: int, n_frames: int, rng: np.random.Generator,
            motions: Optional[tuple] = None) -> np.ndarray:
    """Clip [n_frames, size, size] in [0, 1] from a base image larger than `size` (centre view).

    `motions`: names from MOTIONS combined in this clip (None = a random non-empty subset,
    breathing-like squeeze in about half of the clips).
    """
    if motions is None:
        motions = tuple(m for m in MOTIONS if rng.random() < (0.55 if m == "breathing" else 0.5))
        motions = motions or (str(rng.choice(list(MOTIONS))),)
    big = base.shape[0]
    off = (big - size) / 2.0
    dy = np.zeros((n_frames, size, size), np.float32)
    dx = np.zeros_like(dy)
    for name in motions:
        fy, fx = MOTIONS[name](rng, size, n_frames)
        dy, dx = dy + fy, dx + fx
    yy, xx = np.mgrid[:size, :size].astype(np.float32) + off
    frames = np.empty((n_frames, size, size), np.float32)
    for t in range(n_frames):
        frames[t] = ndimage.map_coordinates(base, [yy + dy[t], xx + dx[t]], order=1, mode="reflect")
    return _intensity(frames, rng)


def _intensity(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smooth gain/offset change over time in a third of the clips."""
    if rng.random() < 0.33:
        course = _temporal(rng, frames.shape[0], periodic=rng.random() < 0.5)[:, None, None]
        frames = frames * (1 + 0.15 * course * rng.uniform(-1, 1)) + 0.08 * course * rng.uniform(-1, 1)
    return np.clip(frames, 0.0, 1.0).astype(np.float32)


def natural_clip(rng: np.random.Generator, size: int, n_frames: int = 16, p_texture: float = 0.4) -> np.ndarray:
    """A deformed clip of a photograph crop or texture: [n_frames, size, size] float32 in [0, 1]."""
    big = int(round(size * 1.4))
    return animate(natural.random_image(rng, big, p_texture), size, n_frames, rng)


def clip_batch(seed: int, n_clips: int, size: int, n_frames: int = 16,
               make: Callable = natural_clip) -> np.ndarray:
    """`n_clips` clips from one seed: [n_clips, n_frames, size, size] (deterministic per seed)."""
    rng = np.random.default_rng(seed)
    return np.stack([make(rng, size, n_frames) for _ in range(n_clips)])
