"""Kommo's request limit: more than ``rate`` requests in one second gets 429, and
repeated 429s get every call a 403 for a while (API.md §4)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from kommo_sim.clock import SimClock

logger = logging.getLogger(__name__)

Verdict = Literal["ok", "429", "403"]


@dataclass
class RateLimitConfig:
    rate: int = 7  # requests allowed per sliding second (0 disables the limit)
    block_after: int = 20  # this many 429s within block_window seconds ...
    block_window: float = 60.0
    block_seconds: float = 600.0  # ... block every call for this long (simulated seconds)
    retry_after: int = 1  # the retry_after field of the JSON 429 body


class RateLimiter:
    """One sliding window per token, measured on the real monotonic clock.

    Every arriving request counts, including rejected ones. The 429 history and the
    block run on the simulator clock, so a test can lift a block with clock.advance().
    """

    def __init__(
        self,
        config: RateLimitConfig,
        clock: SimClock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self._windows: dict[str, deque[float]] = {}
        self._rejections: deque[float] = deque()
        self.blocked_until = 0.0

    def check(self, token: str) -> Verdict:
        """Count one request for ``token`` and say whether it may pass."""
        now_sim = self._clock.now()
        if now_sim < self.blocked_until:
            return "403"
        if self.config.rate <= 0:
            return "ok"
        now = self._monotonic()
        window = self._windows.setdefault(token, deque())
        window.append(now)
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) <= self.config.rate:
            return "ok"
        return "403" if self.note_429() else "429"

    def note_429(self) -> bool:
        """Record a 429 sent (by the limit or a storm); True if that starts a block."""
        now_sim = self._clock.now()
        self._rejections.append(now_sim)
        while self._rejections and self._rejections[0] < now_sim - self.config.block_window:
            self._rejections.popleft()
        if self.config.block_after and len(self._rejections) > self.config.block_after:
            self.blocked_until = now_sim + self.config.block_seconds
            self._rejections.clear()
            logger.warning("rate limit: blocking all calls for %ss", self.config.block_seconds)
            return True
        return False

    def reset(self) -> None:
        self._windows.clear()
        self._rejections.clear()
        self.blocked_until = 0.0
