"""Install trained runs as the bundled models: copy the export, write the model card, register the hash.

    python -m MedLVMLib.training.bundle --id medlvm-tiny-zs --run runs/transformer_tiny_zs \
        --tokenizer-run runs/tokenizer_tiny [--checks docs/training] [--command "..."]

Copies RUN/model/{config.json, model.safetensors} to Resources/models/<id>/, writes README.md (data, steps,
wall time, hardware, losses, codebook usage, reconstruction PSNR, exact command and recipe) and updates ONLY
the sha256 / size_bytes fields of <id> in Resources/models.json (or writes registry_entry.json beside the
model when the registry has no such entry).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from MedLVMLib.paths import resources_dir

RESOURCES = resources_dir()


def last_metrics(run: Path) -> Dict[str, float]:
    """Mean of the last 5 logged values of every train/* metric in the run's CSV log."""
    files = sorted((run / "logs").glob("version_*/metrics.csv"))
    if not files:
        return {}
    series: Dict[str, List[float]] = {}
    with open(files[-1], newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith("train/") and value not in ("", None):
                    series.setdefault(key, []).append(float(value))
    return {k.split("/", 1)[1]: round(sum(v[-5:]) / len(v[-5:]), 4) for k, v in series.items()}


def _summary(run: Path) -> Dict[str, Any]:
    path = run / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _section(title: str, run: Path, command: str) -> List[str]:
    s, m = _summary(run), last_metrics(run)
    recipe = (run / "recipe.yaml").read_text(encoding="utf-8") if (run / "recipe.yaml").is_file() else "(missing)"
    lines = [f"## {title}", "",
             f"- steps: {s.get('global_step', '?')}, wall time: {s.get('wall_s', 0) / 60:.1f} min",
             f"- hardware: {s.get('hardware', '?')}, torch {s.get('torch', '?')}",
             "- final training metrics (mean of the last 5 logged steps): "
             + ", ".join(f"{k} {v}" for k, v in sorted(m.items()) if k not in ("restarted",)),
             f"- command: `{command}`", "", "<details><summary>resolved recipe</summary>", "", "```yaml",
             recipe.rstrip(), "```", "", "</details>", ""]
    return lines


def model_card(model_id: str, run: Path, tokenizer_run: Path, intro: str, checks: Optional[Path],
               commands: Dict[str, str]) -> str:
    lines = [f"# {model_id}", "", intro.strip(), ""]
    if checks is not None and (checks / "tokenizer_psnr.json").is_file():
        psnr = json.loads((checks / "tokenizer_psnr.json").read_text(encoding="utf-8"))
        window = psnr.pop("window_hu", [-1000, 1000])
        lines += ["## Tokenizer reconstruction", "",
                  f"PSNR (dB) of encode -> decode at the model resolution (64x64 coronal slices), HU window "
                  f"[{window[0]:g}, {window[1]:g}] (peak 2000 HU), slices containing body only:", "",
                  "| images | PSNR (dB) |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in psnr.items()]
        lines += ["", "Figure: `docs/training/tokenizer_recon.png` (originals above reconstructions).", ""]
    cont = sorted(checks.glob(f"continuation_*{model_id}*.json")) if checks is not None else []
    for path in cont:
        scores = json.loads(path.read_text(encoding="utf-8"))
        lines += ["## Continuation check", "",
                  f"Held-out phantom (`{path.stem}`): 6 central coronal slices at 64x64, phases 0-4 given, 5-9 "
                  "generated; mean absolute error against the true phases 5-9, in HU (window [-1000, 1000]):", "",
                  "| prediction | MAE (HU) |", "|---|---|"]
        lines += [f"| {k.replace('mae_hu_', '').replace('_', ' ')} | {v} |" for k, v in scores.items()]
        lines += ["", "`copy last` copies the observed phase 4 at full fidelity; `copy last reconstructed` copies "
                  "it through the tokenizer (the floor for anything decoded by this tokenizer). "
                  f"Figure: `docs/training/{path.stem}.png`.", ""]
    lines += _section("Tokenizer training", tokenizer_run, commands.get("tokenizer", ""))
    lines += _section("Transformer training", run, commands.get("transformer", ""))
    lines += ["## Motion scores", "",
              "To be filled from the motion evaluation (`medlvm evaluate motion`); results, CSVs and figures "
              "will be in `docs/motion/`.", "",
              "## Reproduce", "", "`tools/train_bundled.sh` runs every step above in order.", ""]
    return "\n".join(lines)


def register(model_id: str, folder: Path, registry: Path) -> str:
    """Update sha256 / size_bytes of `model_id` in the registry; returns what was done."""
    from MedLVMLib.engine.checkpoints.formats import SAFETENSORS_NAME, sha256_file

    weights = folder / SAFETENSORS_NAME
    digest, size = sha256_file(weights), weights.stat().st_size
    if registry.is_file():
        data = json.loads(registry.read_text(encoding="utf-8"))
        for entry in data.get("models", []):
            if entry.get("id") == model_id:
                entry["sha256"], entry["size_bytes"] = digest, size
                registry.write_text(json.dumps(data, indent=2) + "\n")
                return f"updated {registry} entry {model_id}"
    entry = {"id": model_id, "source": {"bundled": f"models/{model_id}"}, "sha256": digest, "size_bytes": size}
    (folder / "registry_entry.json").write_text(json.dumps(entry, indent=2) + "\n")
    return f"wrote {folder / 'registry_entry.json'} (no registry entry for {model_id})"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedLVMLib.training.bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--id", required=True)
    parser.add_argument("--run", type=Path, required=True, help="transformer run folder (with model/)")
    parser.add_argument("--tokenizer-run", type=Path, required=True)
    parser.add_argument("--intro", default="", help="first paragraph of the model card")
    parser.add_argument("--checks", type=Path, default=None, help="folder with tokenizer_psnr.json etc.")
    parser.add_argument("--tokenizer-command", default="")
    parser.add_argument("--transformer-command", default="")
    parser.add_argument("--resources", type=Path, default=RESOURCES)
    args = parser.parse_args(argv)
    target = args.resources / "models" / args.id
    target.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(args.run / "model" / name, target / name)
    commands = {"tokenizer": args.tokenizer_command, "transformer": args.transformer_command}
    card = model_card(args.id, args.run, args.tokenizer_run, args.intro, args.checks, commands)
    (target / "README.md").write_text(card, encoding="utf-8")
    print(register(args.id, target, args.resources / "models.json"))
    print(f"model folder: {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
