"""tasks/output_checks.py: each check on hand-made arrays, at and just past its limit."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError, TaskOutputError
from MedLVMLib.tasks import output_checks


@pytest.mark.parametrize("value, count", [(np.nan, 1), (np.inf, 1), (-np.inf, 1), (0.0, 0)])
def test_require_finite(value, count):
    array = np.zeros((2, 3, 4), np.float32)
    array[1, 2, 3] = value
    if not count:
        output_checks.require_finite("denoising", array, "denoised slices")
        return
    with pytest.raises(TaskOutputError, match="denoising: the denoised slices hold 1 NaN or infinite values .of 24") \
            as info:
        output_checks.require_finite("denoising", array, "denoised slices")
    assert isinstance(info.value, MedLVMError)  # the command line prints it as one line, status 2


@pytest.mark.parametrize("low, high, fails", [(-1000.0, 1000.0, False), (-1000.0, 1001.0, False),
                                              (-1000.0, 999.0, True), (-998.0, 1000.0, True)])
def test_require_within_allows_rounding_only(low, high, fails):
    array = np.array([-1000.5, 0.0, 1000.5], np.float32)
    if not fails:
        output_checks.require_within("motion", array, low, high, "predicted phases")
        return
    with pytest.raises(TaskOutputError, match="motion: the predicted phases span -1000..1000 HU, outside"):
        output_checks.require_within("motion", array, low, high, "predicted phases")


def test_clip_to_input_clips_and_says_how_much(caplog):
    ct = np.array([-900.0, 400.0], np.float32)
    output = np.array([-1127.0, -900.5, 0.0, 401.0, 700.0], np.float32)  # 2 beyond the 1 HU tolerance
    warnings: list = []
    with caplog.at_level(logging.WARNING):
        clipped = output_checks.clip_to_input("super-resolution", output, ct, warnings)
    np.testing.assert_array_equal(clipped, [-900.0, -900.0, 0.0, 400.0, 400.0])
    assert warnings == ["super-resolution: 2 voxels (40 %) lay outside the input's range -900..400 HU "
                        "(from -1127 to 700 HU) and were clipped to it"]
    assert [r.getMessage() for r in caplog.records] == warnings


def test_clip_to_input_is_silent_within_the_range():
    warnings: list = []
    output_checks.clip_to_input("denoising", np.array([-900.4, 400.9], np.float32), np.array([-900.0, 400.0]),
                                warnings)
    assert warnings == []


@pytest.mark.parametrize("output, ct, warned", [([-985.0] * 3, [-1000.0, 0.0, 40.0], True),
                                                ([-985.0, -984.0, -985.0], [-1000.0, 0.0, 40.0], False),
                                                ([40.0] * 3, [40.0] * 3, False)])
def test_warn_if_constant(output, ct, warned):
    warnings: list = []
    output_checks.warn_if_constant("motion", np.asarray(output), np.asarray(ct), warnings)
    assert warnings == (["motion: the output is -985 HU everywhere although the input varies; the model is probably "
                         "broken (try another model)"] if warned else [])


@pytest.mark.parametrize("predicted, warned", [(48, False), (49, True)])
def test_oversized_slices_at_the_bound(predicted, warned):
    """Largest example slice: 8 voxels; 3 slices; factor 2: at most 48 voxels are plausible."""
    stack = np.zeros((3, 10, 10), np.uint8)
    stack[0].flat[:8] = 1
    stack[2].flat[:3] = 1
    stack[1].flat[: predicted - 11] = 1
    warnings: list = []
    output_checks.warn_oversized_slices("segmentation", stack, [0, 2], [7], {7: "tumour"}, warnings)
    assert len(warnings) == warned
    if warned:
        assert warnings[0].startswith("segmentation: label 7 (tumour): 49 voxels predicted, more than 2 x its "
                                      "largest example slice (8 voxels) x 3 slices (48)")


def test_oversized_phases_name_the_phase():
    slots = np.zeros((3, 2, 4, 4), np.uint8)
    slots[0].flat[:5] = 1  # labelled phase: 5 voxels
    slots[1].flat[:10] = 1  # exactly 2x: plausible
    slots[2].flat[:11] = 1
    warnings: list = []
    output_checks.warn_oversized_phases("segmentation", slots, 0, [3], None, warnings)
    assert len(warnings) == 1 and warnings[0].startswith("segmentation: label 3: 11 voxels predicted in phase 2")


def test_unseen_labels_are_named():
    warnings: list = []
    output_checks.warn_unseen_labels("segmentation", [2, 5, 9], [5], {9: "vertebra"}, warnings)
    assert warnings == ["segmentation: label 2, label 9 (vertebra): on no example slice, so not segmented "
                        "(draw a structure on an example slice to segment it)"]
