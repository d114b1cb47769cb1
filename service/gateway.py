"""The WebSocket gateway: one Redis subscription per process, fanned out to every socket.

``Hub`` holds the process's only subscription to ``settings.key("lead_update")``. A message is
parsed once (filters, version) and its text relayed as is through a bounded queue per socket,
drained by the socket's own sender task: the hub never awaits a socket. A socket whose queue
overflows or whose send stalls is closed with 1013 and must catch up through the read API.
The gateway's own frames (JSON text)::

    {"event": "hello", "version": V}          on connect: the last version this process relayed
    {"event": "subscribed", "filter": F}      a filter was accepted: "all" or the id lists
    {"event": "error", "error": "<reason>"}   a client frame was refused; the old filter stays
    {"event": "catch_up", "after": V}         the subscription was (re)established: messages may
                                              be lost, call GET /api/leads?changed_after=V
    {"event": "ping"}                         every ``ping_interval`` seconds (default 20)

Keepalive is the application ``ping``: it passes every proxy, reaches browser code and goes
through the queue, so a stalled socket is found even when nothing changes (uvicorn's protocol
pings stay on too). Serve with ``--ws-per-message-deflate false``: it halves the capacity.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import socket
import uuid

import asyncpg
import uvicorn
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from service.readapi import authorized, latest_version
from service.settings import Settings

log = logging.getLogger(__name__)

CONNECTED = Gauge("ws_connected_sockets", "WebSocket clients connected to this process")
DROPPED_SLOW = Counter("ws_dropped_slow", "Sockets closed with 1013 (queue full or send stalled)")
SENT = Counter("ws_messages_sent", "Frames sent to WebSocket clients")
RECONNECTS = Counter("ws_redis_reconnects", "Times the hub lost its Redis subscription")

MAX_FILTER_IDS = 10_000
_PING = '{"event":"ping"}'
_REASONS = {1001: "server shutting down", 1013: "too slow: catch up through the read API"}
_SILENT_AFTER, _DEAD_AFTER = 15.0, 10.0  # quiet subscription: PING Redis; no PONG: reconnect


class FilterError(ValueError):
    """A client frame that is not a valid subscription; the message is the reason sent back."""


@dataclasses.dataclass(frozen=True)
class Filter:
    """The leads a socket wants: in a listed pipeline or with a listed id; no lists: all."""

    pipeline_ids: frozenset[int] | None = None
    lead_ids: frozenset[int] | None = None

    def matches(self, lead_id: object, pipeline_id: object) -> bool:
        pipelines, leads = self.pipeline_ids, self.lead_ids
        if pipelines is None and leads is None:
            return True
        return bool(pipelines and pipeline_id in pipelines or leads and lead_id in leads)

    def as_json(self) -> object:
        fields = {"pipeline_ids": self.pipeline_ids, "lead_ids": self.lead_ids}
        return {k: sorted(v) for k, v in fields.items() if v is not None} or "all"

    @classmethod
    def parse(cls, text: str | None) -> Filter:
        """``{"subscribe": "all"}`` or ``{"subscribe": {"pipeline_ids": [...], ...}}``."""
        try:
            msg = json.loads(text) if text is not None else None
        except ValueError:
            raise FilterError("not JSON") from None
        if not isinstance(msg, dict) or set(msg) != {"subscribe"}:
            raise FilterError('expected {"subscribe": "all" or {"pipeline_ids"/"lead_ids": [...]}}')
        spec = msg["subscribe"]
        if spec == "all":
            return cls()
        if not isinstance(spec, dict) or not spec or not set(spec) <= {"pipeline_ids", "lead_ids"}:
            raise FilterError('subscribe takes "all" or {"pipeline_ids": [...], "lead_ids": [...]}')
        lists: dict[str, frozenset[int]] = {}
        for key, ids in spec.items():
            if (
                not isinstance(ids, list)
                or len(ids) > MAX_FILTER_IDS
                or not all(type(i) is int and 0 < i < 1 << 63 for i in ids)
            ):
                raise FilterError(f"{key} must list up to {MAX_FILTER_IDS} positive integers")
            lists[key] = frozenset(ids)
        return cls(lists.get("pipeline_ids"), lists.get("lead_ids"))


@dataclasses.dataclass(eq=False)
class _Socket:
    """One connected client as the hub sees it: its filter, its bounded queue, its fate."""

    queue: asyncio.Queue[str]
    filter: Filter = Filter()
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    close_code: int | None = None  # set when the server decides to close the socket
    sending_since = 0.0  # loop time the current send started; 0 while idle

    def offer(self, text: str) -> None:
        """Queue a frame without waiting; a full queue closes the socket with 1013."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            DROPPED_SLOW.inc()
            self.close(1013)

    def close(self, code: int) -> None:
        if not self.done.is_set():
            self.close_code = code
            self.done.set()


class Hub:
    """The process's subscription to ``lead_update`` and the sockets it relays to."""

    def __init__(
        self,
        settings: Settings,
        *,
        queue_size: int = 1000,
        send_timeout: float = 5.0,
        ping_interval: float = 20.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.channel = settings.key("lead_update")
        self.queue_size, self.send_timeout = queue_size, send_timeout
        self.ping_interval, self.close_timeout = ping_interval, close_timeout
        self.client_name = f"ws-hub-{uuid.uuid4().hex[:12]}"  # CLIENT SETNAME of the subscription
        self.last_version = 0  # the newest version relayed (Postgres's newest at start)
        self.subscribed = asyncio.Event()  # set while the subscription is live
        self._sockets: set[_Socket] = set()
        self._endpoints: set[asyncio.Future[None]] = set()  # running endpoint() calls
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self, pool: asyncpg.Pool) -> None:
        self.last_version = await latest_version(pool)
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

    def broadcast(self, text: str) -> None:
        """Offer a frame to every socket, whatever its filter; never waits."""
        for sock in list(self._sockets):
            sock.offer(text)

    def _dispatch(self, raw: bytes) -> None:
        text = raw.decode()
        try:
            data = json.loads(text)["data"]
            version, lead = int(data["version"]), data["lead"]
            lead_id, pipeline_id = lead.get("id"), lead.get("pipeline_id")
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("dropped a malformed lead_update message (%d bytes)", len(raw))
            return
        self.last_version = max(self.last_version, version)
        for sock in list(self._sockets):
            if sock.filter.matches(lead_id, pipeline_id):
                sock.offer(text)

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
                    self.broadcast(json.dumps({"event": "catch_up", "after": self.last_version}))
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
                if msg["type"] == "message":
                    self._dispatch(msg["data"])
                    await asyncio.sleep(0)  # let the senders run before the next message
            elif ping_sent and now - ping_sent > _DEAD_AFTER:
                raise TimeoutError("no PONG from redis")
            elif not ping_sent and now - last_seen > _SILENT_AFTER:
                await pubsub.ping()
                ping_sent = now

    async def _tick_forever(self) -> None:
        """Close sockets whose send stalls past ``send_timeout``; ping every ``ping_interval``."""
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.send_timeout / 4, self.ping_interval)
        next_ping = loop.time() + self.ping_interval
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for sock in list(self._sockets):
                if sock.sending_since and now - sock.sending_since > self.send_timeout:
                    DROPPED_SLOW.inc()
                    sock.close(1013)
            if now >= next_ping:
                next_ping = now + self.ping_interval
                self.broadcast(_PING)

    async def endpoint(self, ws: WebSocket) -> None:
        """``GET /ws``: authenticate, say hello, then relay until either side closes."""
        await ws.accept()  # then close: a rejected handshake would hide the 1008 from clients
        if not authorized(self.settings, ws):
            await ws.close(1008, "missing or invalid token")
            return
        if self._stopping:
            await ws.close(1001, _REASONS[1001])
            return
        sock = _Socket(asyncio.Queue(self.queue_size))
        self._sockets.add(sock)
        done = asyncio.get_running_loop().create_future()
        self._endpoints.add(done)
        CONNECTED.inc()
        sock.offer(json.dumps({"event": "hello", "version": self.last_version}))
        tasks = [
            asyncio.create_task(self._send_loop(ws, sock)),
            asyncio.create_task(self._receive_loop(ws, sock)),
        ]
        try:
            await sock.done.wait()
        finally:
            self._sockets.discard(sock)
            CONNECTED.dec()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                if sock.close_code is not None and ws.application_state == WebSocketState.CONNECTED:
                    async with asyncio.timeout(self.close_timeout):  # waits while it is stalled
                        await ws.close(sock.close_code, _REASONS[sock.close_code])
            except (TimeoutError, WebSocketDisconnect):
                pass
            finally:
                self._endpoints.discard(done)
                done.set_result(None)

    async def _send_loop(self, ws: WebSocket, sock: _Socket) -> None:
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

    async def _receive_loop(self, ws: WebSocket, sock: _Socket) -> None:
        try:
            while (msg := await ws.receive())["type"] != "websocket.disconnect":
                try:
                    sock.filter = Filter.parse(msg.get("text"))
                except FilterError as exc:
                    sock.offer(json.dumps({"event": "error", "error": str(exc)}))
                else:
                    sock.offer(json.dumps({"event": "subscribed", "filter": sock.filter.as_json()}))
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
