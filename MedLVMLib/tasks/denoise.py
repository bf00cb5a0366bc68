"""Zero-shot denoising, and the image-to-image analogy engine that super-resolution shares.

A low-dose CT slice is restored by the sentence [noisy_1, clean_1, ..., noisy_n, clean_n, noisy_query]
-> clean. Example pairs come from the shipped prompt library (phantom slices with low-dose noise simulated
in the projection domain at stated photon counts, `prompts.py`) or from the user (a noisy and a clean
volume on one grid, e.g. a phantom scanned twice).

Resolution. A model that reads 64x64 frames cannot denoise a 256x256 slice by resizing it (the noise
would be averaged away by the resize and the anatomy blurred by the way back), so frames larger than the
model are cut into model-sized TILES at native pixel size, with overlap, each tile restored by its own
sentence and the tiles blended back (`frames.tile_frames` / `untile_frames`, linear ramps in the overlaps).
Example pairs are tiled the same way and every query tile gets the example tiles that look MOST like it
(nearest in a coarse 8x8 thumbnail of the degraded input), the closest one last.

Functions:
    analogy_frames(model, pool_in, pool_out, queries, ...) -> restored model-sized frames
    restore_frames(model, pool_in, pool_out, queries, ...) -> restored native frames (tiles or resize)
    denoise_volume(ct, method="medlvm", examples=None, ...) -> DenoiseResult
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.tasks import common, output_checks
from MedLVMLib.tasks.prompts import Pairs
from MedLVMLib.tasks.segment import DEFAULT_SAMPLING, Sampling, block_size_of, generate_answers, resolve_model

if TYPE_CHECKING:
    from MedLVMLib.engine.lvm import MedLVMModel

METHODS = ("medlvm", "tv", "nlm", "bilateral")
TASK = "denoising"


@dataclass
class DenoiseResult:
    denoised: np.ndarray  # float32 HU [Z, Y, X]
    method: str
    notes: list
    warnings: list = field(default_factory=list)  # implausible output, one line each (see output_checks)


# ------------------------------------------------------------------------------------------ analogy engine


def _thumbnails(frames: np.ndarray, cells: int = 8) -> np.ndarray:
    """[N, s, s] -> [N, cells * cells] block means (for choosing similar examples)."""
    n, s, _ = frames.shape
    k = max(s // cells, 1)
    cut = frames[:, : k * (s // k), : k * (s // k)]
    return cut.reshape(n, s // k, k, s // k, k).mean(axis=(2, 4)).reshape(n, -1)


def choose_examples(pool_in: np.ndarray, queries: np.ndarray, n: int) -> np.ndarray:
    """Per query, the indices of the `n` pool frames most like it, most similar LAST. int [B, n]."""
    a, b = _thumbnails(queries), _thumbnails(pool_in)
    distance = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # (B, M)
    n = min(n, len(pool_in))
    return np.argsort(distance, axis=1, kind="stable")[:, :n][:, ::-1]


def analogy_frames(model: MedLVMModel, pool_in: np.ndarray, pool_out: np.ndarray, queries: np.ndarray,
                   n_examples: int = 3, sampling: Sampling = DEFAULT_SAMPLING,
                   progress: Optional[Progress] = None) -> np.ndarray:
    """[in_1, out_1, ..., in_n, out_n, query] -> out, for model-sized grey frames in [0, 1].

    Args:
        pool_in, pool_out: [M, s, s] candidate example pairs (s = model.image_size).
        queries: [B, s, s].
    Returns:
        float32 [B, s, s] in [0, 1], decoded answers.
    """
    from MedLVMLib.engine import lvm
    from MedLVMLib.engine.sentences import PairSentence

    progress = ensure(progress)
    chosen = choose_examples(pool_in, queries, n_examples)  # (B, n)
    codes_in = np.asarray(lvm.encode_images(model, pool_in, batch_size=sampling.batch_size), np.int64)
    codes_out = np.asarray(lvm.encode_images(model, pool_out, batch_size=sampling.batch_size), np.int64)
    codes_q = np.asarray(lvm.encode_images(model, queries, batch_size=sampling.batch_size), np.int64)
    layout = PairSentence(model.tokens_per_image, block_size_of(model))
    prompts = layout.build(codes_in[chosen], codes_out[chosen], codes_q)
    answers = generate_answers(model, prompts, sampling, progress)
    return np.asarray(lvm.decode_codes(model, answers, batch_size=sampling.batch_size), np.float32)


def _subsample(n: int, limit: int, seed: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def _resize(frames: np.ndarray, shape: tuple, order: int = 1) -> np.ndarray:
    from MedLVMLib.imaging import frames as frames_mod

    if frames.shape[1:] == tuple(shape):
        return frames
    return np.asarray(frames_mod.resize_frames(frames, tuple(shape), order=order), np.float32)


def restore_frames(model: MedLVMModel, pool_in: np.ndarray, pool_out: np.ndarray, queries: np.ndarray, *,
                   tile: bool = True, overlap: Optional[int] = None, n_examples: int = 3, max_pool: int = 512,
                   sampling: Sampling = DEFAULT_SAMPLING, progress: Optional[Progress] = None) -> np.ndarray:
    """Restore native frames [N, H, W] in [0, 1] from example pairs [E, h, w] (any size, same pixel size).

    With `tile` and frames larger than the model, frames and examples are cut into model-sized tiles at
    native pixel size (overlap default: a quarter tile); otherwise everything is resized to the model size.
    At most `max_pool` example tiles (a seeded random subset) are candidates for the examples.
    """
    s = model.image_size
    shape = queries.shape[1:]
    if tile and max(shape) > s:
        from MedLVMLib.imaging import frames as frames_mod

        overlap = s // 4 if overlap is None else overlap
        query_tiles = frames_mod.tile_frames(queries, s, overlap)  # (N, T, s, s)
        pool_a = frames_mod.tile_frames(pool_in, s, overlap).tiles.reshape(-1, s, s)
        pool_b = frames_mod.tile_frames(pool_out, s, overlap).tiles.reshape(-1, s, s)
        keep = _subsample(len(pool_a), max_pool, sampling.seed)
        restored = analogy_frames(model, pool_a[keep], pool_b[keep], query_tiles.tiles.reshape(-1, s, s),
                                  n_examples, sampling, progress)
        return frames_mod.untile_frames(restored.reshape(query_tiles.tiles.shape), query_tiles.layout)
    small = analogy_frames(model, _resize(pool_in, (s, s)), _resize(pool_out, (s, s)), _resize(queries, (s, s)),
                           n_examples, sampling, progress)
    return _resize(small, shape)


# ------------------------------------------------------------------------------------------ volumes


def window(model_or_window, hu: np.ndarray) -> np.ndarray:
    lo, hi = _window(model_or_window)
    return np.clip((np.asarray(hu, np.float32) - lo) / (hi - lo), 0.0, 1.0)


def unwindow(model_or_window, frames: np.ndarray) -> np.ndarray:
    lo, hi = _window(model_or_window)
    return (np.asarray(frames, np.float32) * (hi - lo) + lo).astype(np.float32)


def _window(model_or_window) -> tuple:
    if hasattr(model_or_window, "preprocess"):
        return float(model_or_window.preprocess.hu_min), float(model_or_window.preprocess.hu_max)
    lo, hi = model_or_window
    return float(lo), float(hi)


def check_volume(ct: np.ndarray, what: str = "CT") -> np.ndarray:
    ct = np.asarray(ct)
    if ct.ndim != 3:
        raise MedLVMError(f"{what}: expected a 3D volume [Z, Y, X], got shape {ct.shape} (a 2D image cannot be used)")
    if min(ct.shape) < 1 or not np.all(np.isfinite(ct)):
        raise MedLVMError(f"{what}: empty volume or NaN / infinite voxels")
    return ct.astype(np.float32, copy=False)


def keep_outside_window(restored: np.ndarray, original: np.ndarray, hu_window: tuple) -> np.ndarray:
    """The model only sees the HU window: where the input lies outside it (bone, metal, air below the
    window) its own value is kept, instead of the window's clipped bound."""
    lo, hi = hu_window
    outside = (original > hi) | (original < lo)
    return np.where(outside, original, restored).astype(np.float32)


def denoise_volume(ct: np.ndarray, *, method: str = "medlvm", model: Optional[MedLVMModel] = None,
                   examples: Optional[Pairs] = None, axis: str = "axial", pixel_mm: Optional[float] = None,
                   n_examples: int = 3, tile: bool = True, sampling: Sampling = DEFAULT_SAMPLING, device: str = "auto",
                   progress: Optional[Progress] = None) -> DenoiseResult:
    """Denoise a CT volume slice by slice.

    Args:
        ct: noisy HU volume [Z, Y, X].
        method: "medlvm" | "tv" | "nlm" | "bilateral".
        model: a loaded model, a model id / folder, or None (the bundled default).
        examples: (noisy, clean) HU slices to learn from in context; default: the shipped library at the
            dose level whose noise is nearest the input's.
        pixel_mm: in-plane pixel size of `ct`, used to bring library slices to the same pixel size.
        tile: restore at native pixel size in model-sized tiles (see the module docstring).
    Returns:
        DenoiseResult with the denoised HU volume.
    """
    ct = check_volume(ct)
    axis = common.check_axis(axis)
    if method not in METHODS:
        raise MedLVMError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    progress = ensure(progress)
    from MedLVMLib.imaging import frames as frames_mod

    slices = np.asarray(frames_mod.to_frames(ct, axis), np.float32)  # (N, H, W)
    notes: list = []
    warnings: list = []
    if method != "medlvm":
        out = _run_baseline(method, slices, progress)
        output_checks.require_finite(TASK, out, "denoised slices")
    else:
        model = resolve_model(model, device)
        if examples is None:
            from MedLVMLib.tasks import prompts

            examples = prompts.denoise_pairs(ct_slices=slices, pixel_mm=pixel_mm)
            notes.append(f"examples: library, {examples.degraded.shape[0]} pairs")
        progress.stage("denoising", None)
        restored = restore_frames(model, window(model, examples.degraded), window(model, examples.clean),
                                  window(model, slices), tile=tile, n_examples=n_examples, sampling=sampling,
                                  progress=progress)
        out = keep_outside_window(unwindow(model, restored), slices, _window(model))
        output_checks.require_finite(TASK, out, "denoised slices")
        out = output_checks.clip_to_input(TASK, out, slices, warnings)
        output_checks.warn_if_constant(TASK, out, slices, warnings)
    return DenoiseResult(np.asarray(frames_mod.from_frames(out, axis), np.float32), method, notes, warnings)


def _run_baseline(method: str, slices: np.ndarray, progress: Progress, hu_window: tuple = (-1000.0, 1000.0)):
    """A classic denoiser from `baselines.denoise`, slice by slice."""
    from MedLVMLib.baselines.denoise import DENOISE_BASELINES

    progress.stage(f"denoising ({method})", len(slices))
    out = np.empty_like(slices)
    for i, image in enumerate(slices):
        out[i] = DENOISE_BASELINES[method](image, hu_window=hu_window)
        progress.advance()
    return out


def volume_pairs(degraded: np.ndarray, clean: np.ndarray, axis: str = "axial",
                 slices: Optional[Sequence[int]] = None) -> Pairs:
    """User-supplied example volumes (same grid) -> slice pairs (every slice, or `slices`)."""
    from MedLVMLib.imaging import frames as frames_mod

    degraded, clean = check_volume(degraded, "noisy example"), check_volume(clean, "clean example")
    if degraded.shape != clean.shape:
        raise MedLVMError(f"example volumes differ in size: {degraded.shape[::-1]} vs {clean.shape[::-1]} (x, y, z)")
    a = np.asarray(frames_mod.to_frames(degraded, axis), np.float32)
    b = np.asarray(frames_mod.to_frames(clean, axis), np.float32)
    if slices is not None:
        a, b = a[list(slices)], b[list(slices)]
    return Pairs(a, b)
