"""A faithful in-memory simulator of the Kommo API v4, for tests, benchmarks and demo mode.

In process::

    sim = Simulator(SimConfig(seed=1, leads=100, contacts=60, token="t"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(sim.app)) as client: ...
    async with serve(sim, port=0) as base_url: ...   # a real HTTP server in this loop

Production code never imports this package.
"""

from kommo_sim.changes import FIELD_TYPE_IDS
from kommo_sim.churn import random_mutation
from kommo_sim.clock import SimClock
from kommo_sim.faults import Faults
from kommo_sim.oauth import OAuthConfig
from kommo_sim.ratelimit import RateLimitConfig
from kommo_sim.server import serve, serve_app
from kommo_sim.simulator import ALL_SETTINGS, NotFound, SimConfig, Simulator

__all__ = [
    "ALL_SETTINGS",
    "FIELD_TYPE_IDS",
    "Faults",
    "NotFound",
    "OAuthConfig",
    "RateLimitConfig",
    "SimClock",
    "SimConfig",
    "Simulator",
    "random_mutation",
    "serve",
    "serve_app",
]
