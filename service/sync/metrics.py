"""The reconcile's Prometheus metrics (shared by the tick, the streams, the sweep)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TICKS = Counter("reconcile_ticks_total", "reconcile ticks run")
DURATION = Histogram("reconcile_duration_seconds", "time one reconcile tick took")
DRIFT = Counter("reconcile_drift_rows_total", "rows the poll fixed that no webhook had", ["entity"])
LAST_TICK = Gauge("reconcile_last_success_timestamp_seconds", "end of the last good tick")
CURSOR_LAG = Gauge("reconcile_cursor_lag_seconds", "now minus a stream's cursor", ["stream"])
