"""Volume <-> frames <-> codes: the plumbing every task shares.

A CT volume [Z, Y, X] in HU becomes N square frames in [0, 1] (one per slice along `axis`, HU window
from the model's `PreprocessConfig`, resized to the model resolution), then N code rows
[N, tokens_per_image]. The way back decodes codes to frames, resizes them to the native slice shape,
undoes the window and restacks the slices. Non-square slices are stretched to the square model
input and back (the resize is exactly reversible up to interpolation), which keeps every voxel.

Slices are the unit of batching: `lvm.encode_images` / `lvm.decode_codes` chunk them to fit memory
(and halve the chunk on CUDA out-of-memory). Many volumes (all phases of a 4D CT) go through in ONE
call, so the model sees full batches.

Functions:
    volume_to_frames(volume_hu, axis, preprocess, image_size) -> [N, s, s] in [0, 1]
    frames_to_volume(frames, axis, shape, preprocess) -> HU [Z, Y, X]
    encode_volumes(model, volumes, axis) -> codes [V, N, tpi]
    decode_volumes(model, codes, axis, shape) -> HU [V, Z, Y, X]
    encode_volume / decode_to_volume: the single-volume forms.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import frames as frames_mod
from MedLVMLib.progress import Progress

if TYPE_CHECKING:
    from MedLVMLib.engine.lvm import MedLVMModel

AXES = ("axial", "coronal", "sagittal")
# Array axis of a [Z, Y, X] volume that each slicing walks along.
_SLICE_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}


def check_axis(axis: str) -> str:
    if axis not in AXES:
        raise MedLVMError(f"axis must be one of {', '.join(AXES)}, got '{axis}'")
    return axis


def slice_shape(shape: tuple[int, int, int], axis: str) -> tuple[int, int]:
    """(H, W) of one frame of a [Z, Y, X] volume sliced along `axis` (same as frames.to_frames)."""
    z, y, x = shape
    return {"axial": (y, x), "coronal": (z, x), "sagittal": (z, y)}[check_axis(axis)]


def n_slices(shape: tuple[int, int, int], axis: str) -> int:
    return int(shape[_SLICE_AXIS[check_axis(axis)]])


def _window(preprocess) -> tuple[float, float]:
    return float(preprocess.hu_min), float(preprocess.hu_max)


def volume_to_frames(volume_hu: np.ndarray, axis: str, preprocess, image_size: int) -> np.ndarray:
    """HU volume [Z, Y, X] -> float32 frames [N, image_size, image_size] in [0, 1].

    Args:
        volume_hu: one CT volume in HU.
        axis: "axial" | "coronal" | "sagittal" (the slicing; N = the number of slices along it).
        preprocess: a `PreprocessConfig` (HU window hu_min..hu_max mapped to 0..1, clipped).
        image_size: the model's square input resolution.
    """
    if volume_hu.ndim != 3:
        raise MedLVMError(f"expected a 3D volume [Z, Y, X], got shape {volume_hu.shape}")
    lo, hi = _window(preprocess)
    return frames_mod.volume_frames(volume_hu, lo, hi, check_axis(axis), image_size)


def frames_to_volume(frames: np.ndarray, axis: str, shape: tuple[int, int, int], preprocess) -> np.ndarray:
    """Frames [N, s, s] in [0, 1] -> float32 HU volume of `shape` (Z, Y, X); the inverse of volume_to_frames.

    Intensities outside the HU window cannot be recovered: they come back clipped to its bounds.
    """
    h, w = slice_shape(shape, axis)
    if frames.shape[0] != n_slices(shape, axis):
        raise MedLVMError(f"{frames.shape[0]} frames cannot fill a volume {shape} sliced {axis}ly")
    if frames.shape[1:] != (h, w):
        frames = frames_mod.resize_frames(frames, (h, w), order=1)
    lo, hi = _window(preprocess)
    volume = frames_mod.unwindow(np.clip(frames, 0.0, 1.0), lo, hi)
    return np.asarray(frames_mod.from_frames(volume, axis), dtype=np.float32)


def encode_volumes(model: MedLVMModel, volumes: np.ndarray, axis: str, batch_size: Optional[int] = None,
                   progress: Optional[Progress] = None) -> np.ndarray:
    """Codes of every slice of several volumes on one grid.

    Args:
        volumes: float HU [V, Z, Y, X].
    Returns:
        int64 [V, N, tokens_per_image], N = slices along `axis`.
    """
    from MedLVMLib.engine import lvm

    stack = np.concatenate(
        [volume_to_frames(v, axis, model.preprocess, model.image_size) for v in volumes], axis=0
    )  # (V*N, s, s)
    codes = lvm.encode_images(model, stack, batch_size=batch_size, progress=progress)
    return np.asarray(codes, dtype=np.int64).reshape(len(volumes), -1, model.tokens_per_image)


def decode_volumes(model: MedLVMModel, codes: np.ndarray, axis: str, shape: tuple[int, int, int],
                   batch_size: Optional[int] = None, progress: Optional[Progress] = None) -> np.ndarray:
    """HU volumes from codes.

    Args:
        codes: int [V, N, tokens_per_image] (N slices along `axis` of a volume of `shape`).
    Returns:
        float32 [V, Z, Y, X] in HU.
    """
    from MedLVMLib.engine import lvm

    codes = np.asarray(codes)
    v, n = codes.shape[:2]
    images = lvm.decode_codes(model, codes.reshape(v * n, -1), batch_size=batch_size, progress=progress)
    images = np.asarray(images, dtype=np.float32).reshape(v, n, *np.shape(images)[1:])  # (V, N, s, s)
    return np.stack([frames_to_volume(f, axis, shape, model.preprocess) for f in images])


def encode_volume(model: MedLVMModel, volume: np.ndarray, axis: str, batch_size: Optional[int] = None,
                  progress: Optional[Progress] = None) -> np.ndarray:
    """Codes [N, tokens_per_image] of one HU volume [Z, Y, X] sliced along `axis`."""
    return encode_volumes(model, volume[None], axis, batch_size, progress)[0]


def decode_to_volume(model: MedLVMModel, codes: np.ndarray, axis: str, shape: tuple[int, int, int],
                     batch_size: Optional[int] = None, progress: Optional[Progress] = None) -> np.ndarray:
    """HU volume [Z, Y, X] from codes [N, tokens_per_image]."""
    return decode_volumes(model, np.asarray(codes)[None], axis, shape, batch_size, progress)[0]


def reconstruct_volume(model: MedLVMModel, volume: np.ndarray, axis: str, batch_size: Optional[int] = None,
                       progress: Optional[Progress] = None) -> np.ndarray:
    """The volume as the tokenizer sees it: encode then decode (its blur and quantisation, in HU)."""
    codes = encode_volume(model, volume, axis, batch_size, progress)
    return decode_to_volume(model, codes, axis, volume.shape, batch_size, progress)


def check_model_pair(model: MedLVMModel) -> None:
    """Tokenizer and transformer must agree on the codebook: every code must be a transformer token."""
    codebook = int(model.tokenizer.config.codebook_size)
    tconf = model.transformer.config
    if int(tconf.vocab_size) < codebook or int(getattr(tconf, "codebook_size", codebook)) != codebook:
        raise MedLVMError(
            f"model '{model.model_id}': the tokenizer has {codebook} codes but the transformer has a vocabulary of "
            f"{tconf.vocab_size} (codebook_size {getattr(tconf, 'codebook_size', '?')}); they were not trained "
            "together. Use a tokenizer and transformer from the same model."
        )
