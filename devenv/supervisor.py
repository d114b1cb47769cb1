"""``python -m devenv run`` (what ``make run`` does): the whole system on one machine.

Without ``KOMMO_SUBDOMAIN``/``KOMMO_BASE_URL``/``KOMMO_TOKEN``: against the bundled simulator
(a gentle flow of changes, with webhooks); with them, against that account. Postgres and Redis
come from :func:`devenv.services.services` (embedded when none is reachable). In start order::

    sim       python -m kommo_sim …  (simulator mode only; waited for until it listens)
    release   kommo-sync migrate     (runs to completion)
    web       kommo-sync web         (waited for until /readyz answers 200)
    worker    kommo-sync worker

Each child has its own session, so Ctrl-C reaches only this supervisor, which stops them in
order (web, worker, sim: SIGTERM, SIGKILL after a timeout), then the embedded services. When a
child dies the others are stopped and the exit code is 1. Child output is prefixed with its
name, with the webhook secret and the Kommo token masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

from devenv.services import ROOT, free_port, services
from service.settings import ConfigError, Needs, Settings

log = logging.getLogger("devenv")

STOP_ORDER = ("web", "worker", "sim")
STOP_TIMEOUT_S = 10.0
SIM_ARGS = ("--leads", "300", "--contacts", "150", "--changes-per-second", "0.5")


class Stop(Exception):
    """A signal arrived or a child died: unwind and stop everything."""


class Supervisor:
    """The child processes, their prefixed output, and the stop flag set by signals."""

    def __init__(self, hide: Sequence[str]) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop = threading.Event()
        self.failure: str | None = None
        self._hide = [h for h in hide if h]
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []
        self.mute: str | None = None  # child output lines containing it are dropped

    def write(self, text: str) -> None:
        with self._lock:
            sys.stdout.write(text)
            sys.stdout.flush()

    def start(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children[name] = proc
        pump = threading.Thread(target=self._pump, args=(name, proc), daemon=True)
        pump.start()
        self._pumps.append(pump)

    def _pump(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if self.mute is not None and self.mute in line:
                continue
            for secret in self._hide:
                line = line.replace(secret, "***")
            self.write(f"{name:<8}| {line}\n")
        proc.stdout.close()

    def tick(self, seconds: float, watch: Sequence[str] | None = None) -> None:
        """Wait a little; raise :class:`Stop` on a signal or when a watched child exited."""
        if self.stop.wait(seconds):
            raise Stop
        for name in self.children if watch is None else watch:
            code = _exit_code(self.children[name])
            if code is not None:
                self.failure = f"{name} exited with code {code}"
                raise Stop

    def run_to_end(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        self.start(name, args, env)
        while (code := _exit_code(self.children[name])) is None:
            self.tick(0.05, watch=[n for n in self.children if n != name])
        self._reap(self.children.pop(name))
        if code != 0:
            self.failure = f"{name} exited with code {code}"
            raise Stop

    def shutdown(self) -> None:
        names = [
            *(n for n in STOP_ORDER if n in self.children),
            *(n for n in self.children if n not in STOP_ORDER),
        ]
        for name in names:
            proc = self.children.pop(name)
            if _exit_code(proc) is None:
                log.info("stopping %s", name)
                _signal_group(proc, signal.SIGTERM)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while _exit_code(proc) is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if _exit_code(proc) is None:
                    log.warning("%s did not stop within %.0f s; killing it", name, STOP_TIMEOUT_S)
            self._reap(proc)
        for pump in self._pumps:
            pump.join(2)

    @staticmethod
    def _reap(proc: subprocess.Popen[bytes]) -> None:
        _signal_group(proc, signal.SIGKILL)  # leftovers in its group (the leader is not reaped yet)
        proc.wait()


def _exit_code(proc: subprocess.Popen[bytes]) -> int | None:
    """The exit code once the process ended, without reaping it (its group id stays reserved)."""
    if proc.returncode is not None:
        return proc.returncode
    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if info is None or info.si_pid == 0:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Plan:
    env: dict[str, str]  # what every child gets
    target: str  # the Kommo API base (the simulator's or the account's)
    sim_port: int | None  # None: a real account, no simulator
    demo_token: str | None  # generated when WS_TOKENS was not set


def plan(env: Mapping[str, str]) -> Plan:
    """The children's environment, with dev-only values generated; ConfigError when invalid."""
    given = Settings.from_env(env)  # validates PORT, WORKER_METRICS_PORT, ... with one line
    if not _port_free(given.port):
        raise ConfigError("PORT", f"{given.port} is already in use; set PORT to a free port")
    metrics_port = given.worker_metrics_port or (9101 if _port_free(9101) else free_port())
    child = dict(
        env,
        PORT=str(given.port),
        WORKER_METRICS_PORT=str(metrics_port),
        RECONCILE_INTERVAL=env.get("RECONCILE_INTERVAL") or "5",
        PYTHONUNBUFFERED="1",
        KOMMO_WEBHOOK_SECRET=env.get("KOMMO_WEBHOOK_SECRET") or secrets.token_hex(20),
    )
    # the simulator (and this package) are not installed: the children find them in the checkout
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    demo_token = None if given.ws_tokens else "demo-" + secrets.token_urlsafe(12)
    if demo_token:
        child["WS_TOKENS"] = demo_token
    sim_port = None
    if not any(env.get(k) for k in ("KOMMO_SUBDOMAIN", "KOMMO_BASE_URL", "KOMMO_TOKEN")):
        sim_port = free_port()
        child.update(
            KOMMO_BASE_URL=f"http://127.0.0.1:{sim_port}", KOMMO_TOKEN=secrets.token_urlsafe(24)
        )
    target = Settings.from_env(child, Needs.KOMMO | Needs.WEB).kommo_base_url
    assert target is not None
    return Plan(child, target, sim_port, demo_token)


def run_dev(env: Mapping[str, str]) -> int:
    p = plan(env)
    sup = Supervisor(hide=[p.env["KOMMO_WEBHOOK_SECRET"], p.env.get("KOMMO_TOKEN", "")])

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sup.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    warnings.filterwarnings("ignore", module="platformdirs")  # embedded Postgres, as root
    started = time.monotonic()
    try:
        with services(p.env) as found:
            try:
                database = found.database_url
                if "DATABASE_URL" not in env:  # ours to manage: never the server's own database
                    demo = p.sim_port is not None
                    database = asyncio.run(
                        _own_database(
                            database, "kommo_sync_demo" if demo else "kommo_sync", fresh=demo
                        )
                    )
                    if demo:  # a fresh namespace too: nothing left over from an earlier demo
                        p.env.setdefault("REDIS_PREFIX", f"demo-{secrets.token_hex(4)}:")
                p.env.update(DATABASE_URL=database, REDIS_URL=found.redis_url)
                _run(sup, p, started)
            except Stop:
                pass
            finally:
                sup.shutdown()
                if found.embedded:
                    log.info("stopping embedded %s", " and ".join(found.embedded))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if sup.failure:
        log.error("%s; everything was stopped", sup.failure)
        return 1
    log.info("stopped")
    return 0


async def _own_database(server_url: str, name: str, *, fresh: bool) -> str:
    """A database of our own on the dev server (the demo's is recreated on every run)."""
    conn = await asyncpg.connect(server_url)
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path="/" + name))


def _run(sup: Supervisor, p: Plan, started: float) -> None:
    env = p.env
    port, secret = int(env["PORT"]), env["KOMMO_WEBHOOK_SECRET"]
    if p.sim_port is not None:
        hook = f"http://127.0.0.1:{port}/webhooks/kommo/{secret}"
        sup.start(
            "sim",
            [
                "kommo_sim",
                "--port",
                str(p.sim_port),
                "--token",
                env["KOMMO_TOKEN"],
                "--seed",
                "1",
                *SIM_ARGS,
                "--webhook",
                hook,
            ],
            env,
        )
        while not _listening(p.sim_port):
            sup.tick(0.05)
    sup.run_to_end("release", ["service", "migrate"], env)
    sup.start("web", ["service", "web", "--host", "127.0.0.1"], env)
    sup.start("worker", ["service", "worker"], env)
    base = f"http://127.0.0.1:{port}"
    warned, sup.mute = False, '"GET /readyz '  # our own probes
    with httpx.Client(trust_env=False, timeout=2) as http:
        while True:
            sup.tick(0.2)
            try:
                if http.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not warned and time.monotonic() - started > 60:
                warned = True
                log.warning("not ready after 60 s; still waiting (see %s/readyz)", base)
    elapsed, sup.mute = time.monotonic() - started, None
    mode = "the Kommo simulator" if p.sim_port is not None else p.target
    page = f"{base}/#token={p.demo_token}" if p.demo_token else f"{base}/  (a token from WS_TOKENS)"
    lines = [
        f"kommo-sync is ready in {elapsed:.1f} s, syncing {mode}",
        f"  live page       {page}",
        f"  readiness       {base}/readyz",
        f"  web metrics     {base}/metrics",
        f"  worker metrics  http://127.0.0.1:{env['WORKER_METRICS_PORT']}/metrics",
    ]
    if p.demo_token:
        lines.append(f"  token           {p.demo_token}   (WebSocket /ws, /api/leads, /api/status)")
    if p.sim_port is None:
        lines.append(
            "  Kommo cannot reach 127.0.0.1 with webhooks: reconcile keeps the mirror"
            " in sync (see docs/operations.md)"
        )
    lines.append("  Ctrl-C stops everything")
    width = max(len(line) for line in lines)
    sup.write("\n" + "=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width + "\n\n")
    while True:
        sup.tick(0.5)
