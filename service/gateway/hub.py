"""The WebSocket gateway: one Redis subscription per process, fanned out to every socket.

``Hub`` holds the process's only subscription to the ``lead_update`` channel. A message is
parsed once (filters, version), encoded once as a frame and written, in the dispatch loop, to
the transport of every matching socket (:mod:`service.gateway.frames`); the transport's
buffer, capped at ``buffer_limit`` bytes, is the socket's queue. Where that cannot be done (not
uvicorn's sans-I/O protocol, an extension negotiated, ``direct=False``) the text goes through a
bounded queue drained by a sender task per socket. The hub never awaits a socket: one whose backlog
overflows, or that flushes nothing for ``send_timeout`` seconds, is closed with 1013 and must
catch up through the read API. The gateway's own frames (JSON text)::

    {"event": "hello", "version": V}          on connect: the last version this process relayed
    {"event": "subscribed", "filter": F}      a filter was accepted: "all" or the id lists
    {"event": "error", "error": "<reason>"}   a client frame was refused; the old filter stays
    {"event": "catch_up", "after": V}         the subscription was (re)established: messages may
                                              be lost, call GET /api/leads?changed_after=V
    {"event": "ping"}                         every ``ping_interval`` seconds (default 20)

Limits (a client's frames and sockets cost the process little whatever it sends): a token holds
at most ``WS_MAX_CONNECTIONS_PER_TOKEN`` sockets *in this process* (default 500; with N web
processes a token may hold N times that): past it a socket is accepted, then closed with 1008
"too many connections for this token" and counted in ``ws_refused_sockets_total{reason="limit"}``.
A client frame larger than :data:`~service.gateway.filters.MAX_FRAME_BYTES` closes the socket
with 1009 (uvicorn does so before the hub sees it; the receive loop checks too); a frame that is
not a valid subscription, deeply nested JSON included, gets an ``error`` event and the socket
stays. Nothing of a socket outlives it: its entry, tasks and queue go when it closes, and
after a burst of closes the tick gives the freed memory back (:mod:`service.gateway.heap`).

Keepalive is the application ``ping``: it passes every proxy, reaches browser code and goes
travels like any frame, so a stalled socket is found even when nothing changes (uvicorn's
protocol pings stay on too). Serve with ``--ws-per-message-deflate false``: compression would
halve the capacity, and a socket that negotiated it cannot take the direct path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import uuid
from typing import NamedTuple

import asyncpg
import uvicorn
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.gateway import frames
from service.gateway.accounts import FOREIGN, Accounts
from service.gateway.filters import MAX_FRAME_BYTES, Filter, FilterError
from service.gateway.frames import Writer, text_frame
from service.gateway.heap import HeapTrimmer
from service.gateway.sockets import Out, Socket, message
from service.keys import Keys
from service.settings import Settings
from service.store import reads
from service.web.auth import known_token

log = logging.getLogger(__name__)

CONNECTED = Gauge("ws_connected_sockets", "WebSocket clients connected to this process")
SENT = Counter("ws_messages_sent", "Frames sent to WebSocket clients")
DIRECT = Gauge("ws_direct_sockets", "Connected sockets whose frames bypass ASGI (direct path)")
RECONNECTS = Counter("ws_redis_reconnects", "Times the hub lost its Redis subscription")
REFUSED = Counter(
    "ws_refused_sockets",
    "WebSocket connections closed at once: bad token, over the per-token limit, shutting down",
    ["reason"],
)

_BATCH = 100  # messages relayed together at most, when the hub is behind
_REASONS = {
    1001: "server shutting down",
    1009: f"frame too big: a client frame is at most {MAX_FRAME_BYTES} bytes",
    1013: "too slow: catch up through the read API",
}
_SILENT_AFTER, _DEAD_AFTER = 15.0, 10.0  # quiet subscription: PING Redis; no PONG: reconnect


_PING = message(event="ping")


class _Update(NamedTuple):
    text: str
    raw: bytes
    account_id: int
    version: int
    lead_id: object
    pipeline_id: object


class Hub:
    """The process's subscription to ``lead_update`` and the sockets it relays to.

    ``buffer_limit`` (direct path) and ``queue_size`` (queue path) bound each socket's backlog:
    1 MiB is about 1,000 typical messages, 10 s at 100 messages/s, on top of the kernel's own
    socket buffer. A socket that has not taken its close frame (1013, 1001) after
    ``close_timeout`` seconds is left to uvicorn; on the direct path it is aborted, its buffer
    freed, so a peer that never reads again holds nothing.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        direct: bool = True,
        buffer_limit: int = 1 << 20,
        queue_size: int = 1000,
        send_timeout: float = 5.0,
        ping_interval: float = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.channel = Keys.of(settings).lead_update
        self.accounts = Accounts(settings.kommo_account_id)
        self._pool: asyncpg.Pool | None = None
        self.direct, self.buffer_limit = direct, buffer_limit
        self.queue_size, self.send_timeout = queue_size, send_timeout
        self.ping_interval, self.close_timeout = ping_interval, close_timeout
        self.client_name = f"ws-hub-{uuid.uuid4().hex[:12]}"  # CLIENT SETNAME of the subscription
        self.last_version = 0  # the newest version relayed (Postgres's newest at start)
        self.subscribed = asyncio.Event()  # set while the subscription is live
        self.max_per_token = settings.ws_max_connections_per_token
        self._sockets: set[Socket] = set()
        self._per_token: dict[str, int] = {}  # sockets open per token (entries > 0 only)
        self.heap = HeapTrimmer()  # gives memory back after a burst of closes
        self._endpoints: set[asyncio.Future[None]] = set()  # running endpoint() calls
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        if self.direct and frames.SANSIO is None:
            frames.fall_back("uvicorn has no websockets_sansio_impl.WebSocketsSansIOProtocol")
        async with pool.acquire() as conn:
            self.last_version = await reads.latest_version(conn)
        await self.accounts.load(pool)
        self._tasks = [
            asyncio.create_task(self._subscribe_forever(), name="ws-hub-subscription"),
            asyncio.create_task(self._tick_forever(), name="ws-hub-tick"),
        ]

    async def stop(self) -> None:
        """Close every socket with 1001, end the subscription; idempotent, takes seconds at most."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for sock in list(self._sockets):
            sock.close(1001)
        if self._endpoints:
            _, late = await asyncio.wait(self._endpoints, timeout=self.close_timeout + 1)
            if late:
                log.warning("%d sockets still open after the shutdown timeout", len(late))

    def broadcast(self, out: Out) -> None:
        """Offer messages to every socket, whatever its filter; never waits."""
        SENT.inc(len(out.texts) * sum([sock.offer(out) for sock in list(self._sockets)]))

    def _parse(self, batch: list[bytes]) -> list[_Update]:
        updates = []
        for raw in batch:
            text = raw.decode()
            try:
                message = json.loads(text)
                data, account_id = message["data"], int(message["account_id"])
                version, lead = int(data["version"]), data["lead"]
                lead_id, pipeline_id = lead.get("id"), lead.get("pipeline_id")
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("dropped a malformed lead_update message (%d bytes)", len(raw))
                continue
            updates.append(_Update(text, raw, account_id, version, lead_id, pipeline_id))
        return updates

    async def _ours(self, updates: list[_Update]) -> list[_Update]:
        """Only messages of this deployment's accounts (see service.gateway.accounts)."""
        accounts = {u.account_id for u in updates}
        if accounts <= self.accounts.known or self._pool is None:
            return updates
        ours = await self.accounts.ours(self._pool, accounts)
        kept = [u for u in updates if u.account_id in ours]
        if len(kept) < len(updates):
            FOREIGN.inc(len(updates) - len(kept))
            log.warning(
                "dropped %d lead_update messages of accounts this deployment does not "
                "mirror (another deployment on the same Redis?)",
                len(updates) - len(kept),
            )
        return kept

    def _dispatch(self, batch: list[_Update]) -> None:
        """Relay the lead_update messages Redis had ready: each socket gets the frames its filter
        matches in one write (batches grow only when the hub falls behind, and then catch up)."""
        updates: list[tuple[str, bytes, object, object]] = []
        for u in batch:
            self.last_version = max(self.last_version, u.version)
            updates.append((u.text, text_frame(u.raw), u.lead_id, u.pipeline_id))
        by_filter: dict[Filter, Out] = {}  # most sockets share a few filters: join once each
        sent = 0
        for sock in list(self._sockets):
            if (out := by_filter.get(sock.filter)) is None:
                wanted = [u for u in updates if sock.filter.matches(u[2], u[3])]
                out = Out([u[0] for u in wanted], b"".join([u[1] for u in wanted]))
                by_filter[sock.filter] = out
            if out.texts and sock.offer(out):
                sent += len(out.texts)
        SENT.inc(sent)

    async def _subscribe_forever(self) -> None:
        delay = 0.2
        while True:
            redis: Redis = Redis.from_url(
                self.settings.redis_dsn,
                client_name=self.client_name,
                socket_keepalive=True,
                socket_connect_timeout=5,
                retry=Retry(NoBackoff(), 0),  # no silent reconnects
            )
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async with asyncio.timeout(10):  # live only once Redis confirmed it
                        while not await pubsub.get_message(timeout=1.0):
                            pass
                    self.subscribed.set()
                    log.info("subscribed to %s", self.channel)
                    delay = 0.2  # messages may have been published while no one listened:
                    self.broadcast(message(event="catch_up", after=self.last_version))
                    await self._relay(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                RECONNECTS.inc()
                log.warning("redis subscription lost (%r); retry in %.1fs", exc, delay)
            finally:
                self.subscribed.clear()
                await redis.aclose()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 10.0)

    async def _relay(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_seen, ping_sent = loop.time(), 0.0
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            now = loop.time()
            if msg is not None:
                last_seen, ping_sent = now, 0.0
                batch = [msg["data"]] if msg["type"] == "message" else []
                while len(batch) < _BATCH and (msg := await pubsub.get_message(timeout=0)):
                    if msg["type"] == "message":  # already read from Redis: no wait
                        batch.append(msg["data"])
                if batch and (updates := await self._ours(self._parse(batch))):
                    self._dispatch(updates)
                    await asyncio.sleep(0)  # let the sockets' own tasks run between batches
            elif ping_sent and now - ping_sent > _DEAD_AFTER:
                raise TimeoutError("no PONG from redis")
            elif not ping_sent and now - last_seen > _SILENT_AFTER:
                await pubsub.ping()
                ping_sent = now

    async def _tick_forever(self) -> None:
        """Close sockets that send nothing for ``send_timeout``; ping every ``ping_interval``."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.send_timeout / 4, self.ping_interval)
        next_ping = loop.time() + self.ping_interval
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            self._close_stalled(now)
            self.heap.tick(now)
            if now >= next_ping:
                next_ping = now + self.ping_interval
                self.broadcast(_PING)

    def _close_stalled(self, now: float) -> None:
        """(A function of its own: a loop variable left in the long-running tick would keep the
        last socket, its filter and its connection alive after it closed.)"""
        for sock in list(self._sockets):
            if sock.stalled_for(now) > self.send_timeout:
                sock.close_slow()

    async def endpoint(self, ws: WebSocket) -> None:
        """``GET /ws``: authenticate, say hello, then relay until either side closes."""
        await ws.accept()  # then close: a rejected handshake would hide the 1008 from clients
        token = await self._admit(ws)
        if token is None:
            return
        try:
            await self._serve(ws)
        finally:
            if held := self._per_token.pop(token) - 1:
                self._per_token[token] = held

    async def _admit(self, ws: WebSocket) -> str | None:
        """The socket's token, counted against its limit; None: the socket was refused (closed)."""
        token = known_token(self.settings, ws)
        if token is None:
            reason, code, text = "token", 1008, "missing or invalid token"
        elif self._stopping:
            reason, code, text = "stopping", 1001, _REASONS[1001]
        elif (held := self._per_token.get(token, 0)) >= self.max_per_token:
            reason, code = "limit", 1008
            text = f"too many connections for this token (at most {self.max_per_token})"
        else:
            self._per_token[token] = held + 1  # no await since the check: no race
            return token
        REFUSED.labels(reason).inc()
        await ws.close(code, text)
        return None

    async def _serve(self, ws: WebSocket) -> None:
        writer = Writer.attach(ws, self.buffer_limit) if self.direct else None
        sock = Socket(writer, None if writer else asyncio.Queue(self.queue_size))
        self._sockets.add(sock)
        done = asyncio.get_running_loop().create_future()
        self._endpoints.add(done)
        CONNECTED.inc()
        DIRECT.inc(writer is not None)
        sock.offer(message(event="hello", version=self.last_version))
        tasks = [asyncio.create_task(self._receive_loop(ws, sock))]
        if writer is None:
            tasks.append(asyncio.create_task(self._send_loop(ws, sock)))
        try:
            await sock.done.wait()
        finally:
            self._sockets.discard(sock)
            self.heap.note_closed(asyncio.get_running_loop().time())
            CONNECTED.dec()
            DIRECT.dec(writer is not None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                if sock.close_code is not None and ws.application_state == WebSocketState.CONNECTED:
                    async with asyncio.timeout(self.close_timeout):  # waits while it is stalled
                        await ws.close(sock.close_code, _REASONS[sock.close_code])
            except TimeoutError:
                if writer is not None:  # it never read its close frame: free what it buffers
                    writer.abort()
            except WebSocketDisconnect:
                pass
            finally:
                self._endpoints.discard(done)
                done.set_result(None)

    async def _send_loop(self, ws: WebSocket, sock: Socket) -> None:
        assert sock.queue is not None
        loop = asyncio.get_running_loop()  # a stalled send is found by _tick_forever: a timeout
        try:  # per send would cost more than the send itself
            while True:
                text = await sock.queue.get()
                sock.sending_since = loop.time()
                await ws.send_text(text)
                sock.sending_since = 0.0
                SENT.inc()
        except WebSocketDisconnect:
            sock.done.set()

    async def _receive_loop(self, ws: WebSocket, sock: Socket) -> None:
        try:
            while (msg := await ws.receive())["type"] != "websocket.disconnect":
                text, data = msg.get("text"), msg.get("bytes")
                if len(text if text is not None else data or b"") > MAX_FRAME_BYTES:
                    sock.close(1009)  # a server without uvicorn's ws_max_size let it through
                    return
                try:
                    sock.filter = Filter.parse(text)
                except FilterError as exc:
                    sock.offer(message(event="error", error=str(exc)))
                else:
                    sock.offer(message(event="subscribed", filter=sock.filter.as_json()))
        finally:
            sock.done.set()  # the peer went away (or the endpoint is ending)


class Server(uvicorn.Server):
    """uvicorn closes every WebSocket with 1012 *before* the lifespan shutdown runs; this server
    first lets the hub close its sockets with 1001 ("going away"), then shuts down as usual."""

    def __init__(self, config: uvicorn.Config, hub: Hub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.hub.stop()
        await super().shutdown(sockets)
