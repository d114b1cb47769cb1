"""What a hostile WebSocket client can make the gateway hold or do: connections per token, frame
size, filter size, pathological JSON; and that nothing of a socket outlives it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from service.gateway.filters import MAX_FILTER_IDS, MAX_FRAME_BYTES, Filter
from service.gateway.heap import HeapTrimmer
from service.gateway.sockets import Socket
from service.settings import ConfigError, Needs, Settings
from tests.webserver import connect_ws, metric, next_event, served

LIMIT = 300
_BIG = (1 << 63) - 1  # the largest id a filter takes: the longest frame a consumer needs


def _settings(env: dict[str, str], **more: str) -> Settings:
    return Settings.from_env({**env, **more}, Needs.DATABASE | Needs.REDIS)


def _full_filter() -> str:
    """The largest subscription a consumer can make: both lists full of 19-digit ids."""
    pipelines = list(range(_BIG - MAX_FILTER_IDS, _BIG))
    leads = list(range(_BIG - 2 * MAX_FILTER_IDS, _BIG - MAX_FILTER_IDS))
    return json.dumps({"subscribe": {"pipeline_ids": pipelines, "lead_ids": leads}})


async def _closed_with(ws: ClientConnection) -> tuple[int | None, str]:
    """The close code and reason the server sent (frames before it are skipped)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def test_a_token_holds_at_most_the_limit_and_nothing_outlives_its_sockets(
    env: dict[str, str], pool: asyncpg.Pool, redis: Redis
) -> None:
    settings = _settings(
        env, WS_TOKENS=f"{env['WS_TOKENS']},other-token", WS_MAX_CONNECTIONS_PER_TOKEN=str(LIMIT)
    )
    token = env["WS_TOKENS"]
    frame = _full_filter()
    assert len(frame) <= MAX_FRAME_BYTES
    async with served(settings) as running:
        hub = running.hub

        async def subscribed() -> ClientConnection:
            ws, _ = await connect_ws(running.url(f"token={token}"), ping_interval=None)
            await ws.send(frame)
            ack = await next_event(ws, "subscribed", timeout=30)
            assert len(ack["filter"]["lead_ids"]) == MAX_FILTER_IDS
            return ws

        clients: list[ClientConnection] = []
        for _ in range(LIMIT // 50):  # 50 at a time: the test must hold on a loaded machine
            clients += await asyncio.gather(*(subscribed() for _ in range(50)))
        assert metric("ws_connected_sockets") == LIMIT
        assert hub._per_token == {token: LIMIT}

        refused = metric("ws_refused_sockets_total", reason="limit")
        for _ in range(5):
            extra = await connect(running.url(f"token={token}"), compression=None)
            code, reason = await _closed_with(extra)
            assert code == 1008 and "too many connections for this token" in reason
        assert metric("ws_refused_sockets_total", reason="limit") == refused + 5
        assert metric("ws_connected_sockets") == LIMIT  # the refused ones hold nothing

        other, _ = await connect_ws(running.url("token=other-token"))  # another token's own cap
        await other.close()

        await asyncio.gather(*(ws.close() for ws in clients))
        async with asyncio.timeout(30):
            while hub._sockets or hub._endpoints:
                await asyncio.sleep(0.05)
            while len(running.server.server_state.connections) > 1:  # but the httpx client's
                await asyncio.sleep(0.05)
        assert hub._per_token == {}
        assert metric("ws_connected_sockets") == 0
        gc.collect()
        alive = [o for o in gc.get_objects() if type(o) in (Socket, Filter)]
        assert [o for o in alive if isinstance(o, Socket)] == []  # nor their filters:
        assert [o for o in alive if isinstance(o, Filter) and o.lead_ids] == []

        again, _ = await connect_ws(running.url(f"token={token}"))  # the count was given back
        await again.close()


@pytest.mark.parametrize("ws_max_size", [None, 1 << 20], ids=["uvicorn-limit", "receive-loop"])
async def test_an_oversized_frame_closes_the_socket_with_1009(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, ws_max_size: int | None
) -> None:
    """uvicorn refuses a frame past ``ws_max_size`` (the web process's option); a server that
    lets a bigger one through meets the receive loop's own check. Either way: 1009."""
    options: dict[str, Any] = {} if ws_max_size is None else {"ws_max_size": ws_max_size}
    token = next(iter(settings.ws_tokens))
    async with served(settings, **options) as running:
        ws, _ = await connect_ws(running.url(f"token={token}"))
        await ws.send(_full_filter())  # the largest a consumer needs still fits
        await next_event(ws, "subscribed")
        await ws.send(" " * (MAX_FRAME_BYTES + 1))
        code, _ = await _closed_with(ws)
        assert code == 1009
        async with asyncio.timeout(10):
            while running.hub._sockets:
                await asyncio.sleep(0.05)
        other, _ = await connect_ws(running.url(f"token={token}"))  # the process serves on
        await other.close()


async def test_pathological_frames_get_an_error_and_the_socket_stays(
    settings: Settings, pool: asyncpg.Pool, redis: Redis
) -> None:
    token = next(iter(settings.ws_tokens))
    async with served(settings) as running:
        ws, _ = await connect_ws(running.url(f"token={token}"))
        await ws.send(json.dumps({"subscribe": {"pipeline_ids": [7]}}))
        await next_event(ws, "subscribed")
        too_many = json.dumps({"subscribe": {"lead_ids": list(range(1, MAX_FILTER_IDS + 2))}})
        for bad in (
            "[" * 60_000,  # RecursionError in json.loads, unguarded
            '{"subscribe": {"lead_ids": ' + "[" * 30_000 + "1" + "]" * 30_000 + "}}",
            '{"subscribe": {"lead_ids": [' + "9" * 5000 + "]}}",  # int() refuses > 4300 digits
            '{"subscribe": {"lead_ids": [1e999, NaN]}}',
            too_many,
        ):
            await ws.send(bad)
            error = await next_event(ws, "error")
            assert isinstance(error["error"], str) and 0 < len(error["error"]) < 200
        assert str(MAX_FILTER_IDS) in error["error"]  # the last: the cap is named
        await ws.send(json.dumps({"subscribe": "all"}))  # the same socket, still served
        assert (await next_event(ws, "subscribed"))["filter"] == "all"
        await ws.close()


@pytest.mark.parametrize("value", ["0", "-1", "many", "100001"])
def test_the_per_token_limit_is_validated(env: dict[str, str], value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(env, WS_MAX_CONNECTIONS_PER_TOKEN=value)
    assert "WS_MAX_CONNECTIONS_PER_TOKEN" in str(info.value) and value not in str(info.value)
    assert _settings(env).ws_max_connections_per_token == 500  # the documented default


def test_the_heap_is_trimmed_once_a_burst_of_closes_is_over() -> None:
    heap = HeapTrimmer(burst=3, quiet=2.0, interval=30.0)
    for t in (1.0, 1.5):
        heap.note_closed(t)
    assert not heap.tick(10.0)  # two closes: not a burst
    heap.note_closed(10.5)
    assert not heap.tick(11.0)  # a burst, still going on
    assert heap.tick(12.5) and heap.trims == 1 and heap.closed == 0  # quiet for 2 s: trimmed
    for i in range(200):  # a burst that never pauses: trimmed every `interval` seconds
        heap.note_closed(13.0 + i * 0.25)
        heap.tick(13.0 + i * 0.25)
    assert heap.trims == 2
