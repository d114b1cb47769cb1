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

Several runs may live side by side on one machine. Each claims, under the lock of the run
registry (:mod:`devenv.runs`), ports no other run holds (:mod:`devenv.ports`: 8000 and 9101, or
the next free ones) and its own env file (:mod:`devenv.envfile`: ``.local/dev.env``, else
``.local/dev-<PORT>.env``), written once the stack is ready. Unless ``DATABASE_URL`` is given, a
demo creates its own database and Redis prefix (:mod:`devenv.demo`) and drops them when it
stops; a real account uses the database ``kommo_sync``, kept between runs. What a crashed run
left behind is cleaned up by the next run.
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
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

import httpx

from devenv import demo, envfile, ports, runs
from devenv.services import ROOT, STATE, Services, services
from service.settings import Needs, Settings

log = logging.getLogger("devenv")

STOP_ORDER = ("web", "worker", "sim")
STOP_TIMEOUT_S = 10.0
SIM_ARGS = ("--leads", "300", "--contacts", "150", "--changes-per-second", "0.5")
RUNS = STATE / "runs"


class Stop(Exception):
    """A signal arrived or a child died: unwind and stop everything."""


class Supervisor:
    """The child processes, their prefixed output, and the stop flag set by signals."""

    def __init__(self) -> None:
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop = threading.Event()
        self.failure: str | None = None
        self.hide: list[str] = []  # secrets masked in child output
        self.keep: tuple[int, ...] = ()  # descriptors every child inherits
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
            pass_fds=self.keep,
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
            for secret in filter(None, self.hide):
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
    env_file: Path  # where the stack's environment is written once it is ready
    database: str | None = None  # the demo database this run created (dropped when it stops)


def simulated(env: Mapping[str, str]) -> bool:
    """No Kommo account given: ``make run`` runs against the bundled simulator."""
    return not any(env.get(k) for k in ("KOMMO_SUBDOMAIN", "KOMMO_BASE_URL", "KOMMO_TOKEN"))


def plan(env: Mapping[str, str], chosen: ports.Ports, env_file: Path) -> Plan:
    """The children's environment, with dev-only values generated; ConfigError when invalid."""
    given = Settings.from_env(env)  # validates PORT, WORKER_METRICS_PORT, ... with one line
    child = dict(
        env,
        PORT=str(chosen.web),
        WORKER_METRICS_PORT=str(chosen.metrics),
        RECONCILE_INTERVAL=env.get("RECONCILE_INTERVAL") or "5",
        PYTHONUNBUFFERED="1",
        KOMMO_WEBHOOK_SECRET=env.get("KOMMO_WEBHOOK_SECRET") or secrets.token_hex(20),
    )
    # the simulator (and this package) are not installed: the children find them in the checkout
    child["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    demo_token = None if given.ws_tokens else "demo-" + secrets.token_urlsafe(12)
    if demo_token:
        child["WS_TOKENS"] = demo_token
    if chosen.sim is not None:
        child.update(
            KOMMO_BASE_URL=f"http://127.0.0.1:{chosen.sim}", KOMMO_TOKEN=secrets.token_urlsafe(24)
        )
    target = Settings.from_env(child, Needs.KOMMO | Needs.WEB).kommo_base_url
    assert target is not None
    return Plan(child, target, chosen.sim, demo_token, env_file)


def run_dev(env: Mapping[str, str]) -> int:
    Settings.from_env(env)  # a bad value stops us with one line before anything starts
    sup = Supervisor()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sup.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    warnings.filterwarnings("ignore", module="platformdirs")  # embedded Postgres, as root
    started = time.monotonic()
    try:
        with services(dict(env)) as found:
            entry, p = _claim(env, found)
            try:
                sup.keep = (entry.fd,)  # the run's record stays locked while a child lives
                p = _own_data(p, env, found, entry)
                sup.hide = [p.env["KOMMO_WEBHOOK_SECRET"], p.env.get("KOMMO_TOKEN", "")]
                _run(sup, p, started)
            except Stop:
                pass
            finally:
                sup.shutdown()
                envfile.remove(p.env_file)
                demo.release_own(entry, found)
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


def _claim(env: Mapping[str, str], found: Services) -> tuple[runs.Entry, Plan]:
    """Under the registry lock: clean up after crashed runs, then claim ports and an env file."""
    with runs.registry(RUNS) as registry:
        for stale in registry.stale:
            demo.clean_up_after(stale, found)
        chosen = ports.choose(env, registry.ports, simulator=simulated(env))
        env_file = envfile.path_for(STATE, chosen.web, registry.env_files)
        p = plan(env, chosen, env_file)
        entry = registry.add(runs.Record(os.getpid(), chosen.all, str(env_file)))
    return entry, p


def _own_data(p: Plan, env: Mapping[str, str], found: Services, entry: runs.Entry) -> Plan:
    """The database (and, for a demo, the Redis prefix) of this run."""
    database = found.database_url
    if env.get("DATABASE_URL"):  # the user's: used as it is
        pass
    elif p.sim_port is None:  # a real account: one database kept between runs, never dropped
        database = asyncio.run(demo.ensure_database(found.database_url, "kommo_sync"))
    else:  # a demo: a database of its own, created now and dropped when it stops
        name, database = demo.create_own_database(entry, found)
        p = replace(p, database=name)
        if not env.get("REDIS_PREFIX"):  # a fresh namespace too, deleted when it stops
            p.env["REDIS_PREFIX"] = demo.own_redis_prefix(entry, found)
    p.env.update(DATABASE_URL=database, REDIS_URL=found.redis_url)
    return p


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
                f"--token={env['KOMMO_TOKEN']}",  # a token may start with "-"
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
    header = f"the make run stack on {base} (pid {os.getpid()}); removed when it stops"
    envfile.write(p.env_file, env, header)
    lines = _banner(p, base, elapsed)
    width = max(len(line) for line in lines)
    sup.write("\n" + "=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width + "\n\n")
    while True:
        sup.tick(0.5)


def _banner(p: Plan, base: str, elapsed: float) -> list[str]:
    mode = "the Kommo simulator" if p.sim_port is not None else p.target
    page = f"{base}/#token={p.demo_token}" if p.demo_token else f"{base}/  (a token from WS_TOKENS)"
    lines = [
        f"kommo-sync is ready in {elapsed:.1f} s, syncing {mode}",
        f"  live page       {page}",
        f"  readiness       {base}/readyz",
        f"  web metrics     {base}/metrics",
        f"  worker metrics  http://127.0.0.1:{p.env['WORKER_METRICS_PORT']}/metrics",
    ]
    if p.demo_token:
        lines.append(f"  token           {p.demo_token}   (WebSocket /ws, /api/leads, /api/status)")
    if p.database:
        lines.append(f"  database        {p.database}   (this run's own, dropped when it stops)")
    lines += [
        f"  environment     {envfile.shown(p.env_file)}   (this run's, removed when it stops)",
        f"  CLI             {envfile.usage(p.env_file)}",
    ]
    if p.sim_port is None:
        lines.append(
            "  Kommo cannot reach 127.0.0.1 with webhooks: reconcile keeps the mirror"
            " in sync (see docs/operations.md)"
        )
    lines.append("  Ctrl-C stops everything")
    return lines
