"""``http_requests_total`` and ``http_request_duration_seconds`` of the web app, read back from
its own ``GET /metrics``: requests count under their route's template, never their path."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.web.traffic import TrafficMetrics
from tests.session import WEBHOOK_SECRET, WS_TOKEN

FIXTURES = Path(__file__).parent / "fixtures" / "kommo" / "webhooks"
FORM = {"content-type": "application/x-www-form-urlencoded"}
WEBHOOK = "/webhooks/kommo/{secret}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def requests(found: Samples, route: str, method: str, status: int) -> float:
    labels = frozenset({"route": route, "method": method, "status": str(status)}.items())
    return found.get(("http_requests_total", labels), 0.0)


def timed(found: Samples, route: str, method: str) -> float:
    labels = frozenset({"route": route, "method": method}.items())
    return found.get(("http_request_duration_seconds_count", labels), 0.0)


async def scrape(client: httpx.AsyncClient) -> tuple[str, Samples]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text, samples(response.text)


async def test_a_request_counts_under_its_route_template(client: httpx.AsyncClient) -> None:
    _, before = await scrape(client)
    auth = {"authorization": f"Bearer {WS_TOKEN}"}
    assert (await client.get("/api/leads/424242", headers=auth)).status_code == 404
    assert (await client.get("/api/leads/424243")).status_code == 401
    text, after = await scrape(client)
    route = "/api/leads/{lead_id}"
    assert requests(after, route, "GET", 404) == requests(before, route, "GET", 404) + 1
    assert requests(after, route, "GET", 401) == requests(before, route, "GET", 401) + 1
    assert timed(after, route, "GET") == timed(before, route, "GET") + 2
    assert requests(after, "/metrics", "GET", 200) >= 1  # the scrape before this one
    assert "424242" not in text and "424243" not in text


async def test_the_webhook_secret_never_reaches_the_metrics(client: httpx.AsyncClient) -> None:
    """Accepted and refused webhooks alike count under the literal ``{secret}``."""
    wrong = "not-the-secret-0b1c2d3e"
    _, before = await scrape(client)
    body = (FIXTURES / "lead_update.txt").read_bytes()
    accepted = await client.post(f"/webhooks/kommo/{WEBHOOK_SECRET}", content=body, headers=FORM)
    assert accepted.status_code == 200, accepted.text
    refused = await client.post(f"/webhooks/kommo/{wrong}", content=body, headers=FORM)
    assert refused.status_code == 404
    text, after = await scrape(client)
    assert requests(after, WEBHOOK, "POST", 200) == requests(before, WEBHOOK, "POST", 200) + 1
    assert requests(after, WEBHOOK, "POST", 404) == requests(before, WEBHOOK, "POST", 404) + 1
    assert 'route="/webhooks/kommo/{secret}"' in text
    assert WEBHOOK_SECRET not in text and wrong not in text


async def test_unmatched_paths_and_odd_methods_are_folded(client: httpx.AsyncClient) -> None:
    _, before = await scrape(client)
    probe = "/wp-admin/setup-config-5f3a.php"
    assert (await client.get(probe)).status_code == 404
    assert (await client.request("BREW", "/healthz")).status_code == 405
    text, after = await scrape(client)
    unmatched = requests(after, "unmatched", "GET", 404) - requests(before, "unmatched", "GET", 404)
    assert unmatched == 1
    brewed = requests(after, "/healthz", "other", 405) - requests(before, "/healthz", "other", 405)
    assert brewed == 1
    assert "wp-admin" not in text and "BREW" not in text


async def test_a_handler_that_raises_counts_as_500() -> None:
    async def boom(request: Request) -> Response:
        raise RuntimeError("a bug")

    app = Starlette(routes=[Route("/boom/{n}", boom)], middleware=[Middleware(TrafficMetrics)])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    before = samples(generate_latest(REGISTRY).decode())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/boom/7")).status_code == 500
    after = samples(generate_latest(REGISTRY).decode())
    assert requests(after, "/boom/{n}", "GET", 500) == requests(before, "/boom/{n}", "GET", 500) + 1
