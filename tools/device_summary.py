"""summary.json of tools/device_run.sh: each step's exit status and seconds, the training report of
tools/device_train.py (steps, tokens, data-build seconds) and the model parts with the command that rejoins them.

    python tools/device_summary.py --work WORK --out OUT --budget SECONDS --elapsed SECONDS [--dry-run 0|1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from pathlib import Path

REJOIN = "cat model.tar.part* | tar -xf - -C DEST"


def read_steps(path: Path) -> list:
    """steps.tsv rows (name, status, seconds, limit) -> dicts; status is the exit status or 'skipped'."""
    steps = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, seconds, limit = line.split("\t")
        steps.append({"name": name, "status": int(status) if status.lstrip("-").isdigit() else status,
                      "seconds": int(seconds), "limit_s": int(limit)})
    return steps


def model_parts(out: Path, train: dict) -> dict:
    parts = sorted(out.glob("model.tar.part*"))
    if not parts:
        return {}
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.read_bytes())
    return {"folder": (train.get("model") or {}).get("folder"), "parts": {p.name: p.stat().st_size for p in parts},
            "sha256": digest.hexdigest(), "rejoin": REJOIN}


def device() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--elapsed", type=int, required=True)
    parser.add_argument("--dry-run", default="0")
    args = parser.parse_args(argv)
    train_json = args.work / "train" / "train.json"
    train = json.loads(train_json.read_text()) if train_json.is_file() else None
    summary = {"dry_run": args.dry_run == "1", "budget_s": args.budget, "elapsed_s": args.elapsed,
               "device": device(), "steps": read_steps(args.work / "steps.tsv"), "train": train,
               "model": model_parts(args.out, train or {})}
    summary["failed_steps"] = [s["name"] for s in summary["steps"] if s["status"] not in (0, "skipped")]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("steps", "failed_steps", "model")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
