"""Command-line flags shared by `medlvm train tokenizer` and `medlvm train transformer` (no torch import)."""

from __future__ import annotations

import argparse
from typing import Optional

from MedLVMLib.progress import Progress, TqdmProgress


def _devices(value: str):
    return value if value == "auto" or "," in value else int(value)


def add_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    parser.add_argument("--config", required=True, help=f"YAML {kind} recipe (e.g. Resources/configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a recipe field, e.g. --set trainer.max_steps=100 (repeatable)")
    parser.add_argument("--devices", type=_devices, default=None, help="devices per node: N, 'auto' or '0,1'")
    parser.add_argument("--accelerator", choices=["auto", "cpu", "gpu", "cuda", "mps"], default=None)
    parser.add_argument("--precision", choices=["32", "32-true", "bf16-mixed", "16-mixed", "bf16-true"], default=None)
    parser.add_argument("--strategy", default=None, help="auto | ddp | ddp_find_unused_parameters_true | fsdp ...")
    parser.add_argument("--num-nodes", type=int, default=None)
    parser.add_argument("--accumulate", type=int, default=None, help="gradient accumulation steps")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop cleanly (and export) after this")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--resume", default=None, metavar="CKPT", help="Lightning checkpoint to resume from")
    parser.add_argument("--logger", choices=["csv", "tensorboard"], default=None)
    parser.add_argument("--out", default=None, help="run folder (logs, checkpoints, exported model)")
    parser.add_argument("--no-export", action="store_true", help="skip writing run_dir/model at the end")


def run(args: argparse.Namespace, kind: str, progress: Optional[Progress] = None) -> int:
    from MedLVMLib.training.recipe import load_recipe, with_trainer

    recipe = load_recipe(args.config, args.overrides, expect_kind=kind)  # validated before heavy imports
    recipe = with_trainer(recipe, devices=args.devices, accelerator=args.accelerator, precision=args.precision,
                          strategy=args.strategy, num_nodes=args.num_nodes, accumulate=args.accumulate,
                          max_steps=args.max_steps, max_minutes=args.max_minutes, batch_size=args.batch_size,
                          logger=args.logger, out=args.out)
    from MedLVMLib.training.run import fit

    progress = progress if progress is not None else TqdmProgress()
    try:
        result = fit(recipe, resume=args.resume, progress=progress, export=not args.no_export)
    finally:
        progress.close()
    print(f"trained {result.global_step} steps in {result.wall_s / 60:.1f} min")
    print(f"run folder: {result.run_dir} (logs/, checkpoints/last.ckpt, recipe.yaml)")
    if result.export_dir is not None:
        print(f"model: {result.export_dir}")
    return 0
