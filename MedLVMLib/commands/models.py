"""`medlvm models`: the model registry (Resources/models.json) as a table; `--download ID` fetches a hub model."""

from __future__ import annotations

import argparse

HELP = "list the registered models and where they are (--download ID fetches a public model, with consent)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download", metavar="ID", help="download this hub model into the cache folder "
                        "(several GB for lvm-7b; passing the flag is your consent); an interrupted download resumes, "
                        "and the model appears only once every file is checked. MEDLVM_HUB_MIRROR=<folder> copies "
                        "from local copies of the hub repositories (<folder>/<org>/<name>) instead")


def table() -> str:
    from MedLVMLib.engine.checkpoints.registry import default_mark, is_available, load_registry, model_location

    registry = load_registry()
    head = "| id | tasks | device | memory | size | status | description |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for entry in registry.models.values():
        folder = model_location(entry, registry)
        if is_available(folder):
            status = f"available: {folder}"
        else:
            status = f"missing: {folder}" if entry.bundled else f"not downloaded ({entry.source.get('hub')})"
        size = f"{entry.size_bytes / 1e9:.2f} GB" if entry.size_bytes else "-"
        name = entry.id + default_mark(registry, entry.id)
        lines.append(f"| {name} | {', '.join(entry.tasks)} | {entry.recommended_device} | {entry.memory_gb:g} GB | "
                     f"{size} | {status} | {entry.description} |")
    return "\n".join(lines)


def run(args: argparse.Namespace, progress=None) -> int:
    if args.download:
        from MedLVMLib.engine.checkpoints.download import download_model
        from MedLVMLib.progress import TqdmProgress

        progress = progress if progress is not None else TqdmProgress()
        try:
            folder = download_model(args.download, consent=True, progress=progress)
        finally:
            progress.close()
        print(f"downloaded {args.download} to {folder}")
        return 0
    print(table())
    return 0
