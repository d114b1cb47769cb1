"""The simulator's test account: a small seeded account on a frozen clock, its token, and a
receiver that captures the webhooks the simulator sends."""

from __future__ import annotations

from typing import Any

import httpx

from kommo_sim import RateLimitConfig, SimConfig

TOKEN = "test-token"
START = 1748268669  # 2025-05-26, the fixtures' era
HOOK_URL = "https://hooks.test/kommo/webhook"


class Receiver:
    """Captures webhook requests through an httpx.MockTransport; answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.error: Exception | None = None
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return httpx.Response(self.status)

    @property
    def bodies(self) -> list[str]:
        return [r.content.decode() for r in self.requests]


def make_config(**overrides: Any) -> SimConfig:
    """The small seeded account on a frozen clock, with ``overrides`` of its settings."""
    values: dict[str, Any] = {
        "seed": 7,
        "leads": 40,
        "contacts": 30,
        "token": TOKEN,
        "start_time": START,
        "clock_speed": 0.0,
        "rate_limit": RateLimitConfig(rate=0),
    }
    values.update(overrides)
    return SimConfig(**values)
