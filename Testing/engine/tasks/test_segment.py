"""Segmentation / contour propagation: example choice, each method end to end (tiny random model), hand-computed
DSC of a known shift, and every kind of bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from MedLVMLib.engine import lvm, palette
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.tasks import segment


@pytest.fixture(scope="module")
def model():
    return lvm.random_model("tiny")


def moving_square(n_slices: int = 6, shape=(20, 24), step: int = 1, size: int = 4):
    """A bright square that moves `step` columns per axial slice, in air; labels 5 on the square."""
    ct = np.full((n_slices,) + shape, -900.0, np.float32)
    labels = np.zeros(ct.shape, np.uint8)
    for z in range(n_slices):
        c = 6 + step * z
        ct[z, 8:8 + size, c:c + size] = 60.0
        labels[z, 8:8 + size, c:c + size] = 5
    return ct, labels


@pytest.mark.parametrize("examples, query, n, expected", [
    ([0, 5, 10], 4, 2, [0, 5]), ([0, 5, 10], 9, 3, [0, 5, 10]), ([2, 4], 3, 1, [2]), ([2, 4], 3, 2, [4, 2]),
])
def test_nearest_examples_put_the_nearest_last(examples, query, n, expected):
    assert segment.nearest_examples(examples, query, n) == expected


@pytest.mark.parametrize("text, expected", [("3,1,2", [1, 2, 3]), ("4-6,1", [1, 4, 5, 6]), ("", None), (None, None)])
def test_parse_slices(text, expected):
    assert segment.parse_slices(text) == expected


def test_parse_slices_rejects_garbage():
    with pytest.raises(MedLVMError, match="--slices"):
        segment.parse_slices("a,b")


def test_labelled_slices_default_to_every_labelled_slice():
    _, labels = moving_square()
    labels[2] = 0
    assert segment.labelled_slices(labels, "axial") == [0, 1, 3, 4, 5]
    assert segment.labelled_slices(labels, "axial", [4, 1]) == [1, 4]


def test_nearest_copy_of_a_shifted_square_has_the_hand_computed_dice():
    # the square moves 2 columns per slice: slice 1 copied from slice 0 overlaps 4 x 2 of 4 x 4 pixels
    ct, labels = moving_square(step=2)
    result = segment.propagate_slices(ct, labels, slices=[0], method="nearest")
    assert metrics.dice(result.labels[1] == 5, labels[1] == 5) == pytest.approx(2 * 8 / 32)
    assert metrics.dice(result.labels[2] == 5, labels[2] == 5) == pytest.approx(0.0)
    np.testing.assert_array_equal(result.labels[0], labels[0])


def test_registration_follows_a_shifted_square_better_than_copying():
    ct, labels = moving_square(step=1, size=6)
    copy = segment.propagate_slices(ct, labels, slices=[0, 5], method="nearest")
    reg = segment.propagate_slices(ct, labels, slices=[0, 5], method="registration", spacing=(1.0, 1.0, 2.0))
    d_copy = np.mean([metrics.dice(copy.labels[z], labels[z]) for z in (1, 2, 3, 4)])
    d_reg = np.mean([metrics.dice(reg.labels[z], labels[z]) for z in (1, 2, 3, 4)])
    assert d_reg > d_copy


@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_medlvm_slice_propagation_end_to_end(model, axis):
    ct, labels = moving_square()
    labels[:, 8:10, :] = np.where(labels[:, 8:10, :] > 0, 9, 0)  # a second structure, id 9
    n = {"axial": 6, "coronal": 20, "sagittal": 24}[axis]
    slices = [0, n - 1] if axis == "axial" else [9, 10]
    result = segment.propagate_slices(ct, labels, slices=slices, axis=axis, model=model,
                                      names={5: "square", 9: "top"})
    assert result.labels.shape == ct.shape and result.labels.dtype == np.uint8
    assert set(np.unique(result.labels)) <= {0, 5, 9}
    assert [s["name"] for s in result.segments] == ["square", "top"]
    assert result.segments[0]["colour"] == list(palette.colour(1))
    kept = np.moveaxis(result.labels, {"axial": 0, "coronal": 1, "sagittal": 2}[axis], 0)
    truth = np.moveaxis(labels, {"axial": 0, "coronal": 1, "sagittal": 2}[axis], 0)
    np.testing.assert_array_equal(kept[slices[0]], truth[slices[0]])  # example slices are kept as given


@pytest.mark.parametrize("method", segment.METHODS)
def test_phase_propagation_end_to_end(model, method):
    ct, labels = moving_square(n_slices=4)
    phases = np.stack([np.roll(ct, d, axis=2) for d in (0, 1, 2)])
    result = segment.propagate_phases(phases, labels, 1, method=method, model=model, spacing=(1.0, 1.0, 2.0))
    assert result.labels.shape == (3,) + ct.shape and result.examples == [1]
    np.testing.assert_array_equal(result.labels[1], labels)
    assert set(np.unique(result.labels)) <= {0, 5}
    if method == "registration":  # the square moved one column: registration follows it
        assert metrics.dice(result.labels[2], np.roll(labels, 1, axis=2)) > metrics.dice(labels, np.roll(labels, 1, 2))


def test_segment_list_json(tmp_path):
    segments = segment.segment_list([5, 52], {52: "aorta"})
    assert segments[0]["name"] == "label 5" and segments[1]["name"] == "aorta" and segments[1]["label"] == 52
    segment.write_segment_list(segments, tmp_path / "s.json")
    assert "aorta" in (tmp_path / "s.json").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------ bad input


def test_mask_on_another_grid_is_an_error():
    ct, labels = moving_square()
    with pytest.raises(MedLVMError, match="differs from the CT grid"):
        segment.propagate_slices(ct, labels[:, :-1], method="nearest")


def test_empty_mask_is_an_error():
    ct, labels = moving_square()
    with pytest.raises(MedLVMError, match="empty"):
        segment.propagate_slices(ct, np.zeros_like(labels), method="nearest")


def test_examples_without_labels_are_an_error():
    ct, labels = moving_square()
    labels[1] = 0
    with pytest.raises(MedLVMError, match="hold no label"):
        segment.propagate_slices(ct, labels, slices=[1], method="nearest")


def test_labels_beyond_the_palette_are_an_error():
    ct = np.zeros((2, 8, 30), np.float32)
    labels = np.zeros(ct.shape, np.uint8)
    labels[0, 0, : palette.MAX_LABELS + 1] = np.arange(1, palette.MAX_LABELS + 2)
    with pytest.raises(MedLVMError, match="beyond the palette"):
        segment.propagate_slices(ct, labels, method="nearest")


def test_a_2d_image_is_an_error():
    with pytest.raises(MedLVMError, match="2D image"):
        segment.propagate_slices(np.zeros((8, 8)), np.ones((8, 8), np.uint8), method="nearest")


@pytest.mark.parametrize("kwargs, match", [(dict(slices=[99]), "outside"), (dict(axis="oblique"), "axis"),
                                           (dict(method="magic"), "method")])
def test_bad_arguments_are_errors(kwargs, match):
    ct, labels = moving_square()
    with pytest.raises(MedLVMError, match=match):
        segment.propagate_slices(ct, labels, **{"method": "nearest", **kwargs})


@pytest.mark.parametrize("from_phase", [-1, 3])
def test_phase_out_of_range_is_an_error(from_phase):
    ct, labels = moving_square()
    with pytest.raises(MedLVMError, match="from-phase"):
        segment.propagate_phases(np.stack([ct] * 3), labels, from_phase, method="nearest")


# ------------------------------------------------------------------------------------------ implausible output


def test_a_label_on_no_example_slice_is_dropped_with_a_warning(model, caplog):
    """Label 9 (a 'vertebra') is drawn only on slice 3, which is not an example: it must not be predicted."""
    ct, labels = moving_square()
    labels[3, 0:3, 0:3] = 9
    with caplog.at_level(logging.WARNING):
        result = segment.propagate_slices(ct, labels, slices=[0, 5], model=model, names={9: "vertebra"})
    assert [s["label"] for s in result.segments] == [5]
    assert 9 not in np.unique(result.labels)
    unseen = [w for w in result.warnings if "label 9 (vertebra)" in w]
    assert len(unseen) == 1 and "no example slice" in unseen[0] and unseen[0].startswith("segmentation: ")
    assert any(r.getMessage() == unseen[0] for r in caplog.records)


def _answers_everywhere(model, answers, colours, n_labels, shape, sampling):
    """A model that paints every pixel of every answer with the first structure (slot 1)."""
    return np.ones((len(answers),) + tuple(shape), np.uint8)


def test_a_prediction_far_larger_than_the_examples_is_flagged(model, monkeypatch):
    ct, labels = moving_square(n_slices=8)  # a 4 x 4 square (16 voxels) per slice: at most 2 x 16 x 8 is plausible
    monkeypatch.setattr(segment, "_answers_to_slots", _answers_everywhere)
    result = segment.propagate_slices(ct, labels, slices=[0, 7], model=model, names={5: "tumour"})
    assert len(result.warnings) == 1
    assert "label 5 (tumour): 2,912 voxels predicted" in result.warnings[0] and "256" in result.warnings[0]


def test_a_phase_far_larger_than_the_labelled_phase_is_flagged(model, monkeypatch):
    ct, labels = moving_square(n_slices=4)
    phases = np.stack([np.roll(ct, d, axis=2) for d in (0, 1, 2)])
    monkeypatch.setattr(segment, "_answers_to_slots", _answers_everywhere)
    result = segment.propagate_phases(phases, labels, 1, model=model)
    assert len(result.warnings) == 2 and all("label 5" in w for w in result.warnings)
    assert "phase 0" in result.warnings[0] and "phase 2" in result.warnings[1]


@pytest.mark.parametrize("method", ["nearest", "registration"])
def test_plausible_predictions_have_no_warnings(method):
    ct, labels = moving_square()
    result = segment.propagate_slices(ct, labels, slices=[0, 5], method=method, spacing=(1.0, 1.0, 2.0))
    assert result.warnings == []
    phases = np.stack([np.roll(ct, d, axis=2) for d in (0, 1, 2)])
    assert segment.propagate_phases(phases, labels, 1, method=method, spacing=(1.0, 1.0, 2.0)).warnings == []
