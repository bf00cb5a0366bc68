"""Progress reporting shared by the CLI (tqdm bars) and the Slicer worker (JSON events).

Long-running engine functions take `progress: Progress | None`. They call `progress.stage(name, total)`
to start a stage and `progress.advance(n)` as work completes. Callers decide how to show it.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

from MedLVMLib.errors import Cancelled


class Progress:
    """Base progress sink: silent. Subclasses render it; `cancelled()` lets a caller stop a job."""

    def stage(self, name: str, total: Optional[int] = None) -> None:
        self._name, self._total, self._done = name, total, 0
        self.on_update(name, 0, total)

    def advance(self, n: int = 1) -> None:
        self._done = getattr(self, "_done", 0) + n
        self.on_update(getattr(self, "_name", ""), self._done, getattr(self, "_total", None))
        if self.cancelled():
            raise Cancelled(f"cancelled during {getattr(self, '_name', 'work')}")

    def log(self, message: str) -> None:
        """An informational line for the user (e.g. which rule ordered DICOM phases)."""

    def on_update(self, name: str, done: int, total: Optional[int]) -> None:
        """Called on every stage start and advance."""

    def cancelled(self) -> bool:
        return False

    def close(self) -> None:
        """Finish any open rendering."""


class TqdmProgress(Progress):
    """One tqdm bar per stage on stderr when it is a terminal; otherwise (a log file, CI) one line per stage
    when it ends, instead of a bar redrawn with carriage returns into the file."""

    def __init__(self, disable: bool = False, stream: Optional[TextIO] = None):
        self._bar = None
        self._disable = disable
        self._stream = stream if stream is not None else sys.stderr
        self._live = bool(getattr(self._stream, "isatty", lambda: False)())
        self._started: Optional[float] = None

    def stage(self, name: str, total: Optional[int] = None) -> None:
        self.close()
        if self._live:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=name, unit="it", disable=self._disable, leave=True, file=self._stream)
        else:
            self._started = time.perf_counter()
        super().stage(name, total)

    def on_update(self, name: str, done: int, total: Optional[int]) -> None:
        if self._bar is not None and done != self._bar.n:  # the bar drew itself at 0 when it was made
            self._bar.n = done
            self._bar.refresh()

    def log(self, message: str) -> None:
        if self._live:
            from tqdm.auto import tqdm

            tqdm.write(message, file=self._stream)
        elif not self._disable:
            print(message, file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._started is not None:
            if not self._disable:
                # a stage without a total that never advanced has no count to report, only its time
                count = f"{self._done}/{self._total}" if self._total else (f"{self._done}" if self._done else "done")
                print(f"{self._name}: {count} in {time.perf_counter() - self._started:.1f} s", file=self._stream,
                      flush=True)
            self._started = None


class CallbackProgress(Progress):
    """Forwards updates to `callback(stage, done, total)`; `should_cancel()` is polled on every advance."""

    def __init__(self, callback: Callable[[str, int, Optional[int]], None],
                 should_cancel: Optional[Callable[[], bool]] = None,
                 log: Optional[Callable[[str], None]] = None):
        self._callback = callback
        self._should_cancel = should_cancel
        self._log = log

    def on_update(self, name: str, done: int, total: Optional[int]) -> None:
        self._callback(name, done, total)

    def log(self, message: str) -> None:
        if self._log is not None:
            self._log(message)

    def cancelled(self) -> bool:
        return bool(self._should_cancel and self._should_cancel())


def ensure(progress: Optional[Progress]) -> Progress:
    """A usable progress object: the given one or a silent one."""
    return progress if progress is not None else Progress()
