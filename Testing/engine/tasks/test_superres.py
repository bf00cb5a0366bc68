"""Super-resolution: slab model and interpolation checked by hand, the output grid, each method end to end,
and bad factors."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from MedLVMLib.engine import lvm
from MedLVMLib.errors import MedLVMError, TaskOutputError
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging.slabs import interpolate, slab_average
from MedLVMLib.imaging.volume import Geometry
from MedLVMLib.tasks import superres
from MedLVMLib.tasks.prompts import Pairs


@pytest.fixture(scope="module")
def model():
    return lvm.random_model("tiny")


def thin_phantom(shape=(12, 24, 28)):
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    vol = np.full(shape, -900.0, np.float32)
    vol[(y - 12) ** 2 + (x - 14) ** 2 < 64] = 50.0
    vol[(z > 3) & (z < 8) & ((y - 12) ** 2 + (x - 14) ** 2 < 16)] = 400.0
    return vol


def test_slab_average_by_hand():
    vol = np.arange(8, dtype=np.float32).reshape(4, 2, 1)  # z values 0,2,4,6 (+0/1 along y)
    np.testing.assert_array_equal(slab_average(vol, 2, (0,))[:, 0, 0], [1.0, 5.0])


def test_linear_interpolation_of_a_ramp_is_exact_inside():
    thick = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    thin = interpolate(thick, 2, (0,), order=1)[:, 0, 0]
    # thin centres at thick index -0.25, 0.25, 0.75, ...: clamped at the ends
    np.testing.assert_allclose(thin, [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])


@pytest.mark.parametrize("axis", ["z", "xy"])
def test_consistency_makes_slab_means_equal_the_input(axis):
    thin = thin_phantom()
    axes = (0,) if axis == "z" else (1, 2)
    thick = slab_average(thin, 2, axes)
    fine = interpolate(thick, 2, axes, order=3) + 7.0
    corrected = superres.consistency(fine, thick, 2, axes)
    # iterative back-projection removes most of the slab-mean error
    before = np.abs(slab_average(fine, 2, axes) - thick).mean()
    after = np.abs(slab_average(corrected, 2, axes) - thick).mean()
    assert after < 0.2 * before


@pytest.mark.parametrize("axis, spacing, origin", [("z", (1.0, 2.0, 1.0), (10.0, 20.0, 29.5)),
                                                   ("xy", (0.5, 1.0, 2.0), (9.75, 19.5, 30.0))])
def test_fine_geometry_by_hand(axis, spacing, origin):
    geo = Geometry((1.0, 2.0, 2.0), (10.0, 20.0, 30.0))
    fine = superres.fine_geometry(geo, 2, axis)
    assert fine.spacing == pytest.approx(spacing) and fine.origin == pytest.approx(origin)


@pytest.mark.parametrize("method", ["nearest", "linear", "cubic"])
def test_interpolation_baselines(method):
    thin = thin_phantom()
    thick = slab_average(thin, 2, (0,))
    result = superres.superres_volume(thick, 2, method=method, geometry=Geometry((1.0, 1.0, 2.0)))
    assert result.volume.shape == thin.shape
    assert result.geometry.spacing == (1.0, 1.0, 1.0)
    assert metrics.mae(result.volume, thin) < 60.0


@pytest.mark.parametrize("axis, consistent", [("z", True), ("z", False), ("xy", True)])
def test_medlvm_end_to_end(model, axis, consistent):
    thin = thin_phantom()
    axes = (0,) if axis == "z" else (1, 2)
    thick = slab_average(thin, 2, axes)
    examples = None
    if axis == "xy":
        clean = thin[:4]
        examples = Pairs(interpolate(slab_average(clean, 2, (1, 2)), 2, (1, 2)), clean)
    result = superres.superres_volume(thick, 2, axis=axis, model=model, examples=examples, consistent=consistent)
    assert result.volume.shape == thin.shape and np.isfinite(result.volume).all()
    assert result.raw is not None and result.raw.shape == thin.shape
    if consistent:
        assert np.abs(slab_average(result.volume, 2, axes) - thick).mean() < \
            np.abs(slab_average(result.raw, 2, axes) - thick).mean() + 1e-3


def test_self_pairs_teach_the_factor_along_rows():
    thin = thin_phantom()
    pairs = superres.self_pairs(thin, 3, max_pairs=4)
    assert pairs.degraded.shape == pairs.clean.shape and pairs.clean.shape[0] == 4
    assert pairs.clean.shape[1] % 3 == 0
    # blurred along rows only: columns of a row-constant image are untouched
    flat = np.repeat(np.linspace(-500, 500, 28, dtype=np.float32)[None, None], 24, axis=1).repeat(2, axis=0)
    p = superres.self_pairs(flat, 3)
    np.testing.assert_allclose(p.degraded, p.clean, atol=1e-3)


@pytest.mark.parametrize("factor, match", [(0.5, "< 1"), (1, ">= 2"), (1.5, "whole number"), ("x", "whole number"),
                                           (float("nan"), "got nan"), (float("inf"), "got inf")])
def test_bad_factor_is_an_error(factor, match):
    with pytest.raises(MedLVMError, match=match):
        superres.superres_volume(thin_phantom(), factor, method="linear")


def test_a_2d_image_is_an_error():
    with pytest.raises(MedLVMError, match="2D image"):
        superres.superres_volume(np.zeros((16, 16), np.float32), 2, method="linear")


def test_unknown_axis_is_an_error():
    with pytest.raises(MedLVMError, match="axis"):
        superres.superres_volume(thin_phantom(), 2, axis="q", method="linear")


def test_medlvm_output_stays_in_the_input_range_with_a_warning(model, caplog):
    """The random model plus the consistency step overshoot (-1127..701 HU from a -900..400 HU input)."""
    thick = slab_average(thin_phantom(), 2, (0,))
    with caplog.at_level(logging.WARNING):
        result = superres.superres_volume(thick, 2, model=model)
    assert thick.min() <= result.volume.min() and result.volume.max() <= thick.max()
    assert len(result.warnings) == 1 and "clipped to it" in result.warnings[0]
    assert result.warnings[0].startswith("super-resolution: ") and "-900..400 HU" in result.warnings[0]
    assert any(result.warnings[0] == r.getMessage() for r in caplog.records)


def test_a_model_that_decodes_nan_is_an_error(nan_model):
    thick = slab_average(thin_phantom(), 2, (0,))
    with pytest.raises(TaskOutputError, match="super-resolution: .*NaN"):
        superres.superres_volume(thick, 2, model=nan_model)


def test_baselines_have_no_warnings():
    thick = slab_average(thin_phantom(), 2, (0,))
    assert superres.superres_volume(thick, 2, method="linear").warnings == []
