"""The simulator's clock: real time by default, which tests can speed up, freeze or advance.

Everything time-based in the simulator (``updated_at``, event times, token expiry, webhook
retries, fault durations) reads this clock, so a test can jump over a 15-minute retry with
``sim.clock.advance(900)`` instead of waiting for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)


class SimClock:
    """Unix time that runs at ``speed`` × real time from ``start`` (default: now).

    ``speed=0`` freezes the clock; only :meth:`advance` and :meth:`set` move it then.
    """

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        self._base_sim = time.time() if start is None else float(start)
        self._base_real = time.monotonic()
        self._speed = speed
        self._listeners: list[Callable[[], None]] = []

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        """Current simulated Unix time in seconds (float)."""
        return self._base_sim + (time.monotonic() - self._base_real) * self._speed

    def now_s(self) -> int:
        """Current simulated Unix time truncated to whole seconds, as Kommo stores it."""
        return int(self.now())

    def advance(self, seconds: float) -> None:
        """Jump forward (or back, for a negative value) by ``seconds``."""
        self._rebase(self.now() + seconds)

    def set(self, timestamp: float) -> None:
        """Jump to an absolute Unix time."""
        self._rebase(float(timestamp))

    def set_speed(self, speed: float) -> None:
        """Run at ``speed`` × real time from now on (0 freezes)."""
        if speed < 0:
            raise ValueError("speed must be >= 0")
        now = self.now()
        self._speed = speed
        self._rebase(now)

    def real_seconds_until(self, timestamp: float) -> float | None:
        """Real seconds until the clock shows ``timestamp``; None if it never will (frozen)."""
        remaining = timestamp - self.now()
        if remaining <= 0:
            return 0.0
        if self._speed == 0:
            return None
        return remaining / self._speed

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` whenever the clock jumps or changes speed."""
        self._listeners.append(listener)

    def _rebase(self, timestamp: float) -> None:
        self._base_sim = timestamp
        self._base_real = time.monotonic()
        logger.debug("clock set to %.3f (speed %s)", timestamp, self._speed)
        for listener in self._listeners:
            listener()
