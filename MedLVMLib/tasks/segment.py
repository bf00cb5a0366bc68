"""Zero-shot segmentation: complete a label map from a few labelled slices, or carry it through a 4D CT.

Slice propagation: the user labels structures on a few slices (along any axis). Every other slice q gets
the sentence [slice_a, mask_a, slice_b, mask_b, ..., slice_q] -> mask_q, the examples being the labelled
slices NEAREST to q (the nearest one last, next to the query: `PairSentence` drops the first pairs when
the context is full).

Phase propagation (contour propagation): labels drawn on phase K of a 4D CT. For every other phase p and
slice position s the sentence is [K_{s+1}, mask_{s+1}, K_{s-1}, mask_{s-1}, K_s, mask_s, p_s] -> mask:
the same slice position of the labelled phase last, its neighbours before it.

Masks travel as RGB frames painted with the fixed palette (`palette.py`): label ids are renumbered to
palette slots, example masks are resized to the model resolution with nearest-neighbour, encoded in
colour, and the generated frame is read back by the nearest palette colour. The colours are calibrated
on the tokenizer: the reference colour of each slot is its mean colour in the example masks after an
encode/decode round trip. The model-resolution slot map goes back to the native slice grid by one-hot
linear interpolation then argmax (`palette.resize_slots`), so masks are smooth, not blocky.

Methods: "medlvm" (the model), and the baselines of `baselines.segment`: "nearest" (copy the nearest
labelled slice / the labelled phase) and "registration" (2D demons chained slice to slice from the nearest
labelled slice / 3D demons from the labelled phase to each phase, labels warped).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from MedLVMLib.engine import palette
from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.tasks import common, output_checks

if TYPE_CHECKING:
    from MedLVMLib.engine.lvm import MedLVMModel

METHODS = ("medlvm", "nearest", "registration")
TASK = "segmentation"


@dataclass(frozen=True)
class Sampling:
    """How the model writes its answer (LVM default: temperature 1, top-p 1; greedy is steadier for masks)."""

    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32


DEFAULT_SAMPLING = Sampling()

@dataclass
class SegmentResult:
    """labels: the completed label map with the input's ids, [Z, Y, X] (slices) or [P, Z, Y, X] (phases).

    segments: one dict per structure: {"name", "label", "colour": [r, g, b] in 0..1}.
    examples: the labelled slice indices (slices) or [K] (phases) the prediction started from.
    """

    labels: np.ndarray
    segments: list[dict]
    examples: list[int]
    method: str
    axis: str = "axial"
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # implausible output, one line each (see output_checks)


# ------------------------------------------------------------------------------------------ checks


def check_method(method: str) -> str:
    if method not in METHODS:
        raise MedLVMError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    return method


def check_inputs(ct: np.ndarray, labels: np.ndarray, what_ct: str = "CT", what_labels: str = "labels") -> None:
    """Shape, emptiness and palette checks that run before any heavy work."""
    ct, labels = np.asarray(ct), np.asarray(labels)
    if ct.ndim != 3:
        raise MedLVMError(f"{what_ct}: expected a 3D volume [Z, Y, X], got shape {ct.shape} "
                          "(a 2D image cannot be used)")
    if labels.shape != ct.shape:
        raise MedLVMError(
            f"{what_labels}: grid {labels.shape[::-1]} (x, y, z) differs from the {what_ct} grid {ct.shape[::-1]}; "
            "resample the label map onto the CT first"
        )
    if not np.any(labels):
        raise MedLVMError(f"{what_labels}: the label map is empty; label at least one structure on one slice")
    palette.compact_labels(labels, what=what_labels)  # raises beyond the palette


def parse_slices(text: Optional[str]) -> Optional[list[int]]:
    """'3,10,20' or '3-5,9' -> [3, 4, 5, 9]; None/'' -> None (use every slice that has a label)."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise MedLVMError(f"--slices: cannot read '{text}'; give slice indices such as 10,25,40 or 10-12") from None
    return sorted(set(out))


def labelled_slices(slots: np.ndarray, axis: str, slices: Optional[Sequence[int]] = None) -> list[int]:
    """The example slices: the given ones (range-checked) or every slice with a label along `axis`."""
    n = common.n_slices(slots.shape, axis)
    if slices is not None:
        bad = [s for s in slices if not 0 <= s < n]
        if bad:
            raise MedLVMError(f"--slices: {bad} outside 0..{n - 1} ({n} {axis} slices)")
        if not slices:
            raise MedLVMError("--slices: no slice given")
        return sorted(set(int(s) for s in slices))
    per_slice = _to_slices(slots, axis).reshape(n, -1).any(axis=1)
    return [int(i) for i in np.flatnonzero(per_slice)]


def nearest_examples(examples: Sequence[int], query: int, n: int) -> list[int]:
    """The `n` example indices nearest to `query`, farthest first (nearest last, next to the query)."""
    ranked = sorted(examples, key=lambda e: (abs(e - query), e))[:n]
    return ranked[::-1]


def segment_list(ids: Sequence[int], names: Optional[dict] = None) -> list[dict]:
    """[{"name", "label", "colour"}] for each original id (slot k = ids[k-1]); names: id -> name."""
    names = names or {}
    return [
        {"name": str(names.get(int(i), f"label {int(i)}")), "label": int(i), "colour": list(palette.colour(k))}
        for k, i in enumerate(ids, start=1)
    ]


def write_segment_list(segments: list[dict], path: Path) -> None:
    Path(path).write_text(json.dumps({"segments": segments}, indent=2))


# ------------------------------------------------------------------------------------------ model I/O


def _to_slices(volume: np.ndarray, axis: str) -> np.ndarray:
    """[Z, Y, X] -> [N, H, W] along `axis`, the orientation `frames.to_frames` uses."""
    from MedLVMLib.imaging import frames

    return np.asarray(frames.to_frames(volume, axis))


def _from_slices(stack: np.ndarray, axis: str) -> np.ndarray:
    from MedLVMLib.imaging import frames

    return np.asarray(frames.from_frames(stack, axis))


def _resize_nearest(stack: np.ndarray, size: int) -> np.ndarray:
    """Slot maps [N, H, W] -> [N, size, size] by nearest neighbour (pixel centres aligned)."""
    n, h, w = stack.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
    return stack[:, rows][:, :, cols]


def encode_rgb(model: MedLVMModel, rgb: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """RGB frames [N, s, s, 3] in [0, 1] (s = model.image_size) -> codes int64 [N, tokens_per_image]."""
    import torch

    out = []
    for start in range(0, len(rgb), batch_size):
        chunk = torch.as_tensor(np.ascontiguousarray(rgb[start:start + batch_size].transpose(0, 3, 1, 2)))
        with torch.no_grad():
            codes = model.tokenizer.encode(chunk.to(device=model.device, dtype=_dtype(model)))  # (B, h, w)
        out.append(codes.reshape(codes.shape[0], -1).cpu().numpy())
    return np.concatenate(out).astype(np.int64)


def decode_rgb(model: MedLVMModel, codes: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Codes [N, tokens_per_image] -> RGB frames float32 [N, s, s, 3] in [0, 1]."""
    import torch

    side = int(round(np.sqrt(model.tokens_per_image)))
    out = []
    for start in range(0, len(codes), batch_size):
        chunk = torch.as_tensor(np.asarray(codes[start:start + batch_size]).reshape(-1, side, side))
        with torch.no_grad():
            images = model.tokenizer.decode(chunk.to(model.device))  # (B, 3, H, W)
        out.append(images.float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _dtype(model: MedLVMModel):
    import torch

    return next(model.tokenizer.parameters(), torch.zeros(())).dtype


def generate_answers(model: MedLVMModel, prompts: np.ndarray, sampling: Sampling, progress: Progress) -> np.ndarray:
    """One answer image per prompt row: int64 [B, tokens_per_image]."""
    from MedLVMLib.engine import lvm

    generated = lvm.generate(model, prompts, 1, greedy=sampling.greedy, temperature=sampling.temperature,
                             top_p=sampling.top_p, seed=sampling.seed, batch_size=sampling.batch_size,
                             progress=progress)
    return np.asarray(generated, np.int64).reshape(len(prompts), -1)


@dataclass
class _Encoded:
    """Example slices and masks of one volume as codes, and the calibrated palette."""

    ct_codes: np.ndarray  # (N, tpi)
    mask_codes: dict  # slice index -> (tpi,)
    colours: np.ndarray  # (K + 1, 3)


def _encode_examples(model: MedLVMModel, ct: np.ndarray, slot_stack: np.ndarray, examples: Sequence[int],
                     axis: str, n_labels: int, sampling: Sampling) -> _Encoded:
    from MedLVMLib.engine import lvm

    frames = common.volume_to_frames(ct, axis, model.preprocess, model.image_size)  # (N, s, s)
    ct_codes = np.asarray(lvm.encode_images(model, frames, batch_size=sampling.batch_size), dtype=np.int64)
    small = _resize_nearest(slot_stack[list(examples)], model.image_size)  # (E, s, s)
    codes = encode_rgb(model, palette.render(small), sampling.batch_size)
    colours = palette.calibrated_colours(decode_rgb(model, codes, sampling.batch_size), small, n_labels)
    return _Encoded(ct_codes, {int(e): codes[i] for i, e in enumerate(examples)}, colours)


def _answers_to_slots(model: MedLVMModel, answers: np.ndarray, colours: np.ndarray, n_labels: int,
                      shape: tuple[int, int], sampling: Sampling) -> np.ndarray:
    rgb = decode_rgb(model, answers, sampling.batch_size)  # (B, s, s, 3)
    return palette.resize_slots(palette.read_labels(rgb, n_labels, colours), shape, n_labels)


# ------------------------------------------------------------------------------------------ slices


def _medlvm_slices(model: MedLVMModel, ct: np.ndarray, slot_stack: np.ndarray, examples: list[int], axis: str,
                   n_labels: int, n_examples: int, sampling: Sampling, progress: Progress) -> np.ndarray:
    from MedLVMLib.engine.sentences import PairSentence

    enc = _encode_examples(model, ct, slot_stack, examples, axis, n_labels, sampling)
    labelled = set(examples)
    queries = [q for q in range(slot_stack.shape[0]) if q not in labelled]
    out = slot_stack.copy()
    if not queries:
        return out
    n_use = min(n_examples, len(examples))
    chosen = [nearest_examples(examples, q, n_use) for q in queries]  # (B, n)
    layout = PairSentence(model.tokens_per_image, block_size_of(model))
    prompts = layout.build(
        enc.ct_codes[np.asarray(chosen)],
        np.stack([np.stack([enc.mask_codes[e] for e in row]) for row in chosen]),
        enc.ct_codes[queries],
    )
    answers = generate_answers(model, prompts, sampling, progress)
    out[queries] = _answers_to_slots(model, answers, enc.colours, n_labels, slot_stack.shape[1:], sampling)
    return out


def block_size_of(model: MedLVMModel) -> Optional[int]:
    return getattr(model.transformer.config, "block_size", None)


def propagate_slices(ct: np.ndarray, labels: np.ndarray, *, slices: Optional[Sequence[int]] = None,
                     axis: str = "axial", method: str = "medlvm", model: Optional[MedLVMModel] = None,
                     n_examples: int = 3, spacing: Optional[Sequence[float]] = None,
                     names: Optional[dict] = None, sampling: Sampling = DEFAULT_SAMPLING, device: str = "auto",
                     progress: Optional[Progress] = None) -> SegmentResult:
    """Complete a label map from its labelled slices.

    Args:
        ct: HU volume [Z, Y, X].
        labels: integer label map on the same grid; only the example slices are read.
        slices: the example slice indices along `axis` (default: every slice with a label).
        method: "medlvm" | "nearest" | "registration".
        model: a loaded model, a model id / folder, or None (the bundled default); loaded after the checks.
        n_examples: example pairs per sentence (the nearest labelled slices).
        spacing: ITK (x, y, z) voxel size, used by "registration".
        names: id -> structure name for the segment list.
    Returns:
        SegmentResult with labels [Z, Y, X] (the input's ids; example slices kept as given).
    """
    axis, method = common.check_axis(axis), check_method(method)
    check_inputs(ct, labels)
    examples = labelled_slices(np.asarray(labels), axis, slices)
    ids = [int(i) for i in np.unique(_to_slices(np.asarray(labels), axis)[examples]) if i != 0]
    if not ids:
        raise MedLVMError(f"labels: the example slices {examples} hold no label; label a structure on them")
    warnings: list[str] = []
    all_ids = [int(i) for i in np.unique(labels) if i != 0]
    output_checks.warn_unseen_labels(TASK, all_ids, ids, names, warnings)
    compact = palette.compact_labels(labels, ids)  # labels on no example slice become background
    slot_stack = _to_slices(compact.slots, axis)  # (N, H, W)
    progress = ensure(progress)
    if method == "medlvm":
        model = resolve_model(model, device)
        result = _medlvm_slices(model, ct, slot_stack, examples, axis, len(compact.ids), n_examples, sampling, progress)
    else:
        result = _to_slices(_baseline_slices(method, ct, compact.slots, examples, axis, spacing, progress), axis)
    output_checks.warn_oversized_slices(TASK, result, examples, compact.ids, names, warnings)
    volume = palette.expand_labels(_from_slices(result, axis), compact.ids)
    return SegmentResult(volume, segment_list(compact.ids, names), examples, method, axis, warnings=warnings)


def _grid(spacing: Optional[Sequence[float]]) -> Geometry:
    return Geometry(spacing=tuple(float(v) for v in spacing)) if spacing is not None else Geometry()


def _baseline_slices(method: str, ct: np.ndarray, slots: np.ndarray, examples: list[int], axis: str,
                     spacing: Optional[Sequence[float]], progress: Progress) -> np.ndarray:
    """`baselines.segment`: "nearest" copies the nearest labelled slice, "registration" chains 2D demons
    registrations slice to slice from it. Slot map [Z, Y, X] in, slot map out."""
    from MedLVMLib.baselines.segment import SEGMENT_BASELINES

    if method == "nearest":
        return SEGMENT_BASELINES["nearest-slice"](ct, slots, examples, axis)
    return SEGMENT_BASELINES["registration"](ct, slots, examples, axis, geometry=_grid(spacing), progress=progress)


def resolve_model(model, device: str = "auto") -> MedLVMModel:
    """A loaded model as is; None (the bundled default), an id or a folder loaded with `lvm.load_model`."""
    if model is None or isinstance(model, (str, Path)):
        from MedLVMLib.engine import lvm

        return lvm.load_model(model, device=device)
    return model


# ------------------------------------------------------------------------------------------ phases


def _medlvm_phases(model: MedLVMModel, phases: np.ndarray, slot_stack: np.ndarray, from_phase: int, axis: str,
                   n_labels: int, n_examples: int, sampling: Sampling, progress: Progress) -> np.ndarray:
    """Slot stacks [P, N, H, W]: phase `from_phase` as given, the others generated slice by slice."""
    from MedLVMLib.engine import lvm
    from MedLVMLib.engine.sentences import PairSentence

    n = slot_stack.shape[0]
    enc = _encode_examples(model, phases[from_phase], slot_stack, list(range(n)), axis, n_labels, sampling)
    targets = [p for p in range(len(phases)) if p != from_phase]
    frames = np.concatenate([common.volume_to_frames(phases[p], axis, model.preprocess, model.image_size)
                             for p in targets])
    query = np.asarray(lvm.encode_images(model, frames, batch_size=sampling.batch_size), dtype=np.int64)
    chosen = [nearest_examples(range(n), s, min(n_examples, n)) for s in range(n)] * len(targets)
    layout = PairSentence(model.tokens_per_image, block_size_of(model))
    prompts = layout.build(enc.ct_codes[np.asarray(chosen)],
                           np.stack([np.stack([enc.mask_codes[e] for e in row]) for row in chosen]), query)
    answers = generate_answers(model, prompts, sampling, progress)
    slots = _answers_to_slots(model, answers, enc.colours, n_labels, slot_stack.shape[1:], sampling)
    out = np.repeat(slot_stack[None], len(phases), axis=0)
    out[targets] = slots.reshape(len(targets), *slot_stack.shape)
    return out


def propagate_phases(phases: np.ndarray, labels: np.ndarray, from_phase: int, *, axis: str = "axial",
                     method: str = "medlvm", model: Optional[MedLVMModel] = None, n_examples: int = 3,
                     spacing: Optional[Sequence[float]] = None, names: Optional[dict] = None,
                     sampling: Sampling = DEFAULT_SAMPLING, device: str = "auto",
                     progress: Optional[Progress] = None) -> SegmentResult:
    """Carry labels drawn on phase `from_phase` of a 4D CT to every phase.

    Args:
        phases: HU [P, Z, Y, X].
        labels: integer label map [Z, Y, X] on phase `from_phase`'s grid.
        n_examples: slice positions of the labelled phase per sentence (the query's own position last).
    Returns:
        SegmentResult with labels [P, Z, Y, X] (phase `from_phase` kept as given).
    """
    axis, method = common.check_axis(axis), check_method(method)
    phases = np.asarray(phases)
    if phases.ndim != 4 or phases.shape[0] < 2:
        raise MedLVMError(f"phase propagation needs a 4D CT [P, Z, Y, X] with P >= 2, got shape {phases.shape}")
    if not 0 <= from_phase < phases.shape[0]:
        raise MedLVMError(f"--from-phase {from_phase} outside 0..{phases.shape[0] - 1}")
    check_inputs(phases[from_phase], labels, what_ct=f"phase {from_phase}")
    compact = palette.compact_labels(labels)
    progress = ensure(progress)
    if method == "medlvm":
        model = resolve_model(model, device)
        stacks = _medlvm_phases(model, phases, _to_slices(compact.slots, axis), from_phase, axis,
                                len(compact.ids), n_examples, sampling, progress)
        slots = np.stack([_from_slices(s, axis) for s in stacks])
    elif method == "nearest":
        slots = np.repeat(compact.slots[None], phases.shape[0], axis=0)
    else:
        from MedLVMLib.baselines.segment import propagate_phases as register_phases

        slots = register_phases(Phases(phases.astype(np.float32), _grid(spacing)), compact.slots, from_phase,
                                progress=progress)
    warnings: list[str] = []
    output_checks.warn_oversized_phases(TASK, slots, from_phase, compact.ids, names, warnings)
    return SegmentResult(palette.expand_labels(slots, compact.ids), segment_list(compact.ids, names),
                         [from_phase], method, axis, warnings=warnings)
