"""The hub's view of one connected WebSocket: its filter, where its frames go, its fate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import NamedTuple

from prometheus_client import Counter

from service.gateway.filters import Filter
from service.gateway.frames import Writer, text_frame

DROPPED_SLOW = Counter("ws_dropped_slow", "Sockets closed with 1013 (backlog full or stalled)")


@dataclasses.dataclass(eq=False)
class Socket:
    """One connected client as the hub sees it: its filter, its outlet, its fate.

    Frames leave through ``writer``, straight to the connection's transport, when the server
    allows it (:mod:`service.gateway.frames`); otherwise through ``queue``, drained by a sender
    task."""

    writer: Writer | None
    queue: asyncio.Queue[str] | None  # None with a writer
    filter: Filter = Filter()
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    close_code: int | None = None  # set when the server decides to close the socket
    sending_since = 0.0  # queue path: loop time the current send started; 0 while idle

    def offer(self, out: Out) -> bool:
        """Write or queue messages without waiting; a backlog over the limit closes the socket
        with 1013. True when they went out now (the queue path counts them as it sends them)."""
        if self.done.is_set():
            return False
        if self.writer is not None:
            if self.writer.write(out.frames):
                return True
        elif self.queue is not None:
            try:
                for text in out.texts:
                    self.queue.put_nowait(text)
                return False
            except asyncio.QueueFull:
                pass
        self.close_slow()
        return False

    def stalled_for(self, now: float) -> float:
        """Seconds the socket has been unable to send anything."""
        if self.writer is not None:
            return self.writer.stalled_for(now)
        return now - self.sending_since if self.sending_since else 0.0

    def close(self, code: int) -> None:
        """Have the endpoint close the socket with ``code``; the first decision stands."""
        if not self.done.is_set():
            self.close_code = code
            self.done.set()

    def close_slow(self) -> None:
        """Its backlog overflowed or stalled: close with 1013 (catch up through the read API)."""
        if not self.done.is_set():
            DROPPED_SLOW.inc()
            self.close(1013)


class Out(NamedTuple):
    """Messages for a socket: their texts (queue path) and their frames, joined (direct path)."""

    texts: list[str]
    frames: bytes


def message(**fields: object) -> Out:
    """One of the gateway's own messages ("hello", "ping", ...)."""
    text = json.dumps(fields)
    return Out([text], text_frame(text.encode()))
