"""What every benchmark shares: result rows and their table, a throwaway database and Redis
namespace, the service's processes (sim, web, worker) as subprocesses, RSS sampling.

A benchmark module exposes ``async def run(quick: bool) -> Report`` and ends with
``if __name__ == "__main__": main(run)``; :func:`main` prints the report's table and, with
``--json PATH``, writes its rows for the runner (``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil  # type: ignore[import-untyped]
from redis.asyncio import Redis

from service.store.migrations import migrate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LOGS = RESULTS / "logs"
PYTHON = sys.executable
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
ACCOUNT_ID = 31000001
FIRST_LEAD_ID = 24000001  # the simulator's seeded ids are consecutive from here


# ---------------------------------------------------------------- rows and tables


@dataclasses.dataclass(frozen=True)
class Goal:
    """``value`` (or ``ratio``, with ``on_ratio``) must be at most / at least ``limit``."""

    limit: float
    at_most: bool = True
    on_ratio: bool = False
    unit: str = ""

    def met(self, value: float, ratio: float | None) -> bool | None:
        subject = ratio if self.on_ratio else value
        if subject is None or math.isnan(subject):
            return None
        return subject <= self.limit if self.at_most else subject >= self.limit

    def __str__(self) -> str:
        sign = "≤" if self.at_most else "≥"
        number = f"{self.limit:.2f}×" if self.on_ratio else fmt(self.limit)
        return f"{sign} {number}{' ' + self.unit if self.unit and not self.on_ratio else ''}"


def at_most(limit: float, unit: str = "") -> Goal:
    return Goal(limit, True, False, unit)


def at_least(limit: float, unit: str = "") -> Goal:
    return Goal(limit, False, False, unit)


def ratio_at_most(limit: float) -> Goal:
    return Goal(limit, True, True)


def ratio_at_least(limit: float) -> Goal:
    return Goal(limit, False, True)


@dataclasses.dataclass
class Row:
    """One figure: its value, the baseline measured in the same run, and the goal."""

    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_note: str = ""
    goal: Goal | None = None
    problem: str = ""  # set when the figure does not mean what it says (the goal is then missed)

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.value):
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if self.problem:
            return False
        return None if self.goal is None else self.goal.met(self.value, self.ratio)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["goal"] = dataclasses.asdict(self.goal) if self.goal else None
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Row:
        goal = Goal(**data["goal"]) if data.get("goal") else None
        return cls(**{**data, "goal": goal})


@dataclasses.dataclass
class Report:
    """What one benchmark found: its rows, and notes (details, what limits each figure)."""

    rows: list[Row]
    notes: list[str] = dataclasses.field(default_factory=list)


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def _with_unit(x: float | None, unit: str) -> str:
    text = fmt(x)
    return text if text == "–" or not unit else f"{text} {unit}"


def table(rows: Sequence[Row]) -> str:
    lines = [
        "| benchmark | figure | value | baseline | ratio | goal | met? |",
        "| --- | --- | ---: | --- | ---: | --- | :---: |",
    ]
    for r in rows:
        baseline = _with_unit(r.baseline, r.unit)
        if r.baseline_note:
            baseline = (
                f"{baseline} ({r.baseline_note})" if r.baseline is not None else (r.baseline_note)
            )
        ratio = (
            "–" if r.ratio is None else f"{r.ratio:.2f}×" if r.ratio >= 0.1 else (f"{r.ratio:.3f}×")
        )
        met = {True: "yes", False: "**NO**", None: "–"}[r.met]
        value = _with_unit(r.value, r.unit) + (f" ({r.problem})" if r.problem else "")
        lines.append(
            f"| {r.bench} | {r.name} | {value} | {baseline} | {ratio} | {r.goal or '–'} | {met} |"
        )
    return "\n".join(lines)


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# ---------------------------------------------------------------- database and Redis


@dataclasses.dataclass(frozen=True)
class Scratch:
    """A throwaway database (migrated) and a Redis key prefix of its own."""

    name: str
    db_url: str
    redis_url: str
    prefix: str
    webhook_secret: str
    ws_token: str
    sim_token: str

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a service process pointed at this scratch space."""
        base = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        return {
            **base,
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "REDIS_PREFIX": self.prefix,
            "KOMMO_WEBHOOK_SECRET": self.webhook_secret,
            "KOMMO_TOKEN": self.sim_token,
            "KOMMO_ACCOUNT_ID": str(ACCOUNT_ID),
            "WS_TOKENS": self.ws_token,
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def key(self, name: str) -> str:
        return self.prefix + name

    def hook_path(self) -> str:
        return f"/webhooks/kommo/{self.webhook_secret}"


@contextlib.asynccontextmanager
async def scratch(label: str) -> AsyncIterator[Scratch]:
    """CREATE DATABASE + migrations, a unique REDIS_PREFIX; DROP and key deletion after."""
    admin_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    run = uuid.uuid4().hex[:8]
    name = f"kommo_bench_{label}_{run}"
    db_url = urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        conn = await asyncpg.connect(db_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield Scratch(
            name,
            db_url,
            redis_url,
            f"bench:{label}:{run}:",
            "w" * 8 + uuid.uuid4().hex,
            f"ws-{uuid.uuid4().hex}",
            f"sim-{uuid.uuid4().hex}",
        )
    finally:
        redis = Redis.from_url(redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"bench:{label}:{run}:*", count=1000)]
            for i in range(0, len(keys), 1000):
                await redis.delete(*keys[i : i + 1000])
        finally:
            await redis.aclose()
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def backfill_stage(db_url: str) -> str | None:
    """The backfill cursor's stage (``done`` when finished), None before it started."""
    conn = await asyncpg.connect(db_url)
    try:
        state = await conn.fetchval("SELECT state FROM sync_cursors WHERE name = 'backfill'")
    finally:
        await conn.close()
    if state is None:
        return None
    return str(json.loads(state).get("stage")) if isinstance(state, str) else str(state["stage"])


async def wait_backfilled(db_url: str, timeout: float, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while await backfill_stage(db_url) != "done":
        if proc is not None and proc.returncode is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.returncode}; see {proc.log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the backfill did not finish within {timeout:.0f} s")
        await asyncio.sleep(0.2)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A subprocess of the benchmark, its output in ``bench/results/logs/NAME.log``."""

    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, log: Path, handle: TextIO
    ) -> None:
        self.name, self.proc, self.log, self._handle = name, proc, log, handle

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL (with its children) if it has not exited in ``timeout``."""
        if self.proc.returncode is None:
            try:
                children = psutil.Process(self.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                for child in children:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
            for child in children:  # uvicorn's worker processes, normally gone by now
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.wait(2)
        self._handle.close()


async def spawn(name: str, args: Sequence[str], env: Mapping[str, str]) -> Proc:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    handle = log.open("w")
    proc = await asyncio.create_subprocess_exec(
        *args,
        env=dict(env),
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=handle,
        stderr=asyncio.subprocess.STDOUT,
    )
    return Proc(name, proc, log, handle)


@contextlib.asynccontextmanager
async def running(name: str, args: Sequence[str], env: Mapping[str, str]) -> AsyncIterator[Proc]:
    proc = await spawn(name, args, env)
    try:
        yield proc
    finally:
        await proc.stop()


async def wait_http(
    url: str, proc: Proc, timeout: float = 60.0, headers: Mapping[str, str] | None = None
) -> None:
    """Until ``url`` answers 200 (the process exiting meanwhile is an error)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.returncode}; see {proc.log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, headers=headers)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready within {timeout:.0f} s; see {proc.log}")
            await asyncio.sleep(0.1)


def sim_args(
    port: int, token: str, leads: int, contacts: int, webhooks: Sequence[str] = ()
) -> list[str]:
    """``python -m kommo_sim``: the simulator as a process, at Kommo's real limit (7 requests/s)."""
    args = [
        PYTHON,
        "-m",
        "kommo_sim",
        "--port",
        str(port),
        f"--token={token}",  # a token may start with "-"
        "--leads",
        str(leads),
        "--contacts",
        str(contacts),
    ]
    for url in webhooks:
        args += ["--webhook", url]
    return args


class SimControl:
    """The simulator's ``/_sim`` control API, from this process."""

    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(
            base_url=base_url,
            trust_env=False,
            timeout=30.0,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def counters(self) -> dict[tuple[str, int], int]:
        resp = await self.client.get("/_sim/counters")
        resp.raise_for_status()
        return {(c["endpoint"], int(c["status"])): int(c["count"]) for c in resp.json()}

    async def reset_counters(self) -> None:
        (await self.client.delete("/_sim/counters")).raise_for_status()

    async def mutate(self, op: str, **kwargs: Any) -> Any:
        resp = await self.client.post(f"/_sim/mutations/{op}", json=kwargs)
        resp.raise_for_status()
        return resp.json()["result"]

    async def unsubscribe(self, destination: str) -> None:
        """Kommo's own ``DELETE /api/v4/webhooks``: one API call, outside the service's budget,
        so retried after a 429."""
        for _ in range(10):
            resp = await self.client.request(
                "DELETE", "/api/v4/webhooks", json={"destination": destination}
            )
            if resp.status_code != 429:
                break
            await asyncio.sleep(1.0)
        resp.raise_for_status()


def api_calls(counters: Mapping[tuple[str, int], int], *, exclude: Sequence[str] = ()) -> int:
    """Kommo API calls in a counters snapshot (every status), minus excluded endpoints."""
    return sum(
        n
        for (endpoint, _), n in counters.items()
        if endpoint.split(" ", 1)[-1].startswith("/api/v4") and endpoint not in exclude
    )


def statuses(counters: Mapping[tuple[str, int], int], status: int) -> int:
    return sum(n for (_, s), n in counters.items() if s == status)


# ---------------------------------------------------------------- memory


def vm_hwm_mb(pid: int) -> float:
    """The kernel's peak RSS of a process (VmHWM), in MB; NaN once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class RssSampler:
    """Samples the RSS of a process (and its children) every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
        self.peak_mb = 0.0
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def sample(self) -> None:
        try:
            proc = psutil.Process(self.pid)
            rss = proc.memory_info().rss + sum(
                c.memory_info().rss for c in proc.children(recursive=True)
            )
        except psutil.NoSuchProcess:
            return
        self.samples += 1
        self.peak_mb = max(self.peak_mb, rss / 2**20)

    async def _sample(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)


# ---------------------------------------------------------------- entry point


def machine() -> str:
    return (
        f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {sys.version.split()[0]}"
    )


def main(
    run: Callable[[bool], Coroutine[Any, Any, Report]],
    description: str | None = None,
) -> None:
    """The command line of one benchmark: ``[--quick] [--json PATH]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks: processes, database

    signal.signal(signal.SIGTERM, stop)
    report = asyncio.run(run(args.quick))
    print()
    print(table(report.rows))
    for note in report.notes:
        print(f"- {note}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"rows": [r.to_json() for r in report.rows], "notes": report.notes}, indent=1
            )
        )
