"""Landmark TRE: field inversion, ground-truth positions, landmark placement and the rows of score_prediction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import landmarks
from MedLVMLib.evaluation.motion import score_prediction
from MedLVMLib.imaging.cases import Case
from MedLVMLib.imaging.volume import Geometry, Phases
from MedLVMLib.synthetic.phantom import make_phantom

K = 7  # last observed phase in the scoring tests (phases 8 and 9 predicted: few registrations, large motion)


@pytest.fixture(scope="module")
def case():
    return make_phantom(seed=3, shape=(32, 40, 40))


def analytic_field(geometry: Geometry, shape) -> tuple[np.ndarray, callable]:
    """A smooth field (translation + sinusoid, gradient well below 1) sampled on the grid, and its formula."""

    def u(points):
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        return np.stack([1.5 + 2.0 * np.sin(z / 40.0), -2.0 + 3.0 * np.cos(x / 50.0), 4.0 + 3.0 * np.sin(y / 45.0)],
                        axis=-1)

    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    grid = landmarks.to_physical(geometry, np.stack([k, j, i], -1).reshape(-1, 3)).reshape(shape + (3,))
    return u(grid).astype(np.float32), u


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, -1, 0, 1, 0, 0, 0, 0, 1)])
def test_inversion_recovers_known_points(direction):
    shape = (30, 34, 38)
    geometry = Geometry(spacing=(2.0, 2.5, 3.0), origin=(-40.0, 10.0, -45.0), direction=direction)
    field, u = analytic_field(geometry, shape)
    centre = landmarks.to_physical(geometry, np.array([[15.0, 17.0, 19.0]]))
    known = centre + np.array([[0.0, 0.0, 0.0], [12.3, -7.1, 9.4], [-15.2, 8.8, -11.7]])
    targets = known + u(known)
    found = landmarks.invert_at(field, geometry, targets)
    np.testing.assert_allclose(found, known, atol=0.05)
    assert np.linalg.norm(targets - known, axis=1).min() > 3.0  # the field really moved the points


def test_index_physical_round_trip():
    geometry = Geometry(spacing=(0.8, 1.2, 2.5), origin=(5.0, -3.0, 7.0), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1))
    index = np.array([[1.5, 2.25, 3.0], [0.0, 10.0, 4.5]])
    np.testing.assert_allclose(landmarks.to_index(geometry, landmarks.to_physical(geometry, index)), index)


def test_true_positions_follow_a_pull_translation():
    """phase_p(x) = reference(x + d): a feature of the reference at r shows at r - d in phase p."""
    shape = (10, 12, 14)
    dvf = np.zeros((2,) + shape + (3,), np.float32)
    dvf[1] = (1.0, -2.0, 5.0)
    toy = Case(Phases(np.zeros((2,) + shape, np.float32), Geometry(spacing=(2.0, 2.0, 3.0))), dvf=dvf)
    marks = landmarks.Landmarks(np.array([[10.0, 8.0, 12.0]]), ["a"], ["vessel"], 0)
    np.testing.assert_allclose(landmarks.true_positions(toy, marks, 1), [[9.0, 10.0, 7.0]], atol=1e-6)
    with pytest.raises(MedLVMError, match="dvf"):
        landmarks.true_positions(replace(toy, dvf=None), marks, 1)


def test_landmarks_are_deterministic_and_on_the_anatomy(case):
    first, second = landmarks.place_landmarks(case, K), landmarks.place_landmarks(case, K)
    np.testing.assert_array_equal(first.points, second.points)
    assert first.names == second.names and len(set(first.names)) == len(first.names)
    kinds = np.array(first.kinds)
    assert (kinds == "vessel").sum() >= 6 and (kinds == "diaphragm").sum() >= 4 and "tumour" in first.names
    geometry, lungs = case.phases.geometry, case.labels[K] == 2
    index = landmarks.to_index(geometry, first.points)
    for (z, y, x), kind in zip(index, kinds):
        column = lungs[:, int(round(y)), int(round(x))]
        if kind == "vessel":
            assert lungs[int(round(z)), int(round(y)), int(round(x))]
            assert case.phases.array[K][int(round(z)), int(round(y)), int(round(x))] > landmarks.VESSEL_HU
        elif kind == "diaphragm":
            base = np.argmax(column)  # lowest lung voxel: the point lies on its lower face, solid lung above
            assert abs(z - (base - 0.5)) <= 0.5 and column[base : base + 3].all()
    vessels = first.points[kinds == "vessel"]
    gaps = np.linalg.norm(vessels[:, None] - vessels[None], axis=-1) + np.eye(len(vessels)) * 1e9
    assert gaps.min() >= 20.0
    with pytest.raises(MedLVMError, match="phase"):
        landmarks.place_landmarks(case, case.phases.n_phases)


def tre_rows(rows: list[dict]) -> dict:
    return {(r["phase"], r["metric"]): r["value"] for r in rows if r["organ"] == "landmarks"}


def test_copy_last_tre_is_the_true_motion(case):
    copy_last = Phases(np.stack([case.phases.array[K]] * 2), case.phases.geometry)
    rows = tre_rows(score_prediction(case, "c", "copy-last", copy_last, K + 1))
    marks = landmarks.place_landmarks(case, K)
    for p in (K + 1, K + 2):
        motion = np.linalg.norm(landmarks.true_positions(case, marks, p) - marks.points, axis=1)
        label = case.phases.labels[p]
        assert rows[(label, "tre_mm")] == pytest.approx(motion.mean(), abs=0.05)
        assert rows[(label, "tre_max_mm")] == pytest.approx(motion.max(), abs=0.05)
    assert rows[(case.phases.labels[K + 1], "tre_mm")] > 2.0  # the phase really moved


def test_truth_as_prediction_scores_below_a_voxel(case):
    truth = case.phases.select([K + 1, K + 2])
    rows = tre_rows(score_prediction(case, "c", "reference", truth, K + 1))
    voxel = min(case.phases.geometry.spacing)
    marks = landmarks.place_landmarks(case, K)
    for p in (K + 1, K + 2):
        label = case.phases.labels[p]
        motion = np.linalg.norm(landmarks.true_positions(case, marks, p) - marks.points, axis=1).mean()
        assert rows[(label, "tre_mm")] < min(0.5 * voxel, 0.6 * motion)
        assert rows[(label, "tre_max_mm")] >= rows[(label, "tre_mm")]


def test_cases_without_motion_get_no_rows(case):
    still = replace(case, dvf=None)
    assert landmarks.case_landmarks(still, K) is None
    assert landmarks.landmark_rows(still, "c", K + 1, "copy-last", None, None) == []
