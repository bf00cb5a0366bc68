"""Sanity checks on what a task returns, run before anything is written.

A broken model (a tokenizer that decodes to NaN, weights that slipped past the load checks) or a numerical
slip must not reach the user as a plausible-looking CT. Two kinds of finding:

    errors (TaskOutputError, the task fails)   NaN or infinite voxels; values a task cannot produce (a bug);
    warnings (the task's result carries them)  values beyond the input's HU range (clipped to it); a constant
                                               output from a varying input; a label predicted far larger than
                                               its examples, or present on no example slice (dropped).

Each warning is one line starting with the task's name. It goes to the result's `warnings` list (for the
report and the Slicer panel) and to the log as a warning (the command line prints it).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from MedLVMLib.errors import TaskOutputError

log = logging.getLogger(__name__)

# A label predicted larger than this many times its largest example slice, on every slice, is implausible
# (and, for phases, this many times its volume in the labelled phase: breathing does not double an organ).
VOLUME_FACTOR = 2.0
TOLERANCE_HU = 1.0  # float rounding in resampling, not a finding


def warn(warnings: list, task: str, message: str) -> None:
    """Record `message` in the result's warnings and log it."""
    text = f"{task}: {message}"
    warnings.append(text)
    log.warning(text)


def require_finite(task: str, array: np.ndarray, what: str) -> None:
    """TaskOutputError when `array` holds NaN or infinite values."""
    bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise TaskOutputError(f"{task}: the {what} hold {bad:,} NaN or infinite values (of {np.size(array):,}); "
                              "the model is broken (corrupt or untrained weights?): use another model")


def require_within(task: str, array: np.ndarray, low: float, high: float, what: str) -> None:
    """TaskOutputError when `array` leaves [low, high], the values the task can produce."""
    lo, hi = float(np.min(array)), float(np.max(array))
    if lo < low - TOLERANCE_HU or hi > high + TOLERANCE_HU:
        raise TaskOutputError(f"{task}: the {what} span {lo:.0f}..{hi:.0f} HU, outside the {low:.0f}..{high:.0f} HU "
                              "this task can produce; this is a bug in MedLVM: please report it")


def clip_to_input(task: str, output: np.ndarray, ct: np.ndarray, warnings: list) -> np.ndarray:
    """`output` clipped to the HU range of the input `ct`, with a warning when anything was beyond it."""
    low, high = float(np.min(ct)), float(np.max(ct))
    beyond = int(np.count_nonzero((output < low - TOLERANCE_HU) | (output > high + TOLERANCE_HU)))
    if beyond:
        warn(warnings, task, f"{beyond:,} voxels ({100.0 * beyond / output.size:.2g} %) lay outside the input's "
                             f"range {low:.0f}..{high:.0f} HU (from {float(output.min()):.0f} to "
                             f"{float(output.max()):.0f} HU) and were clipped to it")
    return np.clip(output, low, high).astype(np.float32, copy=False)


def warn_if_constant(task: str, output: np.ndarray, ct: np.ndarray, warnings: list) -> None:
    """A warning when the output is one value everywhere although the input is not."""
    if output.size and np.ptp(output) == 0 and np.ptp(ct) > 0:
        warn(warnings, task, f"the output is {float(output.flat[0]):.0f} HU everywhere although the input varies; "
                             "the model is probably broken (try another model)")


# ------------------------------------------------------------------------------------------ segmentation


def label_name(label_id: int, names: Optional[dict]) -> str:
    name = (names or {}).get(int(label_id))
    return f"label {int(label_id)}" + (f" ({name})" if name else "")


def warn_unseen_labels(task: str, all_ids: Sequence[int], example_ids: Sequence[int], names: Optional[dict],
                       warnings: list) -> None:
    """A warning naming the labels of the label map that lie on no example slice (they are not segmented)."""
    unseen = [i for i in all_ids if i not in set(example_ids)]
    if unseen:
        listed = ", ".join(label_name(i, names) for i in unseen)
        warn(warnings, task, f"{listed}: on no example slice, so not segmented (draw a structure on an example slice "
                             "to segment it)")


def _counts(slots: np.ndarray, n_labels: int) -> np.ndarray:
    return np.bincount(np.asarray(slots, np.int64).ravel(), minlength=n_labels + 1)


def warn_oversized_slices(task: str, stack: np.ndarray, examples: Sequence[int], ids: Sequence[int],
                          names: Optional[dict], warnings: list) -> None:
    """Slot stack [N, H, W] (slices along the propagation axis): a warning per label whose predicted volume is
    more than VOLUME_FACTOR x its largest example slice x N slices."""
    largest = np.max([_counts(stack[e], len(ids)) for e in examples], axis=0)
    predicted = _counts(stack, len(ids))
    for slot, label_id in enumerate(ids, start=1):
        bound = VOLUME_FACTOR * largest[slot] * stack.shape[0]
        if predicted[slot] > bound:
            warn(warnings, task, f"{label_name(label_id, names)}: {predicted[slot]:,} voxels predicted, more than "
                                 f"{VOLUME_FACTOR:g} x its largest example slice ({largest[slot]:,} voxels) x "
                                 f"{stack.shape[0]} slices ({bound:,.0f}); the prediction is implausible: check it "
                                 "or label more example slices")


def warn_oversized_phases(task: str, slots: np.ndarray, from_phase: int, ids: Sequence[int],
                          names: Optional[dict], warnings: list) -> None:
    """Slot maps [P, Z, Y, X]: a warning per phase and label predicted more than VOLUME_FACTOR x its volume in
    the labelled phase."""
    labelled = _counts(slots[from_phase], len(ids))
    for phase in range(slots.shape[0]):
        if phase == from_phase:
            continue
        predicted = _counts(slots[phase], len(ids))
        for slot, label_id in enumerate(ids, start=1):
            if predicted[slot] > VOLUME_FACTOR * labelled[slot]:
                warn(warnings, task, f"{label_name(label_id, names)}: {predicted[slot]:,} voxels predicted in phase "
                                     f"{phase}, more than {VOLUME_FACTOR:g} x its {labelled[slot]:,} voxels in the "
                                     f"labelled phase {from_phase}; the prediction is implausible: check it")
