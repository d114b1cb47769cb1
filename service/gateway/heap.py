"""Giving memory back to the system after a burst of WebSocket closes.

Every byte of a socket is freed when it closes (its filter, tasks, queue, uvicorn's connection),
but the C allocator keeps freed memory for reuse: measured with 3,000 sockets holding full
filters (``bench/wsmemory.py``), the web process stayed at 550-600 MB after they had all closed,
12× its idle 48 MB. ``malloc_trim(0)`` (glibc) returns the free pages of every heap at once; it
takes tens of milliseconds on a large heap, so :class:`HeapTrimmer` calls it from the hub's tick
only after a burst of closes, once the burst is over (or every ``interval`` seconds while one
goes on). Without glibc it only collects garbage.

CPython's own allocator (pymalloc) keeps a 1 MiB arena for as long as one object in it lives:
after thousands of connections a few survivors pin tens of arenas, which no trim returns. The web
process therefore runs with ``PYTHONMALLOC=malloc`` (the Procfile), where the same objects live
in glibc's heap and their pages go back page by page.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


class HeapTrimmer:
    """Counts closed sockets; :meth:`tick` trims once ``burst`` or more have closed and none for
    ``quiet`` seconds, or when ``interval`` seconds have passed since the last trim."""

    def __init__(self, burst: int = 64, quiet: float = 2.0, interval: float = 30.0) -> None:
        self.burst, self.quiet, self.interval = burst, quiet, interval
        self.closed = 0  # sockets closed since the last trim
        self.trims = 0
        self._trim = _malloc_trim()
        self._last_close = self._last_trim = 0.0

    def note_closed(self, now: float) -> None:
        self.closed += 1
        self._last_close = now

    def tick(self, now: float) -> bool:
        """Trim now if a burst of closes is over (or has gone on for ``interval``); True if so."""
        if self.closed < self.burst:
            return False
        if now - self._last_close < self.quiet and now - self._last_trim < self.interval:
            return False
        started = time.perf_counter()
        gc.collect()  # what only the cycle collector frees goes too, and the free lists
        if self._trim is not None:
            self._trim(0)
        log.debug(
            "heap trimmed after %d sockets closed (%.0f ms)",
            self.closed,
            (time.perf_counter() - started) * 1000,
        )
        self.closed, self._last_trim = 0, now
        self.trims += 1
        return True
