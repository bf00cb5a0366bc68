"""`medlvm train tokenizer --config FILE [--set section.key=value ...] [Lightning flags]`."""

from __future__ import annotations

import argparse

from MedLVMLib.training import cli_args

HELP = "train the tokenizer with Lightning from a YAML recipe (CPU, GPU, DDP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    cli_args.add_arguments(parser, "tokenizer")


def run(args: argparse.Namespace, progress=None) -> int:
    return cli_args.run(args, "tokenizer", progress)
