"""``python -m devenv run`` (what ``make run`` runs) as a process under test.

:func:`run_env` points it at the session's PostgreSQL and Redis as if they were the machine's
local servers (so it creates a demo database of its own there); :class:`Stack` starts it,
collects its output, waits for its web process's ``/readyz`` and reads its banner.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

from tests.session import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, with_database

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def until(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy, under an overall deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Output:
    """A child's merged output, collected by a thread (for the banner and for failures)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def close(self, proc: subprocess.Popen[bytes]) -> None:
        self._thread.join(10)
        assert proc.stdout is not None
        proc.stdout.close()

    def search(self, pattern: str) -> re.Match[str] | None:
        return next(filter(None, (re.search(pattern, line) for line in list(self.lines))), None)

    def tail(self, n: int = 60) -> str:
        return "".join(self.lines[-n:])


def server_url() -> str:
    """The session's PostgreSQL server (its maintenance database)."""
    return with_database(os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL, "postgres")


def redis_server_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def run_env(**extra: str) -> dict[str, str]:
    """A `make run` environment with nothing of the session's stack in it: the session's
    servers are its "local" PostgreSQL and Redis; no Kommo account (the simulator)."""
    dropped = ("KOMMO_", "DATABASE_URL", "REDIS_", "WS_TOKENS", "PORT", "WORKER_", "LOCAL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(LOCAL_DATABASE_URL=server_url(), LOCAL_REDIS_URL=redis_server_url())
    env["PYTHONPATH"] = str(ROOT)  # the dev supervisor and the simulator are not installed
    env.update(extra)
    return env


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an env file (``NAME=<shell word>`` lines)."""
    found = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = shlex.split(value)[0] if value else ""
    return found


def shell(line: str) -> subprocess.CompletedProcess[str]:
    """Run ``line`` with ``sh`` in the checkout, in the environment of a new login shell."""
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        ["sh", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@dataclass(frozen=True)
class Banner:
    """What the ready banner says about the stack."""

    base: str  # http://127.0.0.1:PORT
    env_file: Path
    cli: str  # the shell line that runs kommo-sync status against this stack
    database: str | None

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


class Stack:
    """One ``python -m devenv run``, in its own session (Ctrl-C reaches it alone)."""

    def __init__(self, env: dict[str, str], cwd: Path = ROOT) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devenv", "run"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.output = Output(self.proc)

    def _alive(self) -> bool:
        assert self.proc.poll() is None, f"make run exited early:\n{self.output.tail()}"
        return True

    def _seen(self, pattern: str) -> re.Match[str] | None:
        """A line of output matching ``pattern``; fails at once when the run has ended."""
        return self.output.search(pattern) if self._alive() else None

    def ready(self, timeout: float = 90) -> Banner:
        """Wait for the web process to listen and ``/readyz`` to answer 200; the banner."""
        listening = until(
            "the web process to listen",
            lambda: self._seen(r"Uvicorn running on (http://127\.0\.0\.1:\d+)"),
            timeout,
        )
        base = listening.group(1)
        until("/readyz to answer 200", lambda: self._alive() and readyz(base) == 200, timeout)
        cli = until("the banner", lambda: self._seen(r"CLI\s+(set -a; \. (\S+); .*)$"), 15)
        database = self.output.search(r"database\s+(kommo_sync_demo_\w+)")
        return Banner(base, ROOT / cli.group(2), cli.group(1), database and database.group(1))

    def stop(self, timeout: float = 30) -> int:
        """Ctrl-C, as a terminal sends it; the exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout)
        self.output.close(self.proc)
        return code

    def close(self) -> None:
        """Stop it if it still runs (killing it and its children after 30 s)."""
        if self.proc.poll() is None:
            try:
                self.stop()
                return
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    child.kill()
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.output.close(self.proc)


def readyz(base: str) -> int | None:
    try:
        return httpx.get(f"{base}/readyz", timeout=2, trust_env=False).status_code
    except httpx.HTTPError:
        return None
