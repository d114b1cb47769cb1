"""Issue #5: webhook ingestion throughput and p99 latency of the real endpoint.

``kommo-sync web`` (uvicorn, 1 and 2 worker processes) under wrk with 64 connections posting
Kommo's ``lead_update`` fixture body (a distinct lead id per request, so the hint queue really
grows), against a baseline served by uvicorn the same way (same options, same logging with
access lines, same worker count) in the same run: a Starlette endpoint that parses the same body
with ``urllib.parse.parse_qsl`` and does one Redis LPUSH. Each server gets a warm-up, then a
measured run; wrk runs with one thread, on the same two cores.

    python -m bench.ingest [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

import uvicorn
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.common import (
    LOGS,
    PYTHON,
    Report,
    Row,
    Scratch,
    at_most,
    free_port,
    main,
    ratio_at_least,
    running,
    scratch,
    wait_http,
)

BENCH = "webhook ingest (#5)"
FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "kommo"
    / "fixtures"
    / "webhooks"
    / ("lead_update.txt")
)
FIXTURE_ID = "24000101"
CONNECTIONS = 64

# ---------------------------------------------------------------- the baseline server


def baseline_app() -> Starlette:
    """Parse the form body and LPUSH the lead id: the cheapest honest webhook endpoint."""
    _configure_logging()
    redis = Redis.from_url(os.environ["REDIS_URL"])
    key = os.environ.get("REDIS_PREFIX", "") + "baseline:hints"

    async def hook(request: Request) -> Response:
        fields = parse_qsl((await request.body()).decode())
        ids = [v for k, v in fields if k.endswith("[id]") and k.startswith("leads[")]
        await redis.lpush(key, *ids)
        return JSONResponse({"queued": len(ids)})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/webhooks/kommo/{secret}", hook, methods=["POST"]),
            Route("/healthz", healthz),
        ]
    )


def _configure_logging() -> None:
    """What ``kommo-sync web`` does in each process: its log format, level and redaction."""
    from service.logs import configure_logging
    from service.settings import Settings
    from service.web.server import redact_access_log

    configure_logging(Settings.from_env(os.environ), process="baseline")
    redact_access_log()


def serve_baseline(workers: int) -> None:
    """Like ``service.server.serve``: same uvicorn options, logging and access-log filters."""
    _configure_logging()
    uvicorn.run(
        "bench.ingest:baseline_app",
        factory=True,
        workers=workers,
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        ws_per_message_deflate=False,
        log_config=None,
        timeout_graceful_shutdown=5,
        proxy_headers=True,
        server_header=False,
    )


# ---------------------------------------------------------------- wrk


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["User-Agent"] = "amoCRM-Webhooks/3.0"
local pre = [==[%s]==]
local post = [==[%s]==]
local threads = 0
function setup(thread)
  thread:set("base", 40000000 + threads * 10000000)
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  wrk.body = pre .. tostring((base or 40000000) + n) .. post
  return wrk.format()
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(out: str) -> Load:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    return Load(rps, p50, p99, requests, errors)


async def wrk(url: str, script: Path, seconds: float) -> Load:
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds:g}s",
        "--latency",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed: {out.decode()[-500:]}")
    return parse_wrk(out.decode())


async def compare(
    workers: int, s: Scratch, script: Path, seconds: float, warmup: float, rounds: int
) -> tuple[list[Load], list[Load]]:
    """Both servers up at once; wrk alternates between them (A B A B ...), so that the noise
    of a shared machine falls on both alike."""
    ports = free_port(), free_port()
    commands = (
        [PYTHON, "-m", "service", "web", "--host", "127.0.0.1", "--workers", str(workers)],
        [PYTHON, "-m", "bench.ingest", "_baseline", str(workers)],
    )
    names = f"ingest-web-{workers}", f"ingest-baseline-{workers}"
    results: tuple[list[Load], list[Load]] = ([], [])
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for name, command, port in zip(names, commands, ports, strict=True):
            env = s.env(PORT=str(port), LOG_LEVEL="INFO")  # INFO: access lines, as in production
            proc = await stack.enter_async_context(running(name, command, env))
            await wait_http(f"http://127.0.0.1:{port}/healthz", proc)
            urls.append(f"http://127.0.0.1:{port}{s.hook_path()}")
        for url in urls:
            await wrk(url, script, warmup)
        for _ in range(rounds):
            for url, loads in zip(urls, results, strict=True):
                loads.append(await wrk(url, script, seconds))
    return results


def _median(loads: list[Load], field: str) -> float:
    return float(statistics.median(getattr(load, field) for load in loads))


async def run(quick: bool) -> Report:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    seconds, warmup, rounds = (3.0, 1.0, 1) if quick else (5.0, 2.0, 3)
    body = FIXTURE.read_text().strip()
    pre, _, post = body.partition(f"%5Bid%5D={FIXTURE_ID}")
    LOGS.mkdir(parents=True, exist_ok=True)
    script = LOGS / "ingest.lua"
    script.write_text(LUA % (pre + "%5Bid%5D=", post))
    rows: list[Row] = []
    notes = [
        f"wrk -t1 -c{CONNECTIONS}, {rounds} alternating run(s) of {seconds:g} s per server "
        f"after {warmup:g} s of warm-up (medians), posting the {len(body):,}-byte lead_update "
        "fixture with a new lead id per request; access logging on (LOG_LEVEL=INFO) for "
        "both servers."
    ]
    async with scratch("ingest") as s:
        for workers in (1, 2):
            service, baseline = await compare(workers, s, script, seconds, warmup, rounds)
            label = f"{workers} uvicorn worker{'s' if workers > 1 else ''}"
            rows += [
                Row(
                    BENCH,
                    f"requests/s, {label}",
                    _median(service, "rps"),
                    "req/s",
                    _median(baseline, "rps"),
                    "parse_qsl + LPUSH",
                    ratio_at_least(0.8),
                ),
                Row(
                    BENCH,
                    f"p99 latency, {label}, {CONNECTIONS} connections",
                    _median(service, "p99_ms"),
                    "ms",
                    _median(baseline, "p99_ms"),
                    "parse_qsl + LPUSH",
                    at_most(50, "ms"),
                ),
            ]
            for name, loads in (("service", service), ("baseline", baseline)):
                notes.append(
                    f"{label}, {name}: "
                    + "; ".join(
                        f"{x.rps:,.0f} req/s, p50 {x.p50_ms:.1f} ms, p99 {x.p99_ms:.1f} ms, "
                        f"{x.errors} errors"
                        for x in loads
                    )
                )
    return Report(rows, notes)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_baseline"]:
        serve_baseline(int(sys.argv[2]))
    else:
        main(run, __doc__)
