"""Segmentation baselines: nearest labelled slice, registration between slices and between phases."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.baselines import segment
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging.volume import Geometry, Phases

GEOMETRY = Geometry(spacing=(1.0, 1.0, 1.5))


def ellipsoid(shape=(24, 32, 32), centre=(12, 16, 16), radii=(9, 11, 9)) -> np.ndarray:
    grid = np.indices(shape)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) < 1.0


@pytest.fixture(scope="module")
def organ():
    truth = ellipsoid()
    zz = np.indices(truth.shape)[0]
    image = np.where(truth, 60.0 + 3 * zz, -900.0).astype(np.float32)
    return image, truth.astype(np.uint8) * 2


@pytest.mark.parametrize(
    "n, labelled, expected",
    [(5, [2], [2, 2, 2, 2, 2]), (6, [0, 5], [0, 0, 0, 5, 5, 5]), (5, [1, 3], [1, 1, 1, 3, 3])],
)
def test_nearest_source_table(n, labelled, expected):
    np.testing.assert_array_equal(segment.nearest_source(n, labelled), expected)


@pytest.mark.parametrize("axis", ["axial", "coronal", 2])
def test_nearest_slice_copies_labelled_slices(organ, axis):
    image, truth = organ
    a = segment.axis_index(axis)
    labelled = [8, 16]
    out = segment.nearest_slice(image, truth, labelled, axis)
    assert out.shape == truth.shape and out.dtype == truth.dtype
    for s, src in enumerate(segment.nearest_source(truth.shape[a], labelled)):
        np.testing.assert_array_equal(np.take(out, s, axis=a), np.take(truth, src, axis=a))


@pytest.mark.parametrize("axis", ["axial", "sagittal"])
def test_registration_propagation_beats_nearest_slice(organ, axis):
    image, truth = organ
    a = segment.axis_index(axis)
    labelled = [truth.shape[a] // 2 - 4, truth.shape[a] // 2 + 4]
    sparse = np.zeros_like(truth)
    for s in labelled:
        index = [slice(None)] * 3
        index[a] = s
        sparse[tuple(index)] = truth[tuple(index)]
    nearest = segment.nearest_slice(image, sparse, labelled, axis)
    registered = segment.registration_propagation(image, sparse, labelled, axis, GEOMETRY, iterations=30)
    for s in labelled:
        np.testing.assert_array_equal(np.take(registered, s, axis=a), np.take(truth, s, axis=a))
    assert set(np.unique(registered)) <= {0, 2}
    assert metrics.dice(registered, truth) > metrics.dice(nearest, truth) + 0.1


def test_phase_propagation_tracks_a_moving_organ():
    shifts = [0, 2, 4]
    masks = np.stack([ellipsoid(centre=(12, 16 + s, 16)) for s in shifts])
    zz = np.indices(masks.shape[1:])[0]
    phases = Phases(np.where(masks, 40.0 + 2 * zz, -900.0).astype(np.float32), GEOMETRY)
    out = segment.propagate_phases(phases, masks[0].astype(np.uint8), source_phase=0)
    assert out.shape == masks.shape
    np.testing.assert_array_equal(out[0], masks[0])
    assert metrics.dice(out[2], masks[2]) > 0.9 > metrics.dice(masks[0], masks[2])


@pytest.mark.parametrize(
    "call",
    [
        lambda im, lab: segment.nearest_slice(im, lab[:-1], [3]),
        lambda im, lab: segment.nearest_slice(im, lab, []),
        lambda im, lab: segment.nearest_slice(im, lab, [40]),
        lambda im, lab: segment.nearest_slice(im, lab, [0]),  # slice 0 holds no label
        lambda im, lab: segment.nearest_slice(im, lab, [12], axis="oblique"),
        lambda im, lab: segment.nearest_slice(im[0], lab[0], [12]),
        lambda im, lab: segment.propagate_phases(Phases(im[None]), np.zeros_like(lab)),
        lambda im, lab: segment.propagate_phases(Phases(im[None]), lab, source_phase=1),
    ],
)
def test_bad_input_raises(organ, call):
    with pytest.raises(MedLVMError):
        call(*organ)
