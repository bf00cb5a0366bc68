"""Motion baselines on a tiny 4D series of a textured ball breathing along z (truth known)."""

from __future__ import annotations

import numpy as np
import pytest

from MedLVMLib.baselines import motion
from MedLVMLib.errors import MedLVMError
from MedLVMLib.evaluation import metrics
from MedLVMLib.imaging.volume import Geometry, Phases

SHAPE = (24, 32, 32)
GEOMETRY = Geometry(spacing=(1.5, 1.5, 2.0), origin=(-20.0, 10.0, 5.0))


def breathing_series(n_phases: int = 10, amplitude: float = 4.0) -> tuple[Phases, np.ndarray]:
    """Ball centre z(k) = 12 + A cos(2πk/n): symmetric, z(k) = z(n - k). Returns (phases, ball masks)."""
    zz, yy, xx = np.indices(SHAPE)
    images, masks = [], []
    for k in range(n_phases):
        centre_z = 12 + amplitude * np.cos(2 * np.pi * k / n_phases)
        inside = (zz - centre_z) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 36
        images.append(np.where(inside, 40 + 20 * (zz - centre_z), -800.0))  # texture so registration can work
        masks.append(inside)
    return Phases(np.stack(images).astype(np.float32), GEOMETRY), np.stack(masks)


@pytest.fixture(scope="module")
def series():
    return breathing_series()


@pytest.fixture(scope="module")
def predictions(series):
    observed = series[0].select([0, 1, 2, 3, 4])
    return {name: fn(observed, 5) for name, fn in motion.MOTION_BASELINES.items()}


def ball_dice(predicted: Phases, masks: np.ndarray) -> np.ndarray:
    return np.array([metrics.dice(predicted.array[i] > -400, masks[5 + i]) for i in range(predicted.n_phases)])


@pytest.mark.parametrize("name", sorted(motion.MOTION_BASELINES))
def test_output_grid_and_index(name, predictions):
    out = predictions[name]
    assert out.array.shape == (5,) + SHAPE and out.array.dtype == np.float32
    assert out.geometry == GEOMETRY
    assert out.labels == ["50%", "60%", "70%", "80%", "90%"]
    assert out.index_values == pytest.approx([50, 60, 70, 80, 90])


def test_copy_last_repeats_last_phase(series, predictions):
    for volume in predictions["copy-last"].array:
        np.testing.assert_array_equal(volume, series[0].array[4])


def test_mirror_recovers_symmetric_motion_exactly(series, predictions):
    np.testing.assert_array_equal(predictions["mirror"].array[1:], series[0].array[[4, 3, 2, 1]])  # phases 6-9
    np.testing.assert_array_equal(predictions["mirror"].array[0], series[0].array[4])  # 5: nearest to its mirror


@pytest.mark.parametrize("name", ["dvf", "pca"])
def test_registration_baselines_beat_copy_last_on_late_phases(name, series, predictions):
    masks = series[1]
    learned, copied = ball_dice(predictions[name], masks), ball_dice(predictions["copy-last"], masks)
    assert np.all(learned[3:] > 0.85)  # phases 8, 9: the ball has moved back up by ~6 voxels
    assert np.all(learned[3:] > copied[3:] + 0.3)


@pytest.mark.parametrize(
    "phase, n_observed, n_total, expected",
    [(6, 5, 10, 4), (9, 5, 10, 1), (5, 5, 10, 4), (10, 5, 10, 0), (7, 4, 10, 3), (4, 3, 6, 2), (5, 3, 8, 2)],
)
def test_mirror_source_table(phase, n_observed, n_total, expected):
    assert motion.mirror_source(phase, n_observed, n_total) == expected


@pytest.mark.parametrize("power, phi", [(1, 0.3), (2, 1.1), (3, 0.5), (1, 2.0)])
def test_lujan_trace_fit_recovers_the_model(power, phi):
    def truth(k):
        return 2.0 - 5.0 * np.cos(np.pi * np.asarray(k, dtype=float) / 10 - phi) ** (2 * power)

    k = np.arange(5)
    fitted = motion.fit_lujan_trace(k, truth(k), 10, phase_offset=None)
    np.testing.assert_allclose(fitted(np.arange(5, 10)), truth(np.arange(5, 10)), atol=0.3)


def jittered_traces(n_traces: int = 40, seed: int = 0) -> np.ndarray:
    """[n_traces, 10] diaphragm-like traces, one breath per phase bin: z(k) = -A_k cos^4(πk/10) + c_k with the
    amplitude A_k and baseline c_k of each bin's breath drawn around 15 and 0 mm (cycle-to-cycle variation)."""
    rng = np.random.default_rng(seed)
    k = np.arange(10)
    amplitude = rng.normal(15.0, 2.0, (n_traces, 10))
    baseline = rng.normal(0.0, 1.0, (n_traces, 10))
    return -amplitude * np.cos(np.pi * k / 10) ** 4 + baseline


def test_lujan_fit_with_the_4dct_phase_offset_predicts_jittered_breathing():
    # Phase 0 is end-inhale (the 4D CT convention). With the offset fixed there, the fit of phases 0-4 predicts
    # the return of phases 6-9 far better than copying phase 4; fitting the offset as well from half a cycle of
    # jittered bins moves the extreme (on these traces: 4.7 mm against 1.3 mm, copy-last 5.5 mm).
    traces = jittered_traces()
    observed, future = np.arange(5), np.arange(6, 10)

    def error(phase_offset):
        fits = [motion.fit_lujan_trace(observed, z[:5], 10, phase_offset=phase_offset) for z in traces]
        return np.mean([np.abs(fit(future) - z[6:]).mean() for fit, z in zip(fits, traces)])

    copy_last = np.mean([np.abs(z[4] - z[6:]).mean() for z in traces])
    assert error(0.0) < 0.5 * copy_last
    assert error(0.0) < 0.5 * error(None)


def test_dvf_linear_model_and_fewer_future_phases(series):
    observed = series[0].select([0, 1, 2, 3, 4])
    out = motion.dvf(observed, 2, n_total=10, model="linear", iterations=20)
    assert out.n_phases == 2 and out.labels == ["50%", "60%"]


@pytest.mark.parametrize(
    "call",
    [
        lambda obs: motion.copy_last(obs, 0),
        lambda obs: motion.mirror(obs, 3, n_total=4),
        lambda obs: motion.dvf(obs.select([0, 1]), 3),
        lambda obs: motion.dvf(obs, 3, model="spline"),
        lambda obs: motion.pca(obs, 3, n_components=5),
        lambda obs: motion.copy_last(obs.array, 2),
    ],
)
def test_bad_input_raises(series, call):
    with pytest.raises(MedLVMError):
        call(series[0].select([0, 1, 2, 3, 4]))


def test_principal_modes_of_rank_one_data():
    rng = np.random.default_rng(0)
    mode = rng.normal(size=500).astype(np.float32)
    weights = np.array([2.0, -1.0, 0.5, 3.0], np.float32)
    modes, mean, scores = motion.principal_modes(weights[:, None] * mode + 7.0, 1)
    rebuilt = mean + scores @ modes
    np.testing.assert_allclose(rebuilt, weights[:, None] * mode + 7.0, atol=1e-3)
    assert np.linalg.norm(modes[0]) == pytest.approx(1.0, abs=1e-5)


def test_shared_fields_give_the_same_prediction(series, predictions):
    observed = series[0].select([0, 1, 2, 3, 4])
    fields = motion.observed_fields(observed)
    assert np.abs(fields[-1]).max() == 0.0
    out = motion.pca(observed, 5, fields=fields)
    np.testing.assert_allclose(out.array, predictions["pca"].array, atol=1e-3)
    with pytest.raises(MedLVMError):
        motion.dvf(observed, 5, fields=fields[:, :4])
