"""The settings the alerts and the dashboard compare against, exported as gauges.

Thresholds such as "no reconcile tick for 3 x ``RECONCILE_INTERVAL``" then follow the
deployment's configuration instead of a default written into the rules. Every web and worker
process sets them once at start (:func:`export`), from its own settings; aggregate with
``max`` (one value per deployment, or per account once metrics carry an ``account`` label).
"""

from __future__ import annotations

from prometheus_client import Gauge

from service.settings import Settings

RECONCILE_INTERVAL = Gauge("reconcile_interval_seconds", "RECONCILE_INTERVAL of this process")
RATE_LIMIT = Gauge("kommo_rate_limit_per_second", "KOMMO_RATE_LIMIT of this process")
HINT_QUEUE_MAX = Gauge("hint_queue_max", "HINT_QUEUE_MAX of this process (webhook hint ids)")


def export(settings: Settings) -> None:
    RECONCILE_INTERVAL.set(settings.reconcile_interval)
    RATE_LIMIT.set(settings.rate_limit)
    HINT_QUEUE_MAX.set(settings.hint_queue_max)
