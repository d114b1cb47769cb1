"""``kommo-sync``: the command-line entry point of every process.

Settings are built here, once per process, and a configuration error stops the process with one
line that names the variable (exit code 2).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from service.errors import KommoRejected
from service.logs import configure_logging
from service.settings import ConfigError, Needs, Settings

log = logging.getLogger("kommo_sync")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim"]:  # the simulator parses its own options (REMAINDER can't start with one)
        args = argparse.Namespace(run=_sim, sim_args=argv[1:])
    else:
        args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except ConfigError as exc:
        print(f"kommo-sync: {exc}", file=sys.stderr)  # noqa: T201 - the one-line contract
        return 2
    except KommoRejected as exc:  # e.g. a refused credential at start-up: one clear line
        print(f"kommo-sync: Kommo refused: {exc}", file=sys.stderr)  # noqa: T201
        return 3
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kommo-sync", description=__doc__)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("migrate", help="apply pending sql/ migrations (the release step)")
    p.set_defaults(run=_migrate)

    p = sub.add_parser("web", help="run the web process (webhooks, /ws, read API, health)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(run=_web)

    p = sub.add_parser("worker", help="run an arq worker (webhook fetches, reconcile, backfill)")
    p.add_argument("--burst", action="store_true", help="drain the queue and exit")
    p.set_defaults(run=_worker)

    p = sub.add_parser("backfill", help="import the whole account now (resumable)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming")
    p.set_defaults(run=_backfill)

    p = sub.add_parser("status", help="cursors, lag, last reconcile, queue depth, budget")
    p.set_defaults(run=_status)

    p = sub.add_parser("webhooks", help="manage the Kommo webhook subscription")
    p.add_argument("action", choices=("install", "check", "uninstall"))
    p.add_argument("--url", help="public base URL of the web process, e.g. https://sync.example.com")
    p.set_defaults(run=_webhooks)

    p = sub.add_parser("sim", help="run the bundled Kommo simulator", add_help=False)
    p.add_argument("sim_args", nargs=argparse.REMAINDER)
    p.set_defaults(run=_sim)

    p = sub.add_parser("dev", help="run everything locally (what `make run` does)")
    p.set_defaults(run=_dev)
    return parser


def _settings(needs: Needs, process: str) -> Settings:
    settings = Settings.from_env(os.environ, needs)
    configure_logging(settings, process=process)
    return settings


def _run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE, "release")

    async def go() -> int:
        from service.migrations import migrate

        conn = await asyncpg.connect(settings.database_dsn)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        log.info("migrations: %s", ", ".join(applied) if applied else "up to date")
        return 0

    return _run(go())


def _web(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.WEB, "web")
    from service.server import serve

    return serve(settings, host=args.host, workers=args.workers)


def _worker(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "worker")
    from workers.main import run_worker

    return run_worker(settings, burst=args.burst)


def _backfill(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "backfill")
    from service.backfill import run_backfill_command

    return _run(run_backfill_command(settings, restart=args.restart))


def _status(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS, "status")
    from service.status import print_status

    return _run(print_status(settings))


def _webhooks(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "webhooks")
    from service.subscription import run_webhooks_command

    return _run(run_webhooks_command(settings, args.action, args.url))


def _sim(args: argparse.Namespace) -> int:
    configure_logging(None, process="sim")
    from kommo_sim.cli import main as sim_main  # the simulator is a separate package

    return sim_main(list(args.sim_args))


def _dev(args: argparse.Namespace) -> int:
    configure_logging(None, process="dev")
    from service.devrun import run_dev

    return run_dev(os.environ)
