"""The ports one ``make run`` listens on: web, worker metrics and the simulator.

A port set in the environment (``PORT``, ``WORKER_METRICS_PORT``) is used as it is, or refused
with one line naming the variable when it is busy. Otherwise the first free one from 8000 (web)
and 9101 (worker metrics) up, then any free port; the simulator takes any free port. A port is
busy when something listens on it or another live run has claimed it (it may not listen yet).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from devenv.services import free_port
from service.settings import ConfigError

log = logging.getLogger(__name__)

WEB_PORTS = range(8000, 8100)
METRICS_PORTS = range(9101, 9200)


@dataclass(frozen=True)
class Ports:
    web: int
    metrics: int
    sim: int | None  # None: a real account, no simulator

    @property
    def all(self) -> tuple[int, ...]:
        return (self.web, self.metrics) + (() if self.sim is None else (self.sim,))


def choose(env: Mapping[str, str], claimed: set[int], *, simulator: bool) -> Ports:
    """Ports no live run has claimed and nothing listens on; ConfigError for a busy given one."""
    taken = set(claimed)
    web = _pick("PORT", env, WEB_PORTS, taken)
    metrics = _pick("WORKER_METRICS_PORT", env, METRICS_PORTS, taken)
    return Ports(web, metrics, _any(taken) if simulator else None)


def free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick(name: str, env: Mapping[str, str], preferred: range, taken: set[int]) -> int:
    given = (env.get(name) or "").strip()
    if given:  # already validated by Settings.from_env
        port = int(given)
        if port in taken or not free(port):
            raise ConfigError(name, f"{port} is already in use; set {name} to a free port")
        taken.add(port)
        return port
    port = next((p for p in preferred if p not in taken and free(p)), None) or _any(taken)
    if port != preferred.start:
        log.info("port %d is busy; %s=%d (set %s to choose)", preferred.start, name, port, name)
    taken.add(port)
    return port


def _any(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port
