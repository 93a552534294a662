"""Giving memory the operator freed back to the operating system.

glibc keeps freed heap pages for later: after a burst (judging a thousand new
releases at once) the process would go on holding its high-water mark.
``malloc_trim(0)`` returns every free page; the operator calls it once a
minute from a thread of its own (a few milliseconds on a heap of hundreds of
MB). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable

TRIM_SECONDS = 60.0


def _malloc_trim() -> Callable[[int], int] | None:
    # libc.so.6 by name first: slim images may lack what find_library runs.
    for name in ("libc.so.6", ctypes.util.find_library("c")):
        if name is None:
            continue
        try:
            function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
        except (OSError, AttributeError):  # not there, or not glibc
            continue
        return function
    return None


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return free heap pages to the OS; whether anything was returned."""
    return bool(_TRIM(0)) if _TRIM is not None else False


class MemoryTrimmer:
    """Calls :func:`trim` every ``every`` seconds until stopped."""

    def __init__(self, every: float = TRIM_SECONDS) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MemoryTrimmer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="memory-trim", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            trim()
