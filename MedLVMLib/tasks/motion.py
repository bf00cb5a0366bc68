"""4D CT respiratory motion prediction: the first k phases in, the next phases out, as full 3D CTs.

Per slice position along `axis`, the codes of the observed phases form one visual sentence
([phase_0, ..., phase_{k-1}], no separators, as LVM was trained); the transformer continues every
sentence by `n_future` images at once (all slices in one batch), which are decoded and restacked into
volumes on the input's grid.

Two ways to render the predicted volumes:
    "direct": the decoded frames, resized to the native grid (the paper's way). Carries the
              tokenizer's blur and quantisation.
    "warp":   the last observed phase is ALSO passed through the tokenizer (encode + decode, the same
              path), registered to each decoded prediction, and the NATIVE last observed phase is warped
              with that field. The model supplies the motion, the native image the detail; the
              tokenizer's blur affects both sides of the registration alike.

Grid "model" (the default) runs encoding, generation, decoding and registration on the model's working
grid (imaging/resample.py: slices at the model resolution, never finer than native) and brings the motion
back to the native grid as a displacement field: the same frames reach the model, at a fraction of the
cost on a clinical-size CT. Grid "native" sends every native slice through the model (the earlier way).

Axis "multi" runs coronal, sagittal and axial sentences and fuses the decoded volumes voxel-wise
(mean or median). `samples` > 1 draws several continuations and reports their mean and standard
deviation (an uncertainty map).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from MedLVMLib.engine.sentences import MotionSentence
from MedLVMLib.errors import MedLVMError
from MedLVMLib.imaging import resample
from MedLVMLib.imaging.volume import Phases, continue_index
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.tasks import common, motion_space, output_checks
from MedLVMLib.tasks.motion_space import DEFAULT_MOTION, MOTION_CHOICES

AXIS_CHOICES = ("coronal", "sagittal", "axial", "multi")
RENDER_CHOICES = ("direct", "warp")
FUSE_CHOICES = ("mean", "median")
GRID_CHOICES = ("model", "native")
COMBINE_CHOICES = ("image", "field")
# The codes a predicted image may take, per position: "any" code of the codebook (LVM), or only codes that the
# observed phases hold at that position or next to it ("nearby", a 3 x 3 neighbourhood of codes) or exactly there
# ("same"). The future phases of one patient are the same tissue, moved: without the restriction the tiny models
# drift on real anatomy, the lungs filling in with soft tissue codes phase after phase (docs/motion/README.md).
CODE_CHOICES = {"any": None, "nearby": 1, "same": 0}
DEFAULT_CODES = "nearby"  # chosen by the evaluation (docs/motion/README.md, codes/)
DEFAULT_GRID = "model"
DEFAULT_AXIS = "coronal"
DEFAULT_RENDER = "warp"  # chosen by the evaluation (docs/motion/README.md)
DEFAULT_TOTAL_PHASES = 10
# Coarse and fast: the decoded predictions are blurry, fine levels would only register noise.
WARP_REGISTRATION = {"iterations": 30, "levels": (4, 2, 1), "smoothing_sigma": 2.0}
METHODS = ("medlvm", "copy-last", "mirror", "dvf", "pca", "convlstm", "rmsim")
TASK = "motion"


@dataclass
class MotionResult:
    """Predicted phases plus, with several samples, their voxel-wise mean and standard deviation.

    predicted: the first sample (a real model output; [n_future, Z, Y, X] HU on the input's grid).
    mean / std: Phases over `n_samples` samples, None when n_samples == 1.
    timings: seconds per stage (tokenize, generate, decode, render).
    tokens_generated: transformer tokens sampled in total (for tokens/s).
    decoded: with render="warp", the first sample as rendered "direct" (the decoded frames, on the input's
        grid), so both renderings of one generation can be compared; None otherwise. Made on first access.
    working_shape: the [Z, Y, X] grid the model worked on (the input's shape with grid="native").
    """

    predicted: Phases
    mean: Optional[Phases] = None
    std: Optional[Phases] = None
    n_samples: int = 1
    axis: str = DEFAULT_AXIS
    render: str = DEFAULT_RENDER
    model_id: str = ""
    timings: dict = field(default_factory=dict)
    tokens_generated: int = 0
    direct: Optional[Callable[[], Phases]] = None  # makes `decoded`
    warnings: list = field(default_factory=list)  # implausible output, one line each (see output_checks)
    working_shape: tuple = ()
    motion: str = DEFAULT_MOTION
    projections: list = field(default_factory=list)  # with motion="observed": a motion_space.Projection per sample
    codes: str = DEFAULT_CODES
    _decoded: Optional[Phases] = field(default=None, repr=False)

    @property
    def decoded(self) -> Optional[Phases]:
        if self._decoded is None and self.direct is not None:
            self._decoded = self.direct()
        return self._decoded


def resolve_n_future(n_phases: int, n_observed: int, n_future: Optional[int]) -> int:
    """The default continues to the end of the input (when it has more phases than observed) or to 10."""
    if n_future is not None:
        return int(n_future)
    if n_phases > n_observed:
        return n_phases - n_observed
    return DEFAULT_TOTAL_PHASES - n_observed


def check_motion_args(phases: Any, n_observed: int, n_future: Optional[int], axis: str = DEFAULT_AXIS,
                      render: str = DEFAULT_RENDER, samples: int = 1, fuse: str = "mean",
                      grid: str = DEFAULT_GRID, codes: str = DEFAULT_CODES) -> int:
    """Validate the request before any heavy work; returns the resolved n_future."""
    if not isinstance(phases, Phases):
        shape = getattr(phases, "shape", None)
        raise MedLVMError(f"motion prediction needs a 4D CT (Phases [P, Z, Y, X]); got {type(phases).__name__} {shape}")
    if n_observed < 1:
        raise MedLVMError(f"--observed must be at least 1, got {n_observed}")
    if phases.n_phases < n_observed:
        raise MedLVMError(f"the input has {phases.n_phases} phase(s) but --observed is {n_observed}: "
                          "give at least as many phases as observed")
    if min(phases.shape) < 2:
        raise MedLVMError(f"each phase must be a 3D volume with at least 2 voxels a side, got {phases.shape}")
    if not np.all(np.isfinite(phases.array[:n_observed])):
        raise MedLVMError("the observed phases contain NaN or infinite values")
    future = resolve_n_future(phases.n_phases, n_observed, n_future)
    if future < 1:
        raise MedLVMError(f"nothing to predict: --observed {n_observed} leaves {future} phases "
                          "(pass --future N or observe fewer phases)")
    for name, value, choices in (("axis", axis, AXIS_CHOICES), ("render", render, RENDER_CHOICES),
                                 ("fuse", fuse, FUSE_CHOICES), ("grid", grid, GRID_CHOICES),
                                 ("codes", codes, tuple(CODE_CHOICES))):
        if value not in choices:
            raise MedLVMError(f"--{name} must be one of {', '.join(choices)}, got '{value}'")
    if samples < 1:
        raise MedLVMError(f"--samples must be at least 1, got {samples}")
    return future


def resolve_model(model: Any, device: str = "auto", dtype: Any = None):
    """A MedLVMModel from None (the bundled default for motion), a registry id, a folder path, or a model object.

    dtype: the transformer's weights when loading (None: bf16 on CUDA, fp32 on CPU; bf16 on CPU runs mixed).
    """
    from MedLVMLib.engine import lvm

    if isinstance(model, lvm.MedLVMModel):
        return model
    return lvm.load_model(None if model is None else str(model), device=device, dtype=dtype, task="motion")


def _predicted_phases(observed: Phases, array: np.ndarray) -> Phases:
    labels, values = continue_index(observed, len(array))
    return Phases(array=np.asarray(array, dtype=np.float32), geometry=observed.geometry, labels=labels,
                  index_values=values, index_name=observed.index_name, index_unit=observed.index_unit)


def _fuse(volumes: list[np.ndarray], fuse: str) -> np.ndarray:
    if len(volumes) == 1:
        return volumes[0]
    stack = np.stack(volumes)
    return (np.median(stack, axis=0) if fuse == "median" else stack.mean(axis=0)).astype(np.float32)


def register_predictions(recon_last: np.ndarray, decoded: np.ndarray, working,
                         progress: Optional[Progress] = None) -> np.ndarray:
    """Fields [F, z, y, x, 3] (mm) from the reconstructed last phase to each decoded prediction, on `working`."""
    from MedLVMLib.imaging import registration

    progress = ensure(progress)
    progress.stage("register", len(decoded))
    fields = []
    for target in decoded:
        fields.append(registration.register(target, recon_last, working.geometry, **WARP_REGISTRATION))
        progress.advance()
    return np.stack(fields)


def warp_native(native_last: np.ndarray, fields: np.ndarray, native, working) -> np.ndarray:
    """The native last phase warped by each field: float32 [F, Z, Y, X] on the native grid."""
    out = np.empty((len(fields),) + tuple(native_last.shape), np.float32)
    for i, displacement in enumerate(fields):
        resample.warp_with_field(native_last, displacement, native, working, out=out[i])
    return out


@dataclass
class _AxisRun:
    """Encoded sentences of one slicing axis, reused for every sample."""

    axis: str
    prompt: np.ndarray  # (N, T)
    codes: np.ndarray  # (k, N, tpi) codes of the observed phases

    @property
    def last_codes(self) -> np.ndarray:
        return self.codes[-1]


def _encode_axis(model, observed: np.ndarray, axis: str, sentence: MotionSentence, batch_size, progress) -> _AxisRun:
    codes = common.encode_volumes(model, observed, axis, batch_size=batch_size, progress=progress)  # (k, N, tpi)
    return _AxisRun(axis, sentence.build(codes), codes)


def _sample_axis(model, run: _AxisRun, sentence: MotionSentence, n_future: int, shape, sampling: dict,
                 batch_size, progress, timings: dict) -> np.ndarray:
    from MedLVMLib.engine import lvm

    t0 = time.perf_counter()
    generated = lvm.generate(model, run.prompt, n_future, max_context_images=sentence.max_context_images,
                             batch_size=batch_size, progress=progress, **sampling)  # (N, F, tpi)
    t1 = time.perf_counter()
    future_codes = sentence.split(generated)  # (F, N, tpi)
    volumes = common.decode_volumes(model, future_codes, run.axis, shape, batch_size=batch_size, progress=progress)
    timings["generate"] = timings.get("generate", 0.0) + t1 - t0
    timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t1
    return volumes


def predict_motion(phases: Phases, n_observed: int = 5, n_future: Optional[int] = None,
                   model: Any = None, axis: str = DEFAULT_AXIS, samples: int = 1, seed: Optional[int] = 0,
                   device: str = "auto", temperature: float = 1.0, top_p: float = 1.0,
                   greedy: Optional[bool] = None,
                   batch_size: Optional[int] = None, render: str = DEFAULT_RENDER, fuse: str = "mean",
                   dtype: Any = None, grid: str = DEFAULT_GRID, combine: str = "image",
                   motion: Optional[str] = None, codes: str = DEFAULT_CODES,
                   progress: Optional[Progress] = None) -> MotionResult:
    """Predict the phases after the first `n_observed` of a 4D CT.

    Args:
        phases: the 4D CT; only its first `n_observed` phases are used.
        n_future: phases to predict (default: the rest of the input, or up to 10 phases in all).
        model: None (bundled default), a registry id, a model folder, or a loaded `lvm.MedLVMModel`.
        axis: slicing of the sentences: "coronal" | "sagittal" | "axial" | "multi" (all three, fused by `fuse`).
        samples: continuations to draw; > 1 adds the voxel-wise mean and std.
        seed: sampling seed (sample i uses seed + i); temperature / top_p: sampling options.
        greedy: most likely tokens instead of sampling; None = greedy for one sample, sampling for several
            (greedy scored better than temperature-1 sampling in the evaluation, docs/motion/README.md).
        batch_size: slices per model call (None: chosen by the engine; halved on out-of-memory).
        render: "direct" (decoded frames) or "warp" (native last phase warped by the predicted motion).
        dtype: transformer weights when `model` is loaded here ("fp32" | "bf16" | "fp16"; None: per device).
        grid: "model" (work on the model's working grid, motion back to the native grid as a field) or
            "native" (every native slice through the model).
        combine: with several samples and render="warp": "image" (`predicted` is the first sample) or "field"
            (`predicted` warps the native last phase by the voxel-wise median of the samples' fields).
        motion: with render="warp": "free" (the registered fields as they are) or "observed" (each field projected
            on the breathing mode of the observed phases, within their range: tasks/motion_space.py); None:
            "observed" with warp and 2 or more observed phases, else "free".
        codes: the codes each predicted image may take per position (CODE_CHOICES): "any", or those the observed
            phases hold there ("same") or within one code of it ("nearby").
    Returns:
        MotionResult with `predicted` [n_future, Z, Y, X] HU on the input's geometry.
    """
    n_future = check_motion_args(phases, n_observed, n_future, axis, render, samples, fuse, grid, codes)
    if combine not in COMBINE_CHOICES:
        raise MedLVMError(f"--combine must be one of {', '.join(COMBINE_CHOICES)}, got '{combine}'")
    if combine == "field" and (render != "warp" or samples < 2):
        raise MedLVMError("--combine field takes the median of several samples' motion fields: it needs "
                          "--render warp and --samples 2 or more")
    motion = check_motion_choice(motion, render, n_observed)
    greedy = samples == 1 if greedy is None else bool(greedy)
    if greedy and samples > 1:  # before the model loads
        raise MedLVMError("several samples need sampling: greedy decoding gives the same prediction every time")
    progress = ensure(progress)
    model = resolve_model(model, device, dtype)
    common.check_model_pair(model)
    observed = phases.select(list(range(n_observed)))
    axes = ["coronal", "sagittal", "axial"] if axis == "multi" else [axis]
    sentence = MotionSentence(n_observed, model.tokens_per_image, getattr(model.transformer.config, "block_size", None))
    sampling = {"temperature": temperature, "top_p": top_p, "greedy": greedy, "prompt_radius": CODE_CHOICES[codes]}
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    native = resample.Grid(observed.shape, observed.geometry)
    working = working_grid(native, axes, model.image_size) if grid == "model" else native
    on_working = resample.resample_volumes(observed.array, working.shape)
    timings["resample"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    runs = [_encode_axis(model, on_working, a, sentence, batch_size, progress) for a in axes]
    del on_working
    timings["tokenize"] = time.perf_counter() - t0
    recon_last = basis = None
    if render == "warp":
        recon_last = _fuse([common.decode_to_volume(model, r.last_codes, r.axis, working.shape, batch_size)
                            for r in runs], fuse)
        output_checks.require_finite(TASK, recon_last, "decoded phases")
    if motion == "observed":
        basis = observed_fields(model, runs, recon_last, working, fuse, batch_size, progress)

    outputs, first_decoded, sample_fields, projections = [], None, [], []
    for s in range(samples):
        seed_s = None if seed is None else int(seed) + s
        per_axis = [_sample_axis(model, r, sentence, n_future, working.shape, {**sampling, "seed": seed_s},
                                 batch_size, progress, timings) for r in runs]
        decoded = _fuse(per_axis, fuse)  # (F, working grid)
        output_checks.require_finite(TASK, decoded, "decoded phases")  # before a NaN field warps to a constant
        t1 = time.perf_counter()
        if render == "warp":
            first_decoded = decoded if first_decoded is None else first_decoded
            fields = register_predictions(recon_last, decoded, working, progress)
            if basis is not None:
                fields, projection = motion_space.project(fields, basis)
                projections.append(projection)
            if combine == "field":
                sample_fields.append(fields)
            decoded = warp_native(observed.array[-1], fields, native, working)
        else:
            decoded = resample.resample_volumes(decoded, native.shape)
        timings["render"] = timings.get("render", 0.0) + time.perf_counter() - t1
        outputs.append(decoded)

    first = outputs[0]
    if sample_fields:  # the motion all samples agree on: the voxel-wise median of their fields
        first = warp_native(observed.array[-1], np.median(np.stack(sample_fields), axis=0), native, working)
    warnings = check_prediction([first] + outputs, observed.array, model.preprocess)
    mean = std = None
    if samples > 1:
        stack = np.stack(outputs)  # (S, F, Z, Y, X)
        mean = _predicted_phases(observed, stack.mean(axis=0))
        std = _predicted_phases(observed, stack.std(axis=0))
        del stack
    tokens = samples * sum(r.prompt.shape[0] for r in runs) * n_future * model.tokens_per_image
    direct = None
    if first_decoded is not None:
        def direct() -> Phases:
            return _predicted_phases(observed, resample.resample_volumes(first_decoded, native.shape))
    return MotionResult(_predicted_phases(observed, first), mean, std, samples, axis, render,
                        getattr(model, "model_id", ""), timings, tokens, direct, warnings, tuple(working.shape),
                        motion, projections, codes)


def check_motion_choice(motion: Optional[str], render: str, n_observed: int) -> str:
    """The motion choice to run: None is the default where it applies (motion_space.default_for); --motion
    observed, asked for, projects the warp render's fields on the observed motion: it needs both."""
    if motion is None:
        return motion_space.default_for(render, n_observed)
    if motion not in MOTION_CHOICES:
        raise MedLVMError(f"--motion must be one of {', '.join(MOTION_CHOICES)}, got '{motion}'")
    if motion == "observed" and render != "warp":
        raise MedLVMError("--motion observed keeps the predicted motion fields within the observed breathing: it "
                          "needs --render warp")
    if motion == "observed" and n_observed < 2:
        raise MedLVMError("--motion observed needs at least 2 observed phases (a motion to keep to)")
    return motion


def observed_fields(model, runs: list, recon_last: np.ndarray, working, fuse: str, batch_size,
                    progress: Optional[Progress] = None) -> np.ndarray:
    """Fields [k-1, z, y, x, 3] from the reconstructed last observed phase to each earlier one, made the way the
    predictions' fields are (decoded from the same codes, registered with the same settings)."""
    n_earlier = len(runs[0].codes) - 1
    recon = [_fuse([common.decode_to_volume(model, r.codes[j], r.axis, working.shape, batch_size) for r in runs],
                   fuse) for j in range(n_earlier)]
    output_checks.require_finite(TASK, np.stack(recon), "decoded phases")
    return register_predictions(recon_last, np.stack(recon), working, progress)


def working_grid(native, axes: list, image_size: int):
    """One grid for every slicing axis of the request: per array axis, the finest any of them needs."""
    grids = [resample.working_grid(native, a, image_size) for a in axes]
    if len(grids) == 1:
        return grids[0]
    return resample.grid_over(native, tuple(np.max([g.shape for g in grids], axis=0)))


def check_prediction(predictions, observed: np.ndarray, preprocess) -> list:
    """Errors for NaN or values no rendering can produce (beyond the observed phases and the model's HU window);
    the warnings of a plausible-looking but suspicious prediction. `predictions`: one [F, Z, Y, X] array or a
    list of them (the first is the prediction shown), checked one by one so that no stacked copy is made."""
    arrays = predictions if isinstance(predictions, (list, tuple)) else [predictions]
    low, high = min(float(observed.min()), preprocess.hu_min), max(float(observed.max()), preprocess.hu_max)
    for array in arrays:
        output_checks.require_finite(TASK, array, "predicted phases")
        output_checks.require_within(TASK, array, low, high, "predicted phases")
    warnings: list = []
    output_checks.warn_if_constant(TASK, arrays[0], observed, warnings)
    return warnings


def predict_with_method(method: str, phases: Phases, n_observed: int = 5, n_future: Optional[int] = None,
                        progress: Optional[Progress] = None, **medlvm_options) -> MotionResult:
    """Run MedLVM ("medlvm") or a baseline ("copy-last", "mirror", "dvf", "pca", "convlstm", "rmsim") alike."""
    if method == "medlvm":
        return predict_motion(phases, n_observed, n_future, progress=progress, **medlvm_options)
    baselines = _baselines()
    if method not in baselines:
        raise MedLVMError(f"unknown method '{method}'; choose from medlvm, {', '.join(baselines)}")
    n_future = check_motion_args(phases, n_observed, n_future)
    observed = phases.select(list(range(n_observed)))
    t0 = time.perf_counter()
    predicted = baselines[method](observed, n_future, progress=progress)
    output_checks.require_finite(TASK, predicted.array, "predicted phases")
    return MotionResult(predicted, model_id=method, timings={"baseline": time.perf_counter() - t0})


def _baselines() -> dict[str, Callable[[Phases, int], Phases]]:
    from MedLVMLib.baselines.motion import MOTION_BASELINES

    return MOTION_BASELINES

