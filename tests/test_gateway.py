"""The WebSocket gateway through a real uvicorn server, real Redis pub/sub and real Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.gateway.hub import Hub
from service.keys import Keys
from service.settings import Settings
from tests.session import WS_TOKEN
from tests.web import Running, change, serve


async def client(running: Running, **kw: Any) -> tuple[ClientConnection, dict[str, Any]]:
    """A connected client and its hello."""
    ws = await connect(running.url(), compression=None, **kw)
    async with asyncio.timeout(5):
        hello = json.loads(await ws.recv())
    assert hello["event"] == "hello"
    return ws, hello


async def next_event(ws: ClientConnection, event: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg: dict[str, Any] = json.loads(await ws.recv())
            if msg["event"] == event:
                return msg


async def read_changes(http: httpx.AsyncClient, after: int, limit: int = 30) -> list[int]:
    """Every version after ``after`` through the read API, page by page."""
    versions: list[int] = []
    while True:
        page = (
            await http.get(
                "/api/leads",
                params={"changed_after": after, "limit": limit},
                headers={"Authorization": f"Bearer {WS_TOKEN}"},
            )
        ).json()
        versions += [item["version"] for item in page["items"]]
        if not page["items"]:
            return versions
        after = page["next_after"]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
async def test_message_reaches_client_verbatim(
    pool: asyncpg.Pool, redis: Redis, settings: Settings, direct: bool
) -> None:
    before, _ = await change(pool, None, settings, 24000100)
    async with serve(settings, Hub(settings, direct=direct)) as running:
        ws, hello = await client(running)
        assert hello == {"event": "hello", "version": before}
        assert metric("ws_connected_sockets") == 1
        assert metric("ws_direct_sockets") == direct  # uvicorn's sans-I/O protocol: direct
        for pad in (0, 200, 70_000):  # frame lengths in 7, 16 and 64 bits
            _, text = await change(pool, redis, settings, 24000101, pad=pad)
            async with asyncio.timeout(5):
                assert await ws.recv() == text
        await ws.close()


class OtherProtocol(WebSocketsSansIOProtocol):
    """Stands for any WebSocket server whose writes the direct path does not know."""


@pytest.mark.parametrize(
    "options, compression",
    [
        pytest.param({"ws": OtherProtocol}, None, id="other-protocol"),
        pytest.param({"ws_per_message_deflate": True}, "deflate", id="deflate-negotiated"),
    ],
)
async def test_sockets_the_direct_path_cannot_serve_are_queued(
    pool: asyncpg.Pool,
    redis: Redis,
    settings: Settings,
    options: dict[str, Any],
    compression: str | None,
) -> None:
    async with serve(settings, **options) as running:
        ws = await connect(running.url(), compression=compression)
        async with asyncio.timeout(5):
            assert json.loads(await ws.recv())["event"] == "hello"
        assert metric("ws_connected_sockets") == 1
        assert metric("ws_direct_sockets") == 0
        (sock,) = running.hub._sockets
        assert sock.writer is None and sock.queue is not None
        _, text = await change(pool, redis, settings, 24000102, pad=5000)
        async with asyncio.timeout(5):
            assert await ws.recv() == text
        await ws.close()


async def test_a_burst_reaches_every_client_in_order_through_its_filter(
    pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    """Messages published back to back are relayed in batches: one write per socket."""
    async with serve(settings) as running:
        odd, _ = await client(running)
        everything, _ = await client(running)
        await odd.send(json.dumps({"subscribe": {"pipeline_ids": [1]}}))
        await next_event(odd, "subscribed")
        texts = [(await change(pool, None, settings, i, pipeline_id=i % 2))[1] for i in range(60)]
        async with redis.pipeline(transaction=False) as pipe:
            for text in texts:
                pipe.publish(Keys(settings.redis_prefix).lead_update, text)
            await pipe.execute()
        async with asyncio.timeout(5):
            assert [await everything.recv() for _ in texts] == texts
            assert [await odd.recv() for _ in texts[1::2]] == texts[1::2]
        await asyncio.gather(odd.close(), everything.close())


async def test_filters_select_pipelines_and_leads(
    pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    async with serve(settings) as running:
        by_pipeline, _ = await client(running)
        by_lead, _ = await client(running)
        everything, _ = await client(running)
        await by_pipeline.send(json.dumps({"subscribe": {"pipeline_ids": [1]}}))
        await by_lead.send(json.dumps({"subscribe": {"lead_ids": [42]}}))
        await everything.send(json.dumps({"subscribe": "all"}))
        acks = [await next_event(ws, "subscribed") for ws in (by_pipeline, by_lead, everything)]
        assert [a["filter"] for a in acks] == [{"pipeline_ids": [1]}, {"lead_ids": [42]}, "all"]
        for lead_id, pipeline in ((42, 2), (7, 1), (8, 3), (42, 1)):  # the last one: everyone
            await change(pool, redis, settings, lead_id, pipeline_id=pipeline)
        seen = {}
        for name, ws in (("pipeline", by_pipeline), ("lead", by_lead), ("all", everything)):
            got: list[tuple[int, int]] = []
            async with asyncio.timeout(5):
                while not got or got[-1] != (42, 1):
                    lead = json.loads(await ws.recv())["data"]["lead"]
                    got.append((lead["id"], lead["pipeline_id"]))
            seen[name] = got
        assert seen == {
            "pipeline": [(7, 1), (42, 1)],
            "lead": [(42, 2), (42, 1)],
            "all": [(42, 2), (7, 1), (8, 3), (42, 1)],
        }


async def test_malformed_filter_gets_an_error_and_keeps_the_old_one(
    pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    async with serve(settings) as running:
        ws, _ = await client(running)
        await ws.send(json.dumps({"subscribe": {"pipeline_ids": [1]}}))
        await next_event(ws, "subscribed")
        for bad in (
            "not json",
            '{"subscribe": {"pipeline_ids": "1"}}',
            '{"subscribe": 5}',
            '{"subscribe": {}}',
            '{"subscribe": {"lead_ids": [true]}}',
            '["x"]',
            b"\x00",
        ):
            await ws.send(bad)
            error = await next_event(ws, "error")
            assert isinstance(error["error"], str) and "\n" not in error["error"]
        await change(pool, redis, settings, 5, pipeline_id=2)
        _, wanted = await change(pool, redis, settings, 6, pipeline_id=1)
        async with asyncio.timeout(5):
            assert await ws.recv() == wanted  # the pipeline-2 change was filtered out
        other, _ = await client(running)  # and the process keeps serving
        assert (await running.http.get("/healthz")).status_code == 200
        await asyncio.gather(ws.close(), other.close())


async def test_missing_or_wrong_token_is_closed_with_1008(settings: Settings) -> None:
    async with serve(settings) as running:
        for url in (running.url(None), running.url("wrong-token")):
            ws = await connect(url, compression=None)
            async with asyncio.timeout(5):
                try:
                    await ws.recv()
                except ConnectionClosed as exc:
                    assert exc.rcvd is not None and exc.rcvd.code == 1008
                else:
                    raise AssertionError("an unauthenticated socket got a frame")
        headers = {"Authorization": f"Bearer {WS_TOKEN}"}
        ws = await connect(running.url(None), additional_headers=headers, compression=None)
        async with asyncio.timeout(5):
            assert json.loads(await ws.recv())["event"] == "hello"
        await ws.close()


async def test_client_disconnected_during_changes_catches_up_through_the_read_api(
    pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    async with serve(settings) as running:
        ws, _ = await client(running)
        for i in range(10):
            await change(pool, redis, settings, 1000 + i)
        async with asyncio.timeout(5):
            seen = [json.loads(await ws.recv())["data"]["version"] for _ in range(10)]
        await ws.close()
        written = [
            (
                await change(
                    pool, redis, settings, 2000 + i, action="deleted" if i % 10 == 3 else "created"
                )
            )[0]
            for i in range(100)
        ]
        ws, hello = await client(running)
        assert seen[-1] < hello["version"] <= written[-1]  # what the hub relayed so far
        caught_up = await read_changes(running.http, after=seen[-1])
        assert caught_up == written  # every version, ascending, none twice
        await ws.close()


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
async def test_stalled_client_is_closed_and_never_slows_the_others(
    pool: asyncpg.Pool, redis: Redis, settings: Settings, direct: bool
) -> None:
    """Its backlog overflows (64 KiB in the transport's buffer, or 100 queued messages) long
    before it could stall past ``send_timeout``."""
    hub = Hub(
        settings,
        direct=direct,
        buffer_limit=64 << 10,
        queue_size=100,
        send_timeout=60,
        close_timeout=30,
    )
    async with serve(settings, hub) as running:
        healthy = [(await client(running))[0] for _ in range(100)]
        arrivals: dict[int, list[float]] = {}
        complete: dict[int, asyncio.Event] = {}

        async def read(ws: ClientConnection) -> None:
            async for frame in ws:
                version = json.loads(frame)["data"]["version"]
                arrivals.setdefault(version, []).append(time.perf_counter())
                if len(arrivals[version]) == len(healthy):
                    complete.setdefault(version, asyncio.Event()).set()

        readers = [asyncio.create_task(read(ws)) for ws in healthy]
        raw = socket.socket()  # a tiny receive buffer: the stall shows quickly
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", running.port))
        stalled = await connect(
            running.url(), sock=raw, compression=None, max_queue=1, ping_interval=None
        )
        assert metric("ws_direct_sockets") == (101 if direct else 0)

        async def send(count: int) -> list[float]:
            """Publish ``count`` changes, wait until every healthy client has them all."""
            sent = []
            for n in range(count):
                version, _ = await change(pool, redis, settings, 1 + n % 50, pad=8000)
                sent.append((version, time.perf_counter()))
            async with asyncio.timeout(10):
                for version, _ in sent:
                    await complete.setdefault(version, asyncio.Event()).wait()
            return [max(arrivals[v]) - t for v, t in sent]

        before = [(await send(1))[0] for _ in range(20)]
        dropped = metric("ws_dropped_slow_total")
        published = 20
        while metric("ws_dropped_slow_total") == dropped:
            assert published < 3000, "the stalled client was never dropped"
            await send(25)
            published += 25
        after = [(await send(1))[0] for _ in range(20)]
        published += 20
        assert max(after) < 0.5, (before, after)
        assert statistics.median(after) < max(0.05, 5 * statistics.median(before))
        got = 0
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(20):
                async for _ in stalled:
                    got += 1
        assert stalled.close_code == 1013
        assert got < published
        for ws in healthy:
            await ws.close()
        await asyncio.gather(*readers)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "queued"])
async def test_a_send_stalled_past_the_timeout_closes_the_socket_with_1013(
    pool: asyncpg.Pool, redis: Redis, settings: Settings, direct: bool
) -> None:
    """No backlog limit is reached (the buffer or the queue holds everything): the timer acts."""
    hub = Hub(
        settings,
        direct=direct,
        buffer_limit=1 << 40,
        queue_size=100_000,
        send_timeout=0.5,
        close_timeout=30,
    )
    async with serve(settings, hub) as running:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", running.port))
        stalled = await connect(
            running.url(), sock=raw, compression=None, max_queue=1, ping_interval=None
        )
        (sock,) = hub._sockets  # the one socket, as the hub sees it
        assert (sock.writer is not None) == direct
        dropped = metric("ws_dropped_slow_total")
        for _ in range(200):  # 13 MB: far more than the socket buffers hold; no limit is hit
            await change(pool, redis, settings, 1, pad=64_000)
        async with asyncio.timeout(10):
            await sock.done.wait()
        assert sock.close_code == 1013
        assert metric("ws_dropped_slow_total") == dropped + 1
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(20):
                async for _ in stalled:
                    pass
        assert stalled.close_code == 1013


async def test_lost_subscription_tells_clients_to_catch_up(
    pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    async with serve(settings) as running:
        ws, _ = await client(running)
        streamed = set()
        for i in range(5):
            await change(pool, redis, settings, 100 + i)
        async with asyncio.timeout(5):
            for _ in range(5):
                streamed.add(json.loads(await ws.recv())["data"]["version"])
        reconnects = metric("ws_redis_reconnects_total")
        for c in await redis.client_list(_type="pubsub"):
            if c["name"] == running.hub.client_name:
                await redis.client_kill_filter(_id=c["id"])
        written = [(await change(pool, redis, settings, 200 + i))[0] for i in range(5)]
        async with asyncio.timeout(10):
            while (msg := json.loads(await ws.recv()))["event"] != "catch_up":
                streamed.add(msg["data"]["version"])
        assert metric("ws_redis_reconnects_total") == reconnects + 1
        assert msg["after"] >= max(streamed)
        recovered = set(await read_changes(running.http, after=msg["after"]))
        assert set(written) <= streamed | recovered  # nothing lost
        version, text = await change(pool, redis, settings, 300)  # and the stream is back
        async with asyncio.timeout(5):
            assert await ws.recv() == text
        await ws.close()


async def test_application_pings_keep_idle_sockets_alive(settings: Settings) -> None:
    async with serve(settings, Hub(settings, ping_interval=0.1)) as running:
        ws, _ = await client(running)
        assert await next_event(ws, "ping", timeout=2) == {"event": "ping"}
        await ws.close()


async def test_graceful_shutdown_closes_sockets_with_1001(settings: Settings) -> None:
    async with serve(settings, graceful=True) as running:
        sockets = [(await client(running))[0] for _ in range(3)]
        started = time.perf_counter()
        running.server.should_exit = True
        async with asyncio.timeout(5):
            await running.task
        assert time.perf_counter() - started < 5
        for ws in sockets:
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(5):
                    await ws.recv()
            assert ws.close_code == 1001


async def test_a_client_that_never_reads_its_close_frame_is_cut_off(
    pool: asyncpg.Pool, redis: Redis, settings: Settings
) -> None:
    """The 1013 close waits ``close_timeout`` at most; then the connection and its buffer go."""
    hub = Hub(settings, buffer_limit=16 << 10, close_timeout=0.5)
    async with serve(settings, hub) as running:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", running.port))
        stalled = await connect(
            running.url(), sock=raw, compression=None, max_queue=1, ping_interval=None
        )
        (sock,) = hub._sockets
        assert sock.writer is not None
        while not sock.done.is_set():
            await change(pool, redis, settings, 1, pad=64_000)
        assert sock.close_code == 1013
        done, _ = await asyncio.wait(hub._endpoints, timeout=5)  # gave up on the handshake
        assert done and not hub._endpoints
        connection = sock.writer.transport.get_protocol()  # uvicorn's, for this socket
        async with asyncio.timeout(1):  # and the connection is gone, not left to drain
            while connection in running.server.server_state.connections:
                await asyncio.sleep(0.01)
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(20):
                async for _ in stalled:
                    pass
        assert stalled.close_code == 1006  # no close frame ever arrived
