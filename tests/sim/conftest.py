"""Fixtures for the simulator's own tests: a small seeded account on a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from kommo_sim import RateLimitConfig, SimConfig, Simulator

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


def make_config(**overrides: object) -> SimConfig:
    values: dict[str, object] = {
        "seed": 7,
        "leads": 40,
        "contacts": 30,
        "token": TOKEN,
        "start_time": START,
        "clock_speed": 0.0,
        "rate_limit": RateLimitConfig(rate=0),
        "webhook_layouts": "fixed",  # the fixtures' layout; test_sim_layouts varies it
    }
    values.update(overrides)
    return SimConfig(**values)  # type: ignore[arg-type]


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def sim(receiver: Receiver) -> AsyncIterator[Simulator]:
    simulator = Simulator(make_config(), webhook_transport=receiver.transport)
    yield simulator
    await simulator.aclose()


@pytest.fixture
def make_client() -> Callable[[Simulator], httpx.AsyncClient]:
    def build(simulator: Simulator, token: str = TOKEN) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(simulator.app),
            base_url="http://sim.test",
            headers={"Authorization": f"Bearer {token}"},
        )

    return build


@pytest.fixture
async def client(
    sim: Simulator, make_client: Callable[[Simulator], httpx.AsyncClient]
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(sim) as c:
        yield c
