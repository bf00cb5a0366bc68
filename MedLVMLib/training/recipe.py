"""Training recipes: YAML files whose sections override frozen dataclass fields.

A recipe file looks like::

    kind: tokenizer            # or transformer
    model: {preset: medlvm-tiny, codebook_size: 1024}   # TokenizerConfig / TransformerConfig fields
    data: {...}                # TokenizerData / TransformerData fields
    loss: {...}                # TokenizerLoss fields, or TransformerLoss fields for a transformer
    optim: {...}               # Optim fields
    trainer: {...}             # Trainer fields
    preprocess: {hu_min: -1000, hu_max: 1000}

Unknown sections or keys raise `MedLVMError` naming the key and the file. Command-line overrides
`--set section.key=value` (value parsed as YAML) are applied on top, with the same checks.
No lightning import here: the command validates a recipe before any heavy work.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from MedLVMLib.engine.config import PreprocessConfig, TokenizerConfig, TransformerConfig
from MedLVMLib.errors import MedLVMError

KINDS = ("tokenizer", "transformer")


@dataclass(frozen=True)
class TokenizerData:
    """Images the tokenizer learns to reconstruct (fractions are sampling weights)."""

    seed: int = 0
    images_per_epoch: int = 4096
    natural: float = 0.5       # photograph crops (scikit-image samples)
    texture: float = 0.3       # procedural textures
    masks: float = 0.1         # palette-coloured threshold masks of natural images (segmentation prompts)
    ct: float = 0.0            # coronal slices of 4D CT phantoms (in-domain; 0 for zero-shot models)
    ct_seeds: Tuple[int, int] = (0, 200)   # phantom seeds [start, stop); never >= 1000 (held out)
    degrade: float = 0.1       # noisy / blurred versions (denoise / super-resolution prompts)


@dataclass(frozen=True)
class TransformerData:
    """Visual sentences, pre-tokenised once per run with the tokenizer at `tokenizer`."""

    tokenizer: str = ""        # model folder (or id) whose tokenizer encodes the sentences
    seed: int = 0
    n_sentences: int = 2048    # sentences in the token cache
    n_images: int = 16         # images per sentence (<= block_size / tokens_per_image)
    video: float = 0.7         # deformed natural-image clips
    pairs: float = 0.3         # analogy pairs on natural images: (noisy, clean), (blurred, sharp), (image, mask)
    ct: float = 0.0            # 4D CT phantom coronal slices, phases in breathing order (cyclic)
    ct_seeds: Tuple[int, int] = (0, 200)
    ct_phase0: float = 0.0     # share of the CT sentences that start at phase 0 (end-inhale, as the motion task
                               # prompts); the others start at a random phase
    cache: str = ""            # .npz token cache to reuse ("" = build in the run folder)


@dataclass(frozen=True)
class TokenizerLoss:
    l1: float = 1.0
    l2: float = 1.0
    gradient: float = 0.5      # L1 between image gradients (sharper edges, no perceptual network)
    codebook: float = 1.0
    restart_every: int = 50    # steps between dead-code restarts (0 = never)
    restart_min_usage: float = 0.03   # codes used less than this fraction of the mean are restarted


@dataclass(frozen=True)
class TransformerLoss:
    # Weight of the tokens that differ from the same position one image earlier. Consecutive breathing phases
    # share most codes, so plain cross-entropy is lowest for a model that copies the previous image; > 1 makes
    # the tokens that move count more (1 = plain next-token cross-entropy).
    change_weight: float = 1.0


@dataclass(frozen=True)
class Optim:
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    warmup_steps: int = 100
    grad_clip: float = 1.0


@dataclass(frozen=True)
class Trainer:
    max_steps: int = 1000
    batch_size: int = 32
    num_workers: int = 0
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32"
    accumulate: int = 1
    logger: str = "csv"
    log_every_n_steps: int = 10
    checkpoint_every: int = 200
    max_minutes: float = 0.0   # wall-clock limit (0 = none); training stops cleanly and exports
    threads: int = 0           # torch CPU threads (0 = leave torch's default)
    out: str = "runs/train"
    init_from: str = ""        # model folder / id to start from (fine-tuning)
    export_id: str = ""        # model id written into the exported folder's config.json
    export_dtype: str = "float32"   # transformer weights in the export: float32 | float16 | bfloat16


SECTIONS = {"data", "loss", "optim", "trainer", "model", "preprocess"}


@dataclass(frozen=True)
class Recipe:
    kind: str
    model: Any                 # TokenizerConfig | TransformerConfig
    data: Any                  # TokenizerData | TransformerData
    optim: Optim = field(default_factory=Optim)
    trainer: Trainer = field(default_factory=Trainer)
    loss: Any = field(default_factory=TokenizerLoss)   # TokenizerLoss | TransformerLoss
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    source: str = ""

    def to_dict(self) -> Dict[str, Any]:
        out = {"kind": self.kind}
        names = ("model", "data", "optim", "trainer", "preprocess", "loss")
        for name in names:
            value = getattr(self, name)
            out[name] = value.to_dict() if hasattr(value, "to_dict") else _plain(dataclasses.asdict(value))
        return out


def _plain(d: Dict[str, Any]) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# numeric fields with a range: (lowest, highest, lowest allowed itself); checked wherever a value comes from
RANGES = {
    Trainer: dict(max_steps=(1, None, True), batch_size=(1, None, True), num_workers=(0, None, True),
                  num_nodes=(1, None, True), accumulate=(1, None, True), log_every_n_steps=(1, None, True),
                  checkpoint_every=(1, None, True), max_minutes=(0, None, True), threads=(0, None, True)),
    Optim: dict(lr=(0, None, False), min_lr_ratio=(0, 1, True), weight_decay=(0, None, True), beta1=(0, 1, True),
                beta2=(0, 1, True), warmup_steps=(0, None, True), grad_clip=(0, None, True)),
}


def _whole_fields(cls) -> set:
    """The fields of RANGES[cls] that hold whole numbers (their default is an int)."""
    defaults = cls()
    return {name for name in RANGES.get(cls, {}) if isinstance(getattr(defaults, name), int)}


def _check_ranges(cls, value, where: str) -> None:
    """Each numeric field of `value` (an instance of cls) is a finite number in its range (RANGES)."""
    whole = _whole_fields(cls)
    for name, (low, high, closed) in RANGES.get(cls, {}).items():
        number = getattr(value, name)
        kind = int if name in whole else float
        ok_type = isinstance(number, (int, float)) and not isinstance(number, bool) and \
            (kind is float or float(number).is_integer())
        if not ok_type or not math.isfinite(number) or (number < low if closed else number <= low) or \
                (high is not None and number > high):
            bound = f"{'>=' if closed else '>'} {low}" + (f" and <= {high}" if high is not None else "")
            what = "a whole number" if kind is int else "a number"
            raise MedLVMError(f"{where}: {name} must be {what} {bound}, got {number!r}")


def _number(value: Any) -> Any:
    """'1e-4' (YAML 1.1 reads an exponent without a dot as text) -> 0.0001; anything else unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _replace(cls, base, values: Dict[str, Any], where: str):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise MedLVMError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    fixed = {k: tuple(v) if isinstance(v, list) else _number(v) if k in RANGES.get(cls, {}) else v
             for k, v in values.items()}
    result = dataclasses.replace(base, **fixed)
    _check_ranges(cls, result, where)
    return dataclasses.replace(result, **{k: int(getattr(result, k)) for k in _whole_fields(cls)})


def _model(kind: str, values: Dict[str, Any], where: str):
    values = dict(values or {})
    cls = TokenizerConfig if kind == "tokenizer" else TransformerConfig
    preset = values.pop("preset", None)
    try:
        base = cls.from_name(preset) if preset else cls()
        return cls.from_dict(values, base)
    except MedLVMError as exc:
        raise MedLVMError(f"{where}: model: {exc}") from exc


def build_recipe(raw: Dict[str, Any], source: str = "<dict>") -> Recipe:
    """Validate a nested dict (the YAML content) into a Recipe; errors name the key and `source`."""
    if not isinstance(raw, dict):
        raise MedLVMError(f"{source}: a training config must be a mapping, got {type(raw).__name__}")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise MedLVMError(f"{source}: 'kind' must be one of {list(KINDS)}, got {kind!r}")
    unknown = sorted(set(raw) - SECTIONS - {"kind"})
    if unknown:
        raise MedLVMError(f"{source}: unknown section(s) {unknown}; allowed: {sorted(SECTIONS | {'kind'})}")
    for name in SECTIONS:
        if raw.get(name) is not None and not isinstance(raw[name], dict):
            raise MedLVMError(f"{source}: section '{name}' must be a mapping")
    data_cls = TokenizerData if kind == "tokenizer" else TransformerData
    loss_cls = TokenizerLoss if kind == "tokenizer" else TransformerLoss
    sec = {name: raw.get(name) or {} for name in SECTIONS}
    try:
        preprocess = PreprocessConfig.from_dict(sec["preprocess"])
    except MedLVMError as exc:
        raise MedLVMError(f"{source}: preprocess: {exc}") from exc
    return Recipe(
        kind=kind,
        model=_model(kind, sec["model"], source),
        data=_replace(data_cls, data_cls(), sec["data"], f"{source}: data"),
        optim=_replace(Optim, Optim(), sec["optim"], f"{source}: optim"),
        trainer=_replace(Trainer, Trainer(), sec["trainer"], f"{source}: trainer"),
        loss=_replace(loss_cls, loss_cls(), sec["loss"], f"{source}: loss"),
        preprocess=preprocess,
        source=source,
    )


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """`["trainer.max_steps=10", "model.dim=64"]` -> nested dict (values parsed as YAML scalars/lists)."""
    import yaml

    out: Dict[str, Any] = {}
    for item in items or ():
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise MedLVMError(f"--set {item!r}: expected section.key=value (e.g. trainer.max_steps=100)")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = yaml.safe_load(value)
    return out


def merge(raw: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, values in overrides.items():
        if isinstance(values, dict):
            merged.setdefault(section, {})
            merged[section] = {**(merged[section] or {}), **values}
        else:
            merged[section] = values
    return merged


def load_recipe(path, overrides: Optional[Sequence[str]] = None, expect_kind: str = "") -> Recipe:
    """Read a YAML recipe, apply `--set` overrides and validate (no heavy imports)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MedLVMError(f"training config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise MedLVMError(f"{path}: not valid YAML: {exc}") from exc
    raw = merge(raw, parse_overrides(overrides or ()))
    recipe = build_recipe(raw, str(path))
    if expect_kind and recipe.kind != expect_kind:
        raise MedLVMError(f"{path}: this is a {recipe.kind} config; use `medlvm train {recipe.kind}`")
    return recipe


def with_trainer(recipe: Recipe, **values: Any) -> Recipe:
    """Recipe with some trainer fields replaced (None values are ignored): the CLI flags."""
    values = {k: v for k, v in values.items() if v is not None}
    return dataclasses.replace(recipe, trainer=_replace(Trainer, recipe.trainer, values, "command line"))
