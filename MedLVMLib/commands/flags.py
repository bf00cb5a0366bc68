"""argparse `type=` functions for the commands' numeric flags: a bad value stops at parsing with a message
that names the flag and the allowed range (`medlvm predict motion: error: argument --top-p: ...`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable, Optional


def whole(minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
    """A whole number in [minimum, maximum]."""
    allowed = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number {allowed}, got '{text}'") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be a whole number {allowed}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def number(minimum: float, maximum: float = math.inf, above: bool = False, hint: str = "") -> Callable[[str], float]:
    """A finite number in [minimum, maximum] (`above`: strictly greater than `minimum`)."""
    bounds = ([f"> {minimum:g}" if above else f">= {minimum:g}"] if minimum > -math.inf else []) + (
        [f"<= {maximum:g}"] if maximum < math.inf else [])
    allowed = " ".join(["a number"] + [" and ".join(bounds)]) if bounds else "a finite number"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {allowed}, got '{text}'") from None
        too_low = value <= minimum if above else value < minimum
        if not math.isfinite(value) or too_low or value > maximum:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text}{hint}")
        return value

    parse.__name__ = "number"
    return parse


POSITIVE_INT = whole(1)
NON_NEGATIVE_INT = whole(0)
SEED = whole(0, 2**32 - 1)
TEMPERATURE = number(0.0, above=True, hint=" (for the most likely token use --greedy)")
TOP_P = number(0.0, 1.0, above=True, hint=" (1 keeps every token)")
POSITIVE = number(0.0, above=True)
FINITE = number(-math.inf)
NON_NEGATIVE = number(0.0)


def writable_output(text: str) -> Path:
    """An output path that can be written and, if it exists, holds only what MedLVM wrote (checked when the
    flag is parsed, before any work: for commands whose `run` checks it only when it writes)."""
    from MedLVMLib.errors import MedLVMError
    from MedLVMLib.outputs import check_output_path

    try:
        return check_output_path(text, overwrite=True)
    except MedLVMError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
