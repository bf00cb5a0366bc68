"""The fixed colour palette for masks in visual sentences: label id -> RGB, and back.

LVM was trained on segmentation pairs whose masks were painted with a fixed palette (one RGB colour per
class) and writes its answers the same way, so MedLVM draws example masks with a fixed palette too and
reads a generated mask back by the NEAREST palette colour per pixel.

Ids here are palette slots 0..N_COLOURS-1 (0 = background, black). A label map with arbitrary ids
(e.g. TotalSegmentator's 52 = aorta) is first made compact with `compact_labels` (its k-th distinct
non-zero id -> slot k, in increasing order), so one palette serves every label map of up to
`MAX_LABELS` structures.

The colours are 21 maximally distinct colours (a well-known set made for charts) after black: well apart
in RGB, the first four also well apart in brightness (channel mean 0.67, 0.43, 0.86, 0.29), so that even a
tokenizer trained on grey CT, which keeps brightness better than hue, keeps them apart. `read_labels` can
also match against colours *calibrated* on the tokenizer itself (the mean decoded colour of each label in
the example masks): `calibrated_colours`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from MedLVMLib.errors import MedLVMError

# Slot -> RGB (uint8). Slot 0 is the background.
PALETTE = np.array(
    [
        (0, 0, 0),
        (255, 225, 25),  # yellow   (channel mean 0.67)
        (0, 130, 200),  # blue      (0.43)
        (250, 190, 212),  # pink    (0.86)
        (170, 110, 40),  # brown    (0.29)
        (60, 180, 75),  # green
        (230, 25, 75),  # red
        (70, 240, 240),  # cyan
        (145, 30, 180),  # purple
        (245, 130, 48),  # orange
        (240, 50, 230),  # magenta
        (210, 245, 60),  # lime
        (0, 128, 128),  # teal
        (220, 190, 255),  # lavender
        (255, 250, 200),  # beige
        (128, 0, 0),  # maroon
        (170, 255, 195),  # mint
        (128, 128, 0),  # olive
        (255, 215, 180),  # apricot
        (0, 0, 128),  # navy
        (128, 128, 128),  # grey
        (255, 255, 255),  # white
    ],
    dtype=np.uint8,
)
N_COLOURS = int(PALETTE.shape[0])
MAX_LABELS = N_COLOURS - 1


class CompactLabels(NamedTuple):
    """A label map renumbered to palette slots. `ids[k - 1]` is the original id of slot k."""

    slots: np.ndarray  # uint8, same shape as the input, values 0..len(ids)
    ids: list[int]


def colour(slot: int) -> tuple[float, float, float]:
    """RGB in [0, 1] of one palette slot (e.g. for a Slicer segment's colour)."""
    check_slots(np.asarray([slot]))
    return tuple(float(c) / 255.0 for c in PALETTE[int(slot)])  # type: ignore[return-value]


def check_slots(slots: np.ndarray, what: str = "label map") -> None:
    """MedLVMError unless every value is a palette slot (0..MAX_LABELS)."""
    slots = np.asarray(slots)
    if slots.size and (slots.min() < 0 or slots.max() >= N_COLOURS):
        raise MedLVMError(
            f"{what}: label values {int(slots.min())}..{int(slots.max())} are beyond the palette of "
            f"{MAX_LABELS} structures (slots 1..{MAX_LABELS}); use compact_labels or fewer structures"
        )


def compact_labels(labels: np.ndarray, ids: Optional[Sequence[int]] = None, what: str = "label map") -> CompactLabels:
    """Renumber a label map to palette slots 1..K (0 stays background).

    Args:
        labels: integer label map (any shape).
        ids: the original ids to keep, in slot order (default: every distinct non-zero id, sorted);
            voxels of other ids become background.
    Raises:
        MedLVMError when there are more structures than palette colours, or non-integer labels.
    """
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) and not np.issubdtype(labels.dtype, np.bool_):
        if np.any(labels != np.round(labels)):
            raise MedLVMError(f"{what}: labels must be integers, got non-integer values")
    labels = labels.astype(np.int64)
    if np.any(labels < 0):
        raise MedLVMError(f"{what}: negative label values")
    keep = sorted(int(v) for v in np.unique(labels) if v != 0) if ids is None else [int(v) for v in ids]
    if len(keep) > MAX_LABELS:
        raise MedLVMError(
            f"{what}: {len(keep)} structures are beyond the palette of {MAX_LABELS} colours; "
            f"choose at most {MAX_LABELS} structures"
        )
    lookup = np.zeros(int(max(keep + [int(labels.max(initial=0))])) + 1, dtype=np.uint8)
    for slot, label_id in enumerate(keep, start=1):
        if label_id < lookup.size:
            lookup[label_id] = slot
    return CompactLabels(lookup[labels], keep)


def expand_labels(slots: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Inverse of `compact_labels`: slots 1..K back to the original ids. Returns uint8 or int32."""
    table = np.asarray([0] + [int(i) for i in ids], dtype=np.int64)
    slots = np.asarray(slots)
    if slots.size and slots.max() >= table.size:
        raise MedLVMError(f"slot {int(slots.max())} has no original id (only {len(ids)} structures)")
    out = table[slots]
    return out.astype(np.uint8) if table.max(initial=0) <= 255 else out.astype(np.int32)


def render(slots: np.ndarray, colours: Optional[np.ndarray] = None) -> np.ndarray:
    """Paint slot maps [..., H, W] as RGB float32 [..., H, W, 3] in [0, 1]."""
    slots = np.asarray(slots)
    check_slots(slots)
    table = (PALETTE if colours is None else np.asarray(colours)).astype(np.float32)
    if table.max(initial=0.0) > 1.0:
        table = table / 255.0
    return table[slots.astype(np.int64)]


def read_labels(rgb: np.ndarray, n_labels: int, colours: Optional[np.ndarray] = None) -> np.ndarray:
    """Nearest palette colour per pixel.

    Args:
        rgb: float [..., H, W, 3] in [0, 1] (a decoded frame).
        n_labels: only slots 0..n_labels compete (the structures in the sentence), which makes the
            read-back robust to colours a tokenizer shifts towards an unused palette entry.
        colours: optional [n_labels + 1, 3] colours in [0, 1] to match against instead of the nominal
            palette (see `calibrated_colours`).
    Returns:
        uint8 slot map [..., H, W].
    """
    if not 0 <= n_labels <= MAX_LABELS:
        raise MedLVMError(f"{n_labels} structures are beyond the palette of {MAX_LABELS}")
    table = PALETTE[: n_labels + 1].astype(np.float32) / 255.0 if colours is None else np.asarray(colours, np.float32)
    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.shape[-1] != 3:
        raise MedLVMError(f"read_labels needs RGB frames [..., H, W, 3], got {rgb.shape}")
    # (..., H, W, K): squared distance to each candidate colour
    distance = ((rgb[..., None, :] - table) ** 2).sum(axis=-1)
    return distance.argmin(axis=-1).astype(np.uint8)


def calibrated_colours(decoded_rgb: np.ndarray, slots: np.ndarray, n_labels: int, min_pixels: int = 4) -> np.ndarray:
    """Each label's mean colour in decoded example masks (its colour as the tokenizer reproduces it).

    Args:
        decoded_rgb: float [N, H, W, 3], the example masks after an encode/decode round trip.
        slots: uint8 [N, H, W], the slot maps they were painted from.
        n_labels: slots 0..n_labels are calibrated.
        min_pixels: a slot seen on fewer pixels keeps its nominal palette colour.
    Returns:
        float32 [n_labels + 1, 3] in [0, 1].
    """
    table = PALETTE[: n_labels + 1].astype(np.float32) / 255.0
    for slot in range(n_labels + 1):
        inside = slots == slot
        if int(inside.sum()) >= min_pixels:
            table[slot] = decoded_rgb[inside].mean(axis=0)
    return table


def resize_slots(slots: np.ndarray, shape: tuple[int, int], n_labels: int) -> np.ndarray:
    """Resize slot maps [N, H, W] to [N, h, w]: one-hot, linear interpolation, then argmax.

    Smoother than nearest-neighbour on upsampling (a 64x64 mask to a 512x512 slice does not look
    blocky) and never invents a label that is not present nearby.
    """
    from scipy import ndimage

    slots = np.asarray(slots)
    n, h, w = slots.shape
    if (h, w) == tuple(shape):
        return slots.astype(np.uint8)
    zoom = (1.0, shape[0] / h, shape[1] / w)
    scores = np.stack(
        [ndimage.zoom((slots == k).astype(np.float32), zoom, order=1, mode="nearest", grid_mode=True)
         for k in range(n_labels + 1)],
        axis=-1,
    )  # (N, h, w, K)
    return scores.argmax(axis=-1).astype(np.uint8)
