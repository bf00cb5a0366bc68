"""`medlvm worker`: the engine process of the Slicer module (JSON lines on stdin/stdout)."""

from __future__ import annotations

import argparse

HELP = "serve requests from the Slicer module over stdin/stdout (JSON lines; no network port)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("Protocol: see MedLVMLib/slicer/protocol.py. End of input or {\"cmd\": \"shutdown\"} stops "
                     "the worker.")


def run(args: argparse.Namespace, progress=None) -> int:
    from MedLVMLib.slicer.server import serve_stdio

    return serve_stdio(args._build_parser)
