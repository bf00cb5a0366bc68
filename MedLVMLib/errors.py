"""Error types shown to users: a message that names the problem and what to do."""

from __future__ import annotations


class MedLVMError(ValueError):
    """Bad input or configuration. The CLI prints the message without a traceback and exits with status 2."""


class InputError(MedLVMError):
    """An input file, folder or array that cannot be used as given."""


class OutputError(MedLVMError):
    """An output path that cannot be written, or an existing output that MedLVM must not replace."""


class CheckpointError(MedLVMError):
    """A checkpoint that is missing, corrupt, of an unknown format or of the wrong shape."""


class TaskOutputError(MedLVMError):
    """A task's output failed a sanity check (NaN, infinite or impossible values): nothing is written."""


class Cancelled(RuntimeError):
    """The job was cancelled by the caller (progress callback asked to stop)."""
