"""Run a training recipe with a Lightning Trainer and export the result in MedLVM's own format.

    fit(recipe, resume=None, progress=None) -> TrainResult

Run folder (`trainer.out`):
    recipe.yaml                the resolved recipe (every field, after overrides)
    logs/version_N/metrics.csv CSV (or TensorBoard) logs
    checkpoints/last.ckpt      Lightning checkpoints (resume with --resume)
    tokens.npz                 transformer runs: the token cache
    model/                     the export: config.json + model.safetensors + README.md (model card stub)
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any, Dict, NamedTuple, Optional, Tuple

import torch

from MedLVMLib.engine.models.cpu_kernels import cpu_flags
from MedLVMLib.errors import MedLVMError
from MedLVMLib.progress import Progress, ensure
from MedLVMLib.training.recipe import Recipe, with_trainer

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Without one of these a CPU runs bf16 autocast ~20x slower than fp32 (measured on an AMD EPYC: a tokenizer
# step of the bundled recipe took 220 s instead of 10 s), so a recipe's time limit would stop it after a few steps.
BF16_CPU_FLAGS = {"amx_bf16", "avx512_bf16"}


class TrainResult(NamedTuple):
    run_dir: Path
    export_dir: Optional[Path]
    global_step: int
    wall_s: float
    metrics: Dict[str, float]


def load_parts(path: str, field: str = "model"):
    """(tokenizer, transformer, preprocess) of a model folder or registry id (either part may be None).

    field: the recipe field that named it ("data.tokenizer", "trainer.init_from"), for the error message.
    """
    from MedLVMLib.engine.checkpoints.formats import load_checkpoint
    from MedLVMLib.engine.checkpoints.registry import load_registry, resolve_model_folder

    folder = Path(path).expanduser()
    if not folder.exists():
        registry = load_registry()
        if str(path) not in registry.models:
            raise MedLVMError(f"{field} {str(path)!r} is neither a folder nor a registered model id "
                              f"({', '.join(sorted(registry.models))}); train it first (`medlvm train "
                              f"tokenizer|transformer` exports to <trainer.out>/model) or --set {field}=FOLDER_OR_ID")
        folder = resolve_model_folder(str(path), registry)
    ckpt = load_checkpoint(folder, "cpu", torch.float32)
    return ckpt.tokenizer, ckpt.transformer, ckpt.preprocess


def check_accelerator(recipe: Recipe) -> None:
    """A GPU recipe on a machine without one fails here, not after its token cache is built (minutes to hours)."""
    accelerator = recipe.trainer.accelerator
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise MedLVMError(f"trainer.accelerator {accelerator}: no CUDA GPU is available here "
                          f"(torch {torch.__version__}); run it on a GPU machine or pass --accelerator cpu")


def cpu_precision(recipe: Recipe) -> Tuple[Recipe, str]:
    """The recipe with fp32 instead of bf16 when it trains on a CPU without bf16 instructions, and a warning
    saying so ("" when nothing changed). CPUs whose flags cannot be read are left as they are."""
    t = recipe.trainer
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    flags = cpu_flags()
    if not (on_cpu and str(t.precision).startswith("bf16")) or not flags or flags & BF16_CPU_FLAGS:
        return recipe, ""
    return with_trainer(recipe, precision="32"), (
        f"trainer.precision {t.precision}: this CPU has no bf16 instructions ({' or '.join(sorted(BF16_CPU_FLAGS))}), "
        "where bf16 runs about 20x slower than fp32; training in fp32 (precision 32) instead")


def init_llama_weights(module: torch.nn.Module, std: float = 0.02) -> None:
    """LLaMA initialisation: normal(0, std) for linear and embedding weights; norms stay at one."""
    for sub in module.modules():
        if isinstance(sub, (torch.nn.Linear, torch.nn.Embedding)):
            torch.nn.init.normal_(sub.weight, 0.0, std)


def build_system(recipe: Recipe):
    """(LightningModule, tokenizer used for the data or None)."""
    from MedLVMLib.training.systems import TokenizerSystem, TransformerSystem

    t = recipe.trainer
    total, seconds = t.max_steps, 60.0 * t.max_minutes
    if recipe.kind == "tokenizer":
        system = TokenizerSystem(recipe.model, recipe.loss, recipe.optim, total, seconds)
        if t.init_from:
            tok, _, _ = load_parts(t.init_from, "trainer.init_from")
            _load_matching(system.model, tok, "tokenizer", t.init_from)
            system.initialised.fill_(True)
        return system, None
    init = load_parts(t.init_from, "trainer.init_from") if t.init_from else None
    tok_src = recipe.data.tokenizer or t.init_from
    tokenizer = load_parts(recipe.data.tokenizer, "data.tokenizer")[0] if recipe.data.tokenizer else None
    tokenizer = init[0] if tokenizer is None and init is not None else tokenizer
    tpi = tokenizer.config.tokens_per_image if tokenizer is not None else None
    system = TransformerSystem(recipe.model, recipe.optim, total, seconds, recipe.loss, tpi)
    init_llama_weights(system.model)
    if init is not None:
        _load_matching(system.model, init[1], "transformer", t.init_from)
    if tokenizer is not None and tokenizer.config.codebook_size != recipe.model.codebook_size:
        raise MedLVMError(f"the tokenizer of {tok_src} has {tokenizer.config.codebook_size} codes; "
                          f"model.codebook_size is {recipe.model.codebook_size}")
    return system, tokenizer


def _load_matching(target: torch.nn.Module, source: Optional[torch.nn.Module], what: str, where: str) -> None:
    if source is None:
        raise MedLVMError(f"trainer.init_from {where} has no {what}")
    if source.config != target.config:
        raise MedLVMError(f"trainer.init_from {where}: its {what} config differs from the recipe's model section")
    target.load_state_dict({k: v.float() for k, v in source.state_dict().items()})


def _logger(t, run_dir: Path):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    if t.logger == "tensorboard":
        return TensorBoardLogger(str(run_dir), name="logs")
    if t.logger != "csv":
        raise MedLVMError(f"trainer.logger must be csv or tensorboard, got {t.logger!r}")
    return CSVLogger(str(run_dir), name="logs")


def make_trainer(recipe: Recipe, run_dir: Path, enable_progress_bar: bool = True):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

    t = recipe.trainer
    ckpt = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), every_n_train_steps=max(1, t.checkpoint_every),
                           save_last=True, save_top_k=1, monitor=None)
    return pl.Trainer(
        max_steps=t.max_steps, accelerator=t.accelerator, devices=t.devices, strategy=t.strategy,
        num_nodes=t.num_nodes, precision=t.precision, accumulate_grad_batches=t.accumulate,
        gradient_clip_val=recipe.optim.grad_clip or None, logger=_logger(t, run_dir),
        callbacks=[ckpt, LearningRateMonitor(logging_interval="step")],
        max_time=datetime.timedelta(minutes=t.max_minutes) if t.max_minutes > 0 else None,
        log_every_n_steps=t.log_every_n_steps, default_root_dir=str(run_dir),
        enable_progress_bar=enable_progress_bar, enable_model_summary=False, num_sanity_val_steps=0,
    )


def _datamodule(recipe: Recipe, tokenizer, run_dir: Path, progress: Progress):
    from MedLVMLib.training.data import TokenizerDataModule, TransformerDataModule

    if recipe.kind == "tokenizer":
        return TokenizerDataModule(recipe)
    return TransformerDataModule(recipe, tokenizer, run_dir / "tokens.npz", progress)


def fit(recipe: Recipe, resume: Optional[str] = None, progress: Optional[Progress] = None,
        export: bool = True, enable_progress_bar: bool = True) -> TrainResult:
    """Train per `recipe`, optionally resuming from a Lightning checkpoint, then export `run_dir/model`."""
    import pytorch_lightning as pl
    import yaml

    progress = ensure(progress)
    if resume and not Path(resume).is_file():
        raise MedLVMError(f"--resume {resume}: no such checkpoint file")
    check_accelerator(recipe)
    recipe, warning = cpu_precision(recipe)
    if warning:
        log.warning(warning)
    t = recipe.trainer
    if t.threads > 0:
        torch.set_num_threads(int(t.threads))
    run_dir = Path(t.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False), encoding="utf-8")
    pl.seed_everything(t.seed, workers=True, verbose=False)
    system, tokenizer = build_system(recipe)
    datamodule = _datamodule(recipe, tokenizer, run_dir, progress)
    if recipe.kind == "transformer":
        datamodule.prepare_codes()  # tokenise before the clock of the training loop starts
    trainer = make_trainer(recipe, run_dir, enable_progress_bar)
    start = time.time()
    _fit_until_stopped(trainer, system, datamodule, resume, progress)
    wall = time.time() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    export_dir = None
    if export and trainer.is_global_zero:
        export_dir = export_model(recipe, system, tokenizer, run_dir / "model")
        _write_summary(run_dir, recipe, trainer.global_step, wall, metrics, trainer.world_size)
    progress.log(f"trained {trainer.global_step} steps in {wall / 60:.1f} min; run folder {run_dir}")
    return TrainResult(run_dir, export_dir, int(trainer.global_step), wall, metrics)


def _fit_until_stopped(trainer, system, datamodule, resume: Optional[str], progress: Progress) -> None:
    """trainer.fit; a SIGTERM (e.g. a cluster pre-emption) stops training cleanly so the export still happens."""
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume)
    except SIGTERMException:
        progress.log(f"SIGTERM received: training stopped at step {trainer.global_step}")


def export_from_checkpoint(recipe: Recipe, ckpt_path: str, folder: Path) -> Path:
    """Export a Lightning checkpoint of `recipe` (e.g. checkpoints/last.ckpt of a stopped run) to MedLVM's format."""
    system, tokenizer = build_system(recipe)
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    system.load_state_dict(state["state_dict"])
    return export_model(recipe, system, tokenizer, folder)


def export_model(recipe: Recipe, system, tokenizer, folder: Path) -> Path:
    """MedLVM format: tokenizer (+ transformer) + preprocess in one folder."""
    from MedLVMLib.engine.checkpoints.formats import save_checkpoint

    t = recipe.trainer
    if t.export_dtype not in DTYPES:
        raise MedLVMError(f"trainer.export_dtype must be one of {sorted(DTYPES)}, got {t.export_dtype!r}")
    model = system.model.float().eval()
    if recipe.kind == "tokenizer":
        parts = {"tokenizer": model}
    else:
        parts = {"tokenizer": tokenizer.float().eval() if tokenizer is not None else None, "transformer": model}
    desc = f"MedLVM {recipe.kind} trained with {recipe.source or 'a recipe'}"
    return save_checkpoint(folder, preprocess=recipe.preprocess, model_id=t.export_id or folder.name,
                                       description=desc, overwrite=True, dtype=DTYPES[t.export_dtype], **parts)


def _write_summary(run_dir: Path, recipe: Recipe, step: int, wall: float, metrics: Dict[str, Any],
                   world_size: int = 1) -> None:
    """summary.json; the items seen count every process (world_size) and accumulated micro-batch."""
    t = recipe.trainer
    seen = step * t.batch_size * max(1, t.accumulate) * max(1, world_size)
    info = {"kind": recipe.kind, "global_step": step, "wall_s": round(wall, 1), "metrics": metrics,
            ("sentences_seen" if recipe.kind == "transformer" else "images_seen"): seen,
            "hardware": f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}",
            "torch": torch.__version__, "source": recipe.source}
    (run_dir / "summary.json").write_text(json.dumps(info, indent=2) + "\n")
