"""palette.py: slots <-> RGB, compaction of arbitrary label ids, nearest-colour read-back, resizing."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.engine import palette
from MedLVMLib.errors import MedLVMError


def test_palette_colours_are_distinct_and_background_black():
    assert palette.PALETTE.shape == (palette.N_COLOURS, 3)
    assert tuple(palette.PALETTE[0]) == (0, 0, 0)
    assert len({tuple(c) for c in palette.PALETTE}) == palette.N_COLOURS
    d = ((palette.PALETTE[:, None].astype(float) - palette.PALETTE[None].astype(float)) ** 2).sum(-1)
    assert np.sqrt(d[~np.eye(len(d), dtype=bool)]).min() > 40  # well apart in RGB


@pytest.mark.parametrize(
    "labels, ids, expected_slots",
    [
        ([[0, 52, 5], [5, 0, 52]], [5, 52], [[0, 2, 1], [1, 0, 2]]),
        ([[0, 1, 1]], [1], [[0, 1, 1]]),
        ([[7, 7, 0]], [7], [[1, 1, 0]]),
    ],
)
def test_compact_and_expand_round_trip(labels, ids, expected_slots):
    compact = palette.compact_labels(np.array(labels, np.uint8))
    assert compact.ids == ids
    np.testing.assert_array_equal(compact.slots, expected_slots)
    np.testing.assert_array_equal(palette.expand_labels(compact.slots, compact.ids), labels)


def test_compact_keeps_only_requested_ids():
    compact = palette.compact_labels(np.array([1, 2, 3]), ids=[3])
    np.testing.assert_array_equal(compact.slots, [0, 0, 1])


def test_too_many_labels_is_an_error():
    labels = np.arange(palette.MAX_LABELS + 2)
    with pytest.raises(MedLVMError, match="beyond the palette"):
        palette.compact_labels(labels)


def test_render_slot_beyond_palette_is_an_error():
    with pytest.raises(MedLVMError, match="beyond the palette"):
        palette.render(np.array([[0, palette.N_COLOURS]]))


def test_render_then_read_is_identity_even_with_noise():
    rng = np.random.default_rng(0)
    slots = rng.integers(0, 6, size=(2, 16, 16)).astype(np.uint8)
    rgb = palette.render(slots)
    assert rgb.shape == (2, 16, 16, 3) and rgb.max() <= 1.0
    noisy = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
    np.testing.assert_array_equal(palette.read_labels(noisy, 5), slots)


def test_read_only_considers_the_used_slots():
    # a pixel exactly at slot 7's colour reads as the nearest of slots 0..2 when only 2 labels are in play
    pixel = palette.PALETTE[7][None, None].astype(np.float32) / 255.0
    assert palette.read_labels(pixel, 2)[0, 0] in (0, 1, 2)
    assert palette.read_labels(pixel, 7)[0, 0] == 7


def test_calibrated_colours_follow_a_shifted_tokenizer():
    slots = np.zeros((1, 8, 8), np.uint8)
    slots[0, :4] = 1
    decoded = palette.render(slots) * 0.5  # a tokenizer that halves every colour
    colours = palette.calibrated_colours(decoded, slots, 1)
    np.testing.assert_allclose(colours[1], palette.PALETTE[1] / 255.0 * 0.5, atol=1e-6)
    # nominal matching would still work here, calibrated matching must too
    np.testing.assert_array_equal(palette.read_labels(decoded, 1, colours), slots)


def test_colour_of_slot():
    assert palette.colour(0) == (0.0, 0.0, 0.0)
    assert palette.colour(1) == pytest.approx(tuple(palette.PALETTE[1] / 255.0))


@pytest.mark.parametrize("shape", [(32, 32), (16, 24), (8, 8)])
def test_resize_slots_shapes_and_labels(shape):
    slots = np.zeros((2, 8, 8), np.uint8)
    slots[:, 2:6, 2:6] = 1
    slots[:, 0, 0] = 2
    out = palette.resize_slots(slots, shape, 2)
    assert out.shape == (2,) + shape
    assert set(np.unique(out)) <= {0, 1, 2}
    # the centre block survives and keeps its relative size (area 1/4 of the frame)
    assert abs((out == 1).mean() - 0.25) < 0.05
