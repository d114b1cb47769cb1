"""``kommo-sync``: the command-line entry point of every process.

Settings are built here, once per process. What stops a process at start ends it with one line
on stderr and an exit code (``EXIT_CODES``): a configuration error names the variable, a
dependency that cannot be reached or refuses our credentials names the service and its
host:port, never a secret. Commands that print for a person print here; the work itself is in
:mod:`service.sync` and :mod:`service.web`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from tqdm import tqdm

from service.kommo.budget import Priority
from service.kommo.errors import KommoRejected
from service.logs import configure_logging
from service.resources import DependencyError, failure_of
from service.settings import ConfigError, Needs, Settings

log = logging.getLogger("kommo_sync")

EXIT_CONFIG, EXIT_KOMMO_REFUSED = 2, 3
EXIT_CODES = """\
exit codes:
  0    done; web and worker: stopped by SIGTERM or SIGINT
  1    the check failed (status: breaker open or reconcile stale; webhooks: not OK), or a bug
  2    configuration error: a variable is missing or invalid (the line names it)
  3    Kommo refused the credential (KOMMO_TOKEN or the OAuth settings)
  4    a dependency cannot be reached at start: PostgreSQL, Redis or Kommo (the line names it
       and its host:port); a worker that has started rides out outages instead
  5    PostgreSQL or Redis refused our credentials (the user or password in DATABASE_URL or
       REDIS_URL); a worker gives up on this whenever it meets it: retrying cannot help
  130  interrupted (Ctrl-C) during a one-off command
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except ConfigError as exc:
        return _stop(str(exc), EXIT_CONFIG)
    except KommoRejected as exc:  # e.g. a refused credential at start-up: one clear line
        return _stop(f"Kommo refused: {exc}", EXIT_KOMMO_REFUSED)
    except DependencyError as exc:
        return _stop(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130


def _stop(line: str, code: int) -> int:
    print(f"kommo-sync: {line}", file=sys.stderr)  # noqa: T201 - the one-line contract
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kommo-sync",
        description="A live one-way mirror of a Kommo CRM account in PostgreSQL,\n"
        "with every lead change pushed to WebSocket consumers.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over, writing every row again (e.g. after a normalisation fix)",
    )
    p.set_defaults(run=_backfill)

    p = sub.add_parser(
        "import-history", help="import the stage history Kommo still serves now (resumable)"
    )
    p.set_defaults(run=_import_history)

    p = sub.add_parser("status", help="cursors, lag, last reconcile, queue depth, budget")
    p.set_defaults(run=_status)

    p = sub.add_parser(
        "purge", help="remove the personal data of entities deleted in Kommo before a date"
    )
    p.add_argument(
        "--deleted-before",
        required=True,
        type=_date,
        metavar="DATE",
        help="YYYY-MM-DD or an ISO 8601 time (UTC unless it says otherwise)",
    )
    p.set_defaults(run=_purge)

    p = sub.add_parser("webhooks", help="manage the Kommo webhook subscription")
    p.add_argument("action", choices=("install", "check", "uninstall"))
    p.add_argument(
        "--url", help="public base URL of the web process, e.g. https://sync.example.com"
    )
    p.set_defaults(run=_webhooks)

    p = sub.add_parser(
        "accounts",
        help="the registry of more accounts: add, list, disable, enable, remove, tokens, keys",
        description="Register and manage the Kommo accounts this deployment mirrors besides "
        'the environment\'s own (docs/operations.md, "Many accounts").',
    )
    from service.accounts.commands import add_arguments

    add_arguments(p)
    p.set_defaults(run=_accounts)
    return parser


def _settings(needs: Needs, process: str) -> Settings:
    settings = Settings.from_env(os.environ, needs)
    configure_logging(settings, process=process)
    return settings


def _run(settings: Settings, coro: Coroutine[Any, Any, int]) -> int:
    """Run a one-off command; a dependency failing it is named (:func:`failure_of`)."""
    try:
        return asyncio.run(coro)
    except Exception as exc:  # the process's edge: name what failed, or let a bug show
        failure = failure_of(exc, settings)
        if failure is None or failure is exc:
            raise
        raise failure from exc


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _migrate(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE, "release")

    async def go() -> int:
        from service.store.migrations import migrate

        conn = await asyncpg.connect(settings.database_dsn)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        log.info("migrations: %s", ", ".join(applied) if applied else "up to date")
        return 0

    return _run(settings, go())


def _web(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.WEB, "web")
    from service.web.server import serve

    return serve(settings, host=args.host, workers=args.workers)


def _worker(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "worker")
    from workers.main import run_worker

    return run_worker(settings, burst=args.burst)


def _backfill(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "backfill")

    async def go() -> int:
        from service.resources import open_sync_resources
        from service.sync import locks
        from service.sync.backfill import ORDER, Backfill
        from service.sync.mirror import Mirror, resolve_account_id

        async with open_sync_resources(settings) as res:
            backfill = Backfill(Mirror(res, await resolve_account_id(res)))
            async with locks.held(res.redis, res.keys.backfill_lock) as mine:
                if not mine:
                    log.error("a backfill is already running in another process")
                    return 1
                if sys.stderr.isatty():
                    totals = {k.name: await backfill.pages(k) for k in ORDER}
                    with _bars(totals) as tick:
                        progress = await backfill.run(restart=args.restart, tick=tick)
                else:
                    progress = await backfill.run(restart=args.restart)
        _out(f"backfill {progress.stage}: {progress.rows} rows")
        return 0

    return _run(settings, go())


def _import_history(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "import-history")

    async def go() -> int:
        from service.resources import open_sync_resources
        from service.sync import locks
        from service.sync.history import HistoryImport
        from service.sync.mirror import Mirror, resolve_account_id

        async with open_sync_resources(settings) as res:
            history = HistoryImport(Mirror(res, await resolve_account_id(res)))
            async with locks.held(res.redis, res.keys.backfill_lock) as mine:
                if not mine:
                    log.error("an import is already running in another process")
                    return 1
                bar = tqdm(
                    desc="stage history", unit="page", disable=not sys.stderr.isatty() or None
                )
                with bar:
                    read = [0]

                    def tick(page: int, events: int) -> None:
                        read[0] += events
                        bar.set_postfix(stage_changes=read[0], refresh=False)
                        bar.update(1)

                    progress = await history.run(tick=tick)
        _out(f"history: {progress.events} stage changes in {progress.page - 1} pages")
        return 0

    return _run(settings, go())


@contextlib.contextmanager
def _bars(totals: dict[str, int]) -> Iterator[Callable[[str, int], None]]:
    """One progress bar per stage of the backfill, on the terminal."""
    bars: dict[str, tqdm[Any]] = {}

    def tick(stage: str, rows: int) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(
                total=totals.get(stage), desc=f"backfill {stage}", unit="page", dynamic_ncols=True
            )
        bars[stage].update(1)

    try:
        yield tick
    finally:
        for bar in bars.values():
            bar.close()


def _status(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS, "status")

    async def go() -> int:
        from service.resources import open_resources
        from service.sync.status import gather_status

        async with open_resources(settings) as res:
            status = await gather_status(res)
        _out(json.dumps(status, indent=2, default=str))
        return 1 if status["kommo"]["breaker"] or status["reconcile"]["stale"] else 0

    return _run(settings, go())


def _date(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (want YYYY-MM-DD)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _purge(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS, "purge")

    async def go() -> int:
        from service.resources import open_resources
        from service.sync.retention import purge

        if args.deleted_before > time.time():
            raise ConfigError("--deleted-before", "is in the future")
        async with open_resources(settings) as res:
            removed = await purge(res, args.deleted_before)
        when = datetime.fromtimestamp(args.deleted_before, UTC).isoformat(timespec="seconds")
        _out(
            f"purged the personal data of {', '.join(f'{n} {k}' for k, n in removed.items())} "
            f"deleted before {when}"
        )
        return 0

    return _run(settings, go())


def _webhooks(args: argparse.Namespace) -> int:
    settings = _settings(Needs.DATABASE | Needs.REDIS | Needs.KOMMO, "webhooks")

    async def go() -> int:
        from service.resources import open_sync_resources
        from service.sync import subscription

        url = subscription.destination(settings, args.url)
        async with open_sync_resources(settings) as res:
            if args.action == "uninstall":
                await res.kommo.delete_webhook(url, priority=Priority.RECONCILE)
                _out("webhook removed")
                return 0
            if args.action == "install":
                await subscription.install(res.kommo, url)
            verdict = await subscription.check(res.kommo, url)
        _out(
            ("webhook OK: " + ", ".join(subscription.SETTINGS))
            if verdict.ok
            else f"webhook NOT OK: {verdict.problem}"
        )
        return 0 if verdict.ok else 1

    return _run(settings, go())


def _accounts(args: argparse.Namespace) -> int:
    from service.accounts.registry import AccountError

    settings = _settings(args.needs, "accounts")
    try:
        return _run(settings, args.command(args, settings))
    except AccountError as exc:
        return _stop(str(exc), 1)
