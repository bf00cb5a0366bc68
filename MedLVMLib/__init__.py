"""MedLVM engine: a VQGAN tokenizer plus a LLaMA-style transformer that continues sequences of CT images.

Importing the package is light (no torch); the public API lives in `MedLVMLib.api`.
"""

from __future__ import annotations

__version__ = "0.1.0"
