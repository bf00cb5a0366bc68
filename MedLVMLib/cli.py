"""`medlvm` / `python -m MedLVMLib`: a thin dispatcher over MedLVMLib.commands.

Each command lives in its own module under `MedLVMLib/commands/` and exposes:
    HELP: str                          one line for `medlvm --help`
    add_arguments(parser) -> None      its flags
    run(args) -> int                   the work; heavy imports happen here, not at module import
A module that is missing (a capability not installed) is left out of the help instead of failing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Optional, Sequence

from MedLVMLib import __version__
from MedLVMLib.errors import Cancelled, MedLVMError

# (command words, module under MedLVMLib.commands)
COMMANDS: list[tuple[tuple[str, ...], str]] = [
    (("demo",), "demo"),
    (("info",), "info"),
    (("models",), "models"),
    (("phantom",), "phantom"),
    (("predict", "motion"), "predict_motion"),
    (("predict", "segment"), "predict_segment"),
    (("predict", "denoise"), "predict_denoise"),
    (("predict", "superres"), "predict_superres"),
    (("evaluate", "motion"), "evaluate_motion"),
    (("evaluate", "segment"), "evaluate_segment"),
    (("evaluate", "denoise"), "evaluate_denoise"),
    (("evaluate", "superres"), "evaluate_superres"),
    (("train", "tokenizer"), "train_tokenizer"),
    (("train", "transformer"), "train_transformer"),
    (("convert",), "convert"),
    (("worker",), "worker"),
]

GROUP_HELP = {
    "predict": "run a task on a CT / 4D CT",
    "evaluate": "compare MedLVM with baselines on a set of cases",
    "train": "train the tokenizer or the transformer (needs pytorch-lightning)",
}


def _load(module_name: str):
    try:
        return importlib.import_module(f"MedLVMLib.commands.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("MedLVMLib.commands"):
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medlvm", description="MedLVM: zero-shot Large Vision Model on CT.")
    parser.add_argument("--version", action="version", version=f"medlvm {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    parser.set_defaults(_build_parser=build_parser)  # for `medlvm worker`, which parses the requests it serves
    top = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, module_name in COMMANDS:
        module = _load(module_name)
        if module is None:
            continue
        if len(words) == 1:
            sub = top.add_parser(words[0], help=module.HELP, description=module.HELP)
        else:
            if words[0] not in groups:
                group = top.add_parser(words[0], help=GROUP_HELP.get(words[0]))
                groups[words[0]] = group.add_subparsers(dest="subcommand", metavar="TASK", required=True)
            sub = groups[words[0]].add_parser(words[1], help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `medlvm` with `argv`; returns the exit status (2 for bad input, printed as one line)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed a usage error (status 2) or --help / --version (status 0)
        return exc.code if isinstance(exc.code, int) else 0
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not hasattr(args, "_run"):
        parser.print_help()
        return 1
    try:
        return int(args._run(args) or 0)
    except MedLVMError as exc:
        if args.verbose:
            raise
        print(f"medlvm: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled as exc:
        print(f"medlvm: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("medlvm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
