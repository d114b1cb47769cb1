"""What WebSocket sockets cost the web process in memory, and whether it gets it back.

The real web process (``kommo-sync web``, its production uvicorn options) in one subprocess, the
clients in another. Each scenario starts a fresh web process, reads its RSS once idle, opens
``--sockets`` sockets (100 at a time), each subscribing with the largest filter a consumer may
send (both lists full: 2 × 1,000 ids of 19 digits, about 42 KB a frame), reads the RSS while
they are all open (and its peak, sampled every 0.1 s), closes them, waits until the process
counts no socket (``ws_connected_sockets``) and reads the RSS again, 1, 5 and 15 s later. "Idle" is
read after a first round of 20 sockets (what serving the first sockets loads once: modules,
caches); the RSS right after start is shown as "cold".

- "one token, default cap": the attack (every socket on one token): past
  ``WS_MAX_CONNECTIONS_PER_TOKEN`` (default 500) sockets are refused with 1008.
- "cap raised": the same sockets all accepted (``WS_MAX_CONNECTIONS_PER_TOKEN`` = ``--sockets``),
  the worst a deployment that raises the cap can be made to hold;
- the same with ``PYTHONMALLOC=malloc`` (what the Procfile's web process runs with): pymalloc
  keeps a 1 MiB arena for as long as one object in it lives, so the objects of thousands of
  connections leave arenas that a few survivors pin; glibc's malloc gives pages back to
  ``malloc_trim`` (:mod:`service.gateway.heap`) page by page.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/wsmemory.py [--sockets 3000]

Targets: under 1 GB while they are open; back within 20 % of idle after they close. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MAX_ID = (1 << 63) - 1


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- the clients subprocess


async def run_clients(args: argparse.Namespace) -> None:
    """Open the sockets, subscribe each, report; close them all when told on stdin."""
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    from service.gateway.filters import MAX_FILTER_IDS

    _raise_fd_limit()
    n = MAX_FILTER_IDS if args.ids is None else args.ids
    lists = {
        "pipeline_ids": list(range(MAX_ID - n, MAX_ID)),
        "lead_ids": list(range(MAX_ID - 2 * n, MAX_ID - n)),
    }
    frame = json.dumps({"subscribe": lists if n else "all"})
    url = f"ws://127.0.0.1:{args.port}/ws?token={args.token}"
    opened: list[ClientConnection] = []
    refused: dict[str, int] = {}

    async def one() -> None:
        ws = await connect(url, compression=None, ping_interval=None, open_timeout=60)
        try:
            async with asyncio.timeout(60):
                json.loads(await ws.recv())  # hello, or the close
                await ws.send(frame)
                while json.loads(await ws.recv())["event"] != "subscribed":
                    pass
        except ConnectionClosed:
            key = f"{ws.close_code} {ws.close_reason}"
            refused[key] = refused.get(key, 0) + 1
            return
        opened.append(ws)

    for start in range(0, args.sockets, 100):
        await asyncio.gather(*(one() for _ in range(start, min(start + 100, args.sockets))))
    print(json.dumps({"opened": len(opened), "refused": refused}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for start in range(0, len(opened), 200):
        await asyncio.gather(*(ws.close() for ws in opened[start : start + 200]))
    print(json.dumps({"closed": len(opened)}), flush=True)


# ---------------------------------------------------------------- the orchestrator


def _rss_mb(pid: int) -> float:
    import psutil  # type: ignore[import-untyped]

    return float(psutil.Process(pid).memory_info().rss) / 2**20


async def _connected(http: Any, port: int) -> float:
    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    found = re.search(r"^ws_connected_sockets (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


async def _round(port: int, sockets: int, token: str, http: Any, pid: int) -> dict[str, Any]:
    """Open ``sockets`` subscribed sockets, read the RSS, close them all, wait until the web
    process counts none."""
    from bench.common import PYTHON, RssSampler

    clients = await asyncio.create_subprocess_exec(
        PYTHON,
        __file__,
        "_clients",
        *("--port", str(port), "--sockets", str(sockets), f"--token={token}"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert clients.stdin is not None and clients.stdout is not None
    started = time.monotonic()
    async with RssSampler(pid) as sampler:
        opened = json.loads(await clients.stdout.readline())
        connect_s = time.monotonic() - started
        during = _rss_mb(pid)
        connected = await _connected(http, port)
        clients.stdin.write(b"close\n")
        await clients.stdin.drain()
        json.loads(await clients.stdout.readline())
        await clients.wait()
        deadline = time.monotonic() + 60
        while await _connected(http, port) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    return {
        "accepted": opened["opened"],
        "connected": connected,
        "refused": sum(opened["refused"].values()),
        "refusals": opened["refused"],
        "during": during,
        "peak": sampler.peak_mb,
        "connect_s": connect_s,
    }


async def scenario(name: str, sockets: int, cap: int | None, s: Any, **env: str) -> dict[str, Any]:
    import httpx

    from bench.common import PYTHON, free_port, running, wait_http

    port = free_port()
    extra = {"PORT": str(port), **env}
    if cap is not None:
        extra["WS_MAX_CONNECTIONS_PER_TOKEN"] = str(cap)
    command = [PYTHON, "-m", "service", "web", "--host", "127.0.0.1"]
    async with running("wsmemory-web", command, s.env(**extra)) as web:
        await wait_http(f"http://127.0.0.1:{port}/healthz", web)
        async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
            await asyncio.sleep(1.0)  # let start-up settle
            cold = _rss_mb(web.pid)
            await _round(port, 20, s.ws_token, http, web.pid)  # what the first sockets load
            await asyncio.sleep(3.0)
            idle = _rss_mb(web.pid)
            result = await _round(port, sockets, s.ws_token, http, web.pid)
            after: list[float] = []
            for wait in (1.0, 4.0, 10.0):  # 1 s, 5 s and 15 s after the last socket went
                await asyncio.sleep(wait)
                after.append(_rss_mb(web.pid))
    return {
        "scenario": name,
        "sockets": sockets,
        "cold": cold,
        "idle": idle,
        "after": after,
        **result,
    }


async def orchestrate(args: argparse.Namespace) -> None:
    from bench.common import machine, scratch

    _raise_fd_limit()
    rows = []
    async with scratch("wsmem") as s:
        rows.append(await scenario("one token, default cap", args.sockets, None, s))
        rows.append(await scenario("cap raised to all", args.sockets, args.sockets, s))
        rows.append(
            await scenario(
                "cap raised, PYTHONMALLOC=malloc",
                args.sockets,
                args.sockets,
                s,
                PYTHONMALLOC="malloc",
            )
        )
    print(f"\n### WebSocket memory: {args.sockets} sockets, full filters ({machine()})\n")
    print(
        "| scenario | sockets | accepted | refused | RSS idle (cold) | RSS open (peak) "
        "| RSS 1 s / 5 s / 15 s after | after / idle |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['scenario']} | {r['sockets']:,} | {r['accepted']:,} | {r['refused']:,} "
            f"| {r['idle']:.0f} MB ({r['cold']:.0f}) | {r['during']:.0f} MB ({r['peak']:.0f}) "
            f"| {' / '.join(f'{a:.0f}' for a in r['after'])} MB "
            f"| {r['after'][-1] / r['idle']:.2f}× |"
        )
    for r in rows:
        print(f"- {r['scenario']}: refusals {r['refusals']}; {r['connect_s']:.1f} s to open")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", nargs="?", default="run", choices=["run", "_clients"])
    parser.add_argument("--sockets", type=int, default=3000)
    parser.add_argument("--port", type=int)
    parser.add_argument("--token")
    parser.add_argument("--ids", type=int, help="ids per filter list (default: the cap; 0: all)")
    parser.add_argument("--json")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_clients(args) if args.role == "_clients" else orchestrate(args))


if __name__ == "__main__":
    main()
