"""Fault switches, all changeable at run time, all drawing from one seeded Random.

Durations (``storm_until``, ``block_until``) and the lagging-read window are on the
simulator clock, so tests end them with ``sim.clock.advance(...)``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, fields
from typing import Any

from kommo_sim.clock import SimClock

logger = logging.getLogger(__name__)


@dataclass
class Faults:
    latency_ms: float = 0.0  # added to every API call
    error_rate: float = 0.0  # fraction of API calls answered with a 5xx
    error_status: int = 500  # which 5xx
    storm_until: float = 0.0  # every API call gets 429 until this simulated time
    block_until: float = 0.0  # every API call gets the nginx 403 until this simulated time
    payment_required: bool = False  # every API call gets 402 (trial over)
    html_429: bool = False  # 429 bodies as the gateway HTML page instead of JSON
    webhook_drop: float = 0.0  # fraction of webhook deliveries silently never sent
    webhook_duplicate: float = 0.0  # fraction sent twice
    webhook_delay: float = 0.0  # fraction delayed by uniform(0, webhook_delay_max) seconds
    webhook_delay_max: float = 0.0
    lag_seconds: float = 0.0  # how long after a change reads may show the previous version
    lag_probability: float = 0.0  # with this probability
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def roll(self, probability: float) -> bool:
        return probability > 0 and self.rng.random() < probability

    def update(self, clock: SimClock, **changes: Any) -> None:
        """Set switches by name; ``storm_seconds``/``block_seconds`` start a storm or block now.

        Unknown names raise ValueError, so a typo in a test does not pass silently.
        """
        names = {f.name for f in fields(self)} - {"rng"}
        for name, value in changes.items():
            if name == "storm_seconds":
                self.storm_until = clock.now() + float(value)
            elif name == "block_seconds":
                self.block_until = clock.now() + float(value)
            elif name == "seed":
                self.rng.seed(int(value))
            elif name in names:
                kind = type(getattr(self, name))
                setattr(self, name, kind(value))
            else:
                raise ValueError(f"unknown fault {name!r}")
        logger.info("faults now %s", self.as_dict())

    def reset(self) -> None:
        for f in fields(self):
            if f.name != "rng":
                setattr(self, f.name, f.default)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rng"}
