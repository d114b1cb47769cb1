"""The monitoring in ``deploy/`` reads only metrics the service exports.

Every metric name in the Grafana dashboard, the Prometheus rules and the rules' unit tests must
be a series the processes expose: the web app's ``GET /metrics`` is scraped in process after
every module of ``service`` and ``workers`` that defines a metric is imported (prometheus_client
registers a metric when its module is imported, and the worker serves the same registry).
The dashboard's queries must also be valid PromQL (``promtool`` parses them as rules) and its
panels must fit Grafana's grid; each alert names a section of docs/operations.md that exists.
"""

from __future__ import annotations

import importlib
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families

from tests.promql import exported_series, metric_names, unknown

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "kommo-sync.json"
RULES = ROOT / "deploy" / "prometheus" / "kommo-sync.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "kommo-sync.rules.test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
_DEFINES_METRIC = re.compile(r"\b(?:Counter|Gauge|Histogram|Summary|Info|Enum)\(")
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def _metric_modules() -> list[str]:
    """Every production module that defines a metric (found by reading the source)."""
    found = []
    for package in ("service", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if _DEFINES_METRIC.search(path.read_text(encoding="utf-8")):
                module = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
                found.append(module.removesuffix(".__init__"))
    return found


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for panel in panels:
        out.append(panel)
        out.extend(_panels(panel.get("panels", [])))
    return out


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_exprs() -> dict[str, str]:
    """``panel title / refId`` -> PromQL of every query in the dashboard."""
    return {
        f"{p['title']} / {t['refId']}": t["expr"]
        for p in _panels(dashboard()["panels"])
        for t in p.get("targets", [])
    }


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def rule_test_series() -> dict[str, str]:
    data = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    return {
        f"rule test series {s['series']}": s["series"]
        for test in data["tests"]
        for s in test.get("input_series", [])
    }


def referenced() -> dict[str, set[str]]:
    """Metric name -> where it is used."""
    exprs = {
        **{f"dashboard: {k}": v for k, v in dashboard_exprs().items()},
        **{f"rule {r['alert']}": r["expr"] for r in rules()},
        **rule_test_series(),
    }
    where: dict[str, set[str]] = {}
    for place, expr in exprs.items():
        for name in metric_names(expr):
            where.setdefault(name, set()).add(place)
    return where


@pytest.fixture
async def exposition(client: httpx.AsyncClient) -> str:
    for module in _metric_modules():
        importlib.import_module(module)
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


# --- the names --------------------------------------------------------------------------------


def test_the_expressions_name_metrics() -> None:
    where = referenced()
    # a sample of what the dashboard and the rules must be reading, so that an extraction that
    # finds nothing cannot pass the test below
    assert {
        "lead_updates_published_total",
        "lead_update_freshness_seconds_bucket",
        "kommo_calls_total",
        "reconcile_age_seconds",
        "webhook_hints_dropped_total",
        "lead_outbox_swept_total",
        "worker_jobs_total",
    } <= set(where)


async def test_every_referenced_metric_is_exported(exposition: str) -> None:
    exported = exported_series(exposition)
    where = referenced()
    missing = unknown(where, exported)
    assert not missing, "not exported by the web app or the workers:\n" + "\n".join(
        f"  {name}: used in {', '.join(sorted(where[name]))}" for name in missing
    )


async def test_an_unknown_name_is_reported(exposition: str) -> None:
    exported = exported_series(exposition)
    names = metric_names('sum(rate(kommo_calls_totl{status="403"}[5m])) / kommo_calls_total')
    assert unknown(names, exported) == ["kommo_calls_totl"]


async def test_series_names_follow_the_metric_type(exposition: str) -> None:
    exported = exported_series(exposition)
    # a Counter registered as kommo_calls_total is the family kommo_calls
    assert exported["kommo_calls_total"] == "counter"
    assert "kommo_calls" not in exported
    assert "kommo_calls_total_total" not in exported
    for suffix in ("_bucket", "_sum", "_count"):
        assert exported["lead_update_freshness_seconds" + suffix] == "histogram"
    assert "lead_update_freshness_seconds" not in exported
    assert "reconcile_age_seconds_total" not in exported


def _label_sets(exposition: str, name: str) -> set[frozenset[tuple[str, str]]]:
    return {
        frozenset(sample.labels.items())
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == name
    }


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        (
            "worker_jobs_total",
            {
                "job": ("process_hints", "reconcile", "publish_outbox", "purge_deleted")
                + ("backfill", "check_webhook"),
                "outcome": ("ok", "error", "unavailable", "blocked", "auth_error"),
            },
        ),
        (
            "webhooks_rejected_total",
            {
                "reason": ("bad_secret", "too_large", "unparseable", "unsupported_type")
                + ("wrong_account",)
            },
        ),
        (
            "lead_updates_published_total",
            {
                "source": ("webhook", "reconcile", "backfill"),
                "action": ("created", "updated", "deleted", "restored"),
            },
        ),
        ("kommo_breaker_open", {"reason": ("blocked", "unpaid")}),
    ],
)
async def test_known_label_values_are_exported_before_their_first_increment(
    exposition: str, name: str, labels: dict[str, tuple[str, ...]]
) -> None:
    """A series that appears at 1 has no increase(): the counters the rules read with
    increase() or rate() export every known combination from the start."""
    found = _label_sets(exposition, name)
    keys = list(labels)
    wanted = {
        frozenset(zip(keys, values, strict=True)) for values in itertools.product(*labels.values())
    }
    missing = wanted - found
    assert not missing, sorted(sorted(m) for m in missing)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (source, action) (rate(a_total{x="y"}[$__rate_interval]))', {"a_total"}),
        (
            'histogram_quantile(0.99, sum by (le) (rate(b_bucket{s=~"w|r"}[5m]))) > 5',
            {"b_bucket"},
        ),
        ("c > 3 * $reconcile_interval or count by (account) (c != c) > 0", {"c"}),
        ("(sum(increase(d[30m])) > 0) unless on (account) (sum(e) > 1e3)", {"d", "e"}),
        ("f offset 5m / on (job) group_left (instance) g[1h:5m]", {"f", "g"}),
        ("time() - max by (instance) (h:recorded) and bool vector(0)", {"h:recorded"}),
        ('label_replace(i, "dst", "$1", "src", "(.*)") or Inf', {"i"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


# --- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_reads_prometheus_through_a_variable() -> None:
    data = dashboard()
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert [i["name"] for i in data["__inputs"]] == ["DS_PROMETHEUS"]
    source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    for panel in _panels(data["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source, panel["title"]
            for match in _GRAFANA_VARIABLE.finditer(target["expr"]):
                name = match.group(1) or match.group(2)
                assert name.startswith("__") or name in variables, (panel["title"], name)


def test_the_dashboard_panels_fit_the_grid() -> None:
    panels = _panels(dashboard()["panels"])
    ids = [p["id"] for p in panels]
    assert len(set(ids)) == len(ids)
    taken: set[tuple[int, int]] = set()
    for p in panels:
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, p["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{p['title']} overlaps another panel"
        taken |= cells


def _promtool() -> str:
    found = shutil.which("promtool") or str(ROOT / ".local" / "bin" / "promtool")
    if not Path(found).exists():
        pytest.skip("promtool missing: `make monitoring` installs it")
    return found


def test_the_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule, Grafana's variables given values."""
    values = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
    values |= {v["name"]: v.get("query", "1") for v in dashboard()["templating"]["list"]}

    def concrete(expr: str) -> str:
        return _GRAFANA_VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)

    exprs = dashboard_exprs()
    group = [
        {"record": f"dashboard:query_{i}", "expr": concrete(expr)}
        for i, expr in enumerate(exprs.values())
    ]
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": group}]}))
    done = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(group)} rules found" in done.stdout


def test_the_dashboard_covers_the_issue() -> None:
    """The panels the operators asked for, by the metric each must read."""
    used = {name for expr in dashboard_exprs().values() for name in metric_names(expr)}
    assert {
        "lead_updates_published_total",
        "lead_update_freshness_seconds_bucket",
        "kommo_calls_total",
        "kommo_429_total",
        "reconcile_ticks_total",
        "reconcile_age_seconds",
        "reconcile_cursor_lag_seconds",
        "hint_queue_depth",
        "webhook_hints_dropped_total",
        "webhooks_received_total",
        "webhooks_rejected_total",
        "webhooks_lost_total",
        "ws_connected_sockets",
        "ws_messages_sent_total",
        "ws_dropped_slow_total",
        "worker_jobs_total",
        "lead_outbox_swept_total",
        "kommo_breaker_open",
        "webhook_subscription_ok",
        "webhook_resubscriptions_total",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "reconcile_interval_seconds",
        "kommo_rate_limit_per_second",
        "hint_queue_max",
    } <= used


# --- the rules --------------------------------------------------------------------------------


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to dashes."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif line.startswith("#") and not fenced:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_every_alert_says_what_to_do() -> None:
    anchors = _anchors(OPERATIONS.read_text(encoding="utf-8"))
    for rule in rules():
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        page, _, anchor = notes["runbook"].partition("#")
        assert page == "docs/operations.md", rule["alert"]
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in {page}"
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]


@pytest.mark.parametrize(
    ("alert", "setting"),
    [
        ("KommoSyncReconcileStale", "reconcile_interval_seconds"),
        ("KommoSyncBudgetSaturated", "kommo_rate_limit_per_second"),
        ("KommoSyncHintQueueNearCap", "hint_queue_max"),
        ("KommoSyncKommoBlocked", "kommo_breaker_open"),
        ("KommoSyncWebhookSubscriptionBroken", "webhook_subscription_ok"),
        ("KommoSyncWebErrors", "http_requests_total"),
    ],
)
def test_the_rules_read_the_signals_not_workarounds(alert: str, setting: str) -> None:
    """The thresholds follow the exported settings, not defaults written into the rules; the
    breaker, the subscription and web errors are read, not inferred."""
    (rule,) = [r for r in rules() if r["alert"] == alert]
    assert setting in metric_names(rule["expr"]), rule["expr"]


def test_the_rules_aggregate_by_account() -> None:
    """Each alert's expression keeps an ``account`` label if metrics gain one (one alert per
    account) and works without it: every aggregation groups ``by (account, ...)``."""
    aggregation = re.compile(r"\b(sum|max|min|avg|count)\b\s*(by\s*\(([^)]*)\))?\s*\(")
    for rule in rules():
        found = list(aggregation.finditer(rule["expr"]))
        assert found, rule["alert"]
        for match in found:
            labels = [s.strip() for s in (match.group(3) or "").split(",")]
            assert "account" in labels, f"{rule['alert']}: {match.group(0)!r}"
