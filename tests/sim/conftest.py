"""Fixtures for the simulator's own tests: a small seeded account on a frozen clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from kommo_sim import Simulator
from tests.sim.helpers import TOKEN, Receiver, make_config


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
