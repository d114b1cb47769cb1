"""``kommo-sync`` processes under test: started as ``python -m service …``, their output read as
it comes, awaited by pattern under a timeout (never slept on), signalled, reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(env: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The service's environment for a child: the test's variables over a clean inheritance
    (no KOMMO_*, DATABASE_URL, REDIS_* or proxy settings from the outer shell)."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KOMMO_", "DATABASE_", "REDIS_", "WS_", "PORT"))
        and not k.lower().endswith("_proxy")
    }
    return {**inherited, "PYTHONPATH": str(ROOT), "LOG_LEVEL": "INFO", **env, **extra}


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, *args: str, env: Mapping[str, str]) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            *args,
            env=dict(env),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if re.search(pattern, line))

    async def line(self, pattern: str, timeout: float, *, after: int = 0) -> str:
        """The first line (from index ``after``) matching ``pattern``, waiting for it to come."""

        def found() -> str | None:
            return next((x for x in self.lines[after:] if re.search(pattern, x)), None)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: found() is not None or self._reader.done())
        except TimeoutError:
            pass
        line = found()
        if line is None:
            raise AssertionError(
                f"no line matching {pattern!r} within {timeout:.0f}s; output:\n{self.output}"
            )
        return line

    async def exit_code(self, timeout: float) -> int:
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                await self._reader
        except TimeoutError:
            raise AssertionError(
                f"still running after {timeout:.0f}s; output:\n{self.output}"
            ) from None
        return code

    async def stop(self, sig: int, timeout: float) -> tuple[int, float]:
        """Send ``sig``; the exit code and how long the process took to end."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = await self.exit_code(timeout)
        return code, time.monotonic() - started

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        await asyncio.wait({self._reader}, timeout=10)  # the pipe closes with the process


@contextlib.asynccontextmanager
async def running(*args: str, env: Mapping[str, str]) -> AsyncIterator[Child]:
    """A child for the length of a block; killed (with its process group) if still alive."""
    child = await Child.start(*args, env=env)
    try:
        yield child
    finally:
        await child.kill()
