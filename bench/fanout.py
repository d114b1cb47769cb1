"""Fan-out benchmark: Redis pub/sub -> the WebSocket gateway -> many clients.

Runs the real app under uvicorn in one subprocess, the WebSocket clients in another, and publishes
``lead_update`` messages from this process at a fixed rate. Two phases in the same run: a baseline
with one client, then ``--clients`` clients plus one deliberately stalled client (it stops reading
after the handshake). The clients process also holds a plain Redis subscriber, so raw pub/sub
latency is measured alongside. Latency is publish -> frame received, on the shared monotonic clock.

    DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/fanout.py [--clients 1000] [--rate 100]

A throwaway database (built by ``service.migrations.migrate``) and a unique ``REDIS_PREFIX`` are
used and removed afterwards. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TICKS = os.sysconf("SC_CLK_TCK")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _stamp(payload: bytes, key: bytes) -> float | None:
    start = payload.find(key)
    if start < 0:
        return None
    start += len(key)
    return float(payload[start : payload.find(b",", start)])


# ---------------------------------------------------------------- the server subprocess


async def run_server() -> None:
    import uvicorn
    from prometheus_client import REGISTRY

    from service.gateway import hub as gateway
    from service.settings import Needs, Settings
    from service.web.app import create_app

    _raise_fd_limit()
    settings = Settings.from_env(os.environ, Needs.DATABASE | Needs.REDIS)
    hub = gateway.Hub(settings)
    config = uvicorn.Config(
        create_app(settings, hub=hub),
        lifespan="on",
        ws_per_message_deflate=False,
        log_level="warning",
        backlog=4096,
    )
    server = gateway.Server(config, hub)
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on such sockets (else Nagle: +40 ms)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)

    async def stop_on_stdin() -> None:  # a signal would be re-raised by uvicorn after shutdown
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        server.should_exit = True

    stopper = asyncio.create_task(stop_on_stdin())
    await server.serve(sockets=[sock])
    stopper.cancel()
    names = ("ws_messages_sent_total", "ws_dropped_slow_total", "ws_redis_reconnects_total")
    print(json.dumps({n: REGISTRY.get_sample_value(n) for n in names}), flush=True)


# ---------------------------------------------------------------- the clients subprocess


class Client(asyncio.Protocol):
    """A minimal WebSocket client (RFC 6455 framing by hand): cheap enough for 1,000 per core."""

    def __init__(self, host: str, path: str, latencies: list[float], stalled: bool) -> None:
        self.host, self.path, self.latencies, self.stalled = host, path, latencies, stalled
        self.buf = bytearray()
        self.open = asyncio.get_running_loop().create_future()
        self.received = 0
        self.close_code: int | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.open.done():
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(RuntimeError(bytes(self.buf[:end]).decode()))
                return
            data = bytes(self.buf[end + 4 :])
            self.buf.clear()
            self.open.set_result(None)
            if self.stalled and self.transport is not None:
                self.transport.pause_reading()
        elif self.buf:  # the rare partial frame left by the previous read
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        pos = self.frames(data, now)
        if pos < len(data):
            self.buf += data[pos:]

    def frames(self, data: bytes, now: float) -> int:
        """Handle every complete frame in ``data``; the offset of the first incomplete one."""
        pos, size = 0, len(data)
        while size - pos >= 2:
            opcode, length, head = data[pos] & 0x0F, data[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 10
            start, end = pos + head, pos + head + length
            if end > size:
                break
            pos = end
            if opcode == 1:
                at = data.find(b'"sent_at":', start, end)
                if at >= 0:
                    self.received += 1
                    self.latencies.append(now - float(data[at + 10 : data.find(b",", at, end)]))
            elif opcode == 8:
                self.close_code = int.from_bytes(data[start : start + 2], "big") if length else 1005
            elif opcode == 9 and self.transport is not None:  # answer uvicorn's keepalive ping
                mask = os.urandom(4)
                body = bytes(b ^ mask[i % 4] for i, b in enumerate(data[start:end]))
                self.transport.write(bytes([0x8A, 0x80 | length]) + mask + body)
        return pos


async def run_clients(args: argparse.Namespace) -> None:
    from redis.asyncio import Redis

    _raise_fd_limit()
    loop = asyncio.get_running_loop()
    host, path = f"127.0.0.1:{args.port}", f"/ws?token={args.token}"
    latencies: list[float] = []
    clients: list[Client] = []
    for start in range(0, args.clients, 100):
        batch = [
            Client(host, path, latencies, False)
            for _ in range(start, min(start + 100, args.clients))
        ]
        await asyncio.gather(
            *(loop.create_connection(lambda c=c: c, "127.0.0.1", args.port) for c in batch)
        )
        await asyncio.gather(*(c.open for c in batch))
        clients += batch
    stalled: Client | None = None
    if args.stalled:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await loop.sock_connect(raw, ("127.0.0.1", args.port))
        stalled = Client(host, path, [], True)
        await loop.create_connection(lambda: stalled, sock=raw)
        await stalled.open
    redis_latencies: list[float] = []
    redis = Redis.from_url(args.redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe(args.channel)
    while await pubsub.get_message(timeout=1.0) is None:
        pass

    async def listen() -> None:
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is not None and msg["type"] == "message":
                sent = _stamp(msg["data"], b'"sent_at":')
                if sent is not None:
                    redis_latencies.append(time.monotonic() - sent)

    listener = asyncio.create_task(listen())
    print("READY", flush=True)
    published = int((await loop.run_in_executor(None, sys.stdin.readline)).split()[1])
    listener.cancel()
    deadline = time.monotonic() + args.drain  # late is not lost: wait for stragglers
    while time.monotonic() < deadline and any(c.received < published for c in clients):
        await asyncio.sleep(0.1)
    stalled_report: dict[str, Any] = {}
    if stalled is not None and stalled.transport is not None:
        stalled.transport.resume_reading()  # how much did it hold, and was it dropped?
        for _ in range(50):
            if stalled.close_code is not None or stalled.received >= published:
                break
            await asyncio.sleep(0.1)
        stalled_report = {"received": stalled.received, "close_code": stalled.close_code}
    print(
        json.dumps(
            {
                "latencies": latencies,
                "redis": redis_latencies,
                "stalled": stalled_report,
                "lost": sum(max(0, published - c.received) for c in clients),
                "closed": sum(c.close_code is not None for c in clients),
                "clients": len(clients),
            }
        ),
        flush=True,
    )


# ---------------------------------------------------------------- the orchestrator


def _message(version: int) -> str:
    lead = {
        "id": 24000000 + version % 5000,
        "name": f"Lead {version} from the website form",
        "price": 1500,
        "pipeline_id": 7000001,
        "status_id": 61000003,
        "responsible_user_id": 9000001,
        "created_at": "2026-05-26T14:11:09Z",
        "updated_at": "2026-05-26T14:13:32Z",
        "closed_at": None,
        "is_deleted": False,
        "tags": [{"id": 482205, "name": "website"}, {"id": 482206, "name": "whatsapp"}],
        "contacts": [
            {
                "id": 35000501,
                "is_main": True,
                "name": "Jane Doe",
                "phones": ["51987654321", "15550001111"],
            }
        ],
        "custom_fields": [
            {"field_id": 100 + i, "field_name": f"Field {i}", "values": [{"value": "x" * 40}]}
            for i in range(8)
        ],
    }
    data = {
        "sent_at": time.monotonic(),
        "action": "updated",
        "version": version,
        "source": "webhook",
        "lead": lead,
    }
    return json.dumps(
        {"event": "lead_update", "account_id": 31000001, "data": data}, separators=(",", ":")
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU together, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def phase(name: str, n: int, stalled: bool, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    args = ctx["args"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "_clients",
        "--port",
        str(ctx["port"]),
        "--clients",
        str(n),
        "--redis-url",
        ctx["redis_url"],
        "--channel",
        ctx["channel"],
        f"--token={ctx['token']}",  # a token may start with "-"
        *(["--stalled"] * stalled),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=1 << 30,
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"READY", "clients failed to connect"
    pids = (ctx["server"].pid, proc.pid)
    cpu0, machine0, started = [_cpu_seconds(p) for p in pids], _machine_busy(), time.monotonic()
    count = int(args.rate * args.duration)
    for i in range(count):
        await asyncio.sleep(max(0.0, started + i / args.rate - time.monotonic()))
        await ctx["redis"].publish(ctx["channel"], _message(ctx["next_version"] + i))
    ctx["next_version"] += count
    await asyncio.sleep(1.0)  # the tail
    elapsed = time.monotonic() - started
    cpu = [(_cpu_seconds(p) - c) / elapsed for p, c in zip(pids, cpu0, strict=True)]
    machine1 = _machine_busy()
    cpu.append((machine1[0] - machine0[0]) / (machine1[1] - machine0[1]))
    proc.stdin.write(f"STOP {count}\n".encode())
    await proc.stdin.drain()
    result = json.loads(await proc.stdout.readline())
    await proc.wait()
    rows = [
        {
            "scenario": f"raw Redis pub/sub (during: {name})",
            "receivers": 1,
            "values": result["redis"],
            "lost": count - len(result["redis"]),
            "cpu": None,
        }
    ]
    if n == 1:
        rows[0]["scenario"] = "raw Redis pub/sub"
    rows.append(
        {
            "scenario": name,
            "receivers": result["clients"],
            "values": result["latencies"],
            "lost": result["lost"],
            "cpu": cpu,
            "closed": result["closed"],
            "stalled": result["stalled"],
            "count": count,
        }
    )
    return rows


async def orchestrate(args: argparse.Namespace) -> None:
    import asyncpg
    from redis.asyncio import Redis

    from service.store.migrations import migrate

    admin_url = os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    run = uuid.uuid4().hex[:10]
    db = f"kommo_bench_{run}"
    db_url = urlunsplit(urlsplit(admin_url)._replace(path="/" + db))
    prefix, token = f"bench:{run}:", f"bench-{uuid.uuid4().hex}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{db}"')
    redis = Redis.from_url(redis_url)
    server = None
    try:
        conn = await asyncpg.connect(db_url)
        await migrate(conn)
        await conn.close()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "WS_TOKENS": token,
            "WS_MAX_CONNECTIONS_PER_TOKEN": str(args.clients + 10),  # all on one token
            "KOMMO_WEBHOOK_SECRET": "b" * 40,
        }
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "_server",
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert server.stdin is not None and server.stdout is not None
        port = json.loads(await server.stdout.readline())["port"]
        channel = prefix + "lead_update"
        while (await redis.pubsub_numsub(channel))[0][1] < 1:  # the hub is subscribed
            await asyncio.sleep(0.05)
        ctx = {
            "args": args,
            "port": port,
            "redis": redis,
            "redis_url": redis_url,
            "channel": channel,
            "server": server,
            "next_version": 1,
            "token": token,
        }
        rows = await phase("gateway, 1 client", 1, False, ctx)
        rows += await phase(f"gateway, {args.clients} clients + 1 stalled", args.clients, True, ctx)
        server.stdin.write(b"STOP\n")
        await server.stdin.drain()
        metrics = json.loads(await server.stdout.readline())
        await server.wait()
        report(args, rows, metrics)
    finally:
        if server is not None and server.returncode is None:
            server.kill()
            await server.wait()
        keys = [k async for k in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


def report(args: argparse.Namespace, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    ms = 1000.0
    print(
        f"\n### Fan-out: {args.rate:g} messages/s for {args.duration:g} s, "
        f"permessage-deflate off, {os.cpu_count()} CPUs\n"
    )
    print(
        "| scenario | receivers | deliveries | lost | p50 ms | p99 ms | max ms "
        "| CPU: server / clients / machine |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        v = r["values"]
        cpu = " / ".join(f"{100 * c:.0f}%" for c in r["cpu"]) if r["cpu"] else "-"
        print(
            f"| {r['scenario']} | {r['receivers']} | {len(v)} | {r['lost']} | "
            f"{_quantile(v, 0.5) * ms:.1f} | {_quantile(v, 0.99) * ms:.1f} | "
            f"{max(v, default=float('nan')) * ms:.1f} | {cpu} |"
        )
    base, big = rows[1]["values"], rows[3]["values"]
    raw = rows[2]["values"]
    print("\n| ratio | p50 | p99 | max |\n| --- | ---: | ---: | ---: |")
    for label, a, b in (
        ("many clients / 1 client", big, base),
        ("many clients / raw Redis", big, raw),
    ):
        ratios = [_quantile(a, q) / _quantile(b, q) for q in (0.5, 0.99)] + [max(a) / max(b)]
        print(f"| {label} | " + " | ".join(f"{x:.1f}x" for x in ratios) + " |")
    stalled = rows[3]["stalled"]
    print(
        f"\nStalled client: read {stalled.get('received')} of {rows[3]['count']} messages once "
        f"resumed, close code {stalled.get('close_code')}; healthy clients closed by the server: "
        f"{rows[3]['closed']}. Server counters: {json.dumps(metrics)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "_server", "_clients"])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--port", type=int)
    parser.add_argument("--redis-url")
    parser.add_argument("--channel")
    parser.add_argument("--token")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for late frames")
    parser.add_argument("--stalled", action="store_true")
    args = parser.parse_args()
    try:  # the server as production runs it (uvicorn's default loop); cheaper clients
        from uvloop import run
    except ImportError:
        run = asyncio.run  # type: ignore[assignment]
    if args.mode == "_server":
        run(run_server())
    elif args.mode == "_clients":
        run(run_clients(args))
    else:
        asyncio.run(orchestrate(args))


if __name__ == "__main__":
    main()
