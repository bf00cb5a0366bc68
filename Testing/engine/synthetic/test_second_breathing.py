"""The second, independent breathing model used by the motion evaluation."""

from __future__ import annotations

import numpy as np

from MedLVMLib.evaluation.motion_cases import make_evaluation_set
from MedLVMLib.imaging import cases
from MedLVMLib.synthetic import second_breathing
from MedLVMLib.synthetic.phantom import LUNGS

SHAPE = (24, 32, 32)


def test_trace_is_asymmetric_with_a_short_inhalation():
    model = second_breathing.SecondBreathing(inspiratory_fraction=0.35, q_out=2.0, q_in=1.0)
    assert model.trace(0.0) == 1.0 and model.trace(0.65) == 0.0
    assert abs(model.trace(0.3) - model.trace(0.7)) > 0.1  # phase k and its mirror are different states
    t = np.linspace(0, 1, 101)
    assert np.all((model.trace(t) >= 0) & (model.trace(t) <= 1))


def test_case_is_seeded_breathes_and_carries_its_motion():
    a = second_breathing.make_case(seed=3, shape=SHAPE)
    b = second_breathing.make_case(seed=3, shape=SHAPE)
    np.testing.assert_array_equal(a.phases.array, b.phases.array)
    assert a.dvf.shape == (10,) + SHAPE + (3,) and a.labels.shape == (10,) + SHAPE
    lungs = (a.labels == LUNGS).sum(axis=(1, 2, 3))
    exhale = int(np.argmin(np.abs(np.asarray(a.phases.index_values) - 100 * (1 - a.meta["breathing"]
                                                                               ["inspiratory_fraction"]))))
    assert lungs[0] > lungs[exhale]  # more lung at end-inhale than at end-exhale
    si = a.dvf[..., 2].max(axis=(1, 2, 3))
    assert si[0] > si[exhale] and si.max() > 5.0  # the diaphragm moves several mm
    assert a.meta["generator"] == second_breathing.GENERATOR


def test_evaluation_set_holds_second_model_cases(tmp_path):
    folders = make_evaluation_set(tmp_path, n_phantoms=0, real=False, shape=SHAPE, second=1)
    assert [f.name for f in folders] == ["second-1000"]
    assert cases.load_case(folders[0]).meta["generator"] == second_breathing.GENERATOR
