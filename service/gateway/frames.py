"""WebSocket frames written straight to a uvicorn connection's transport, bypassing ASGI.

Relaying a message through ASGI costs 10-15 µs per socket (Starlette, uvicorn's ``send``, a task
switch): at 1,000 sockets and 100 messages/s that is more than a core. Instead the hub encodes
each message once (:func:`text_frame`) and hands the same bytes to every socket's
:class:`Writer`, which makes one ``transport.write`` call (several frames joined when the hub
relays a batch): no await, no task, no copy per socket.

Why this is safe: whole frames go in one ``write()`` call, and the control frames uvicorn's protocol
writes on its own (pong, keepalive ping, close) are whole ``write()`` calls too, so bytes never
interleave mid-frame. A frame is written only while the transport is open, and the hub stops
writing before it asks uvicorn to send a close frame. Only uvicorn's sans-I/O protocol (what
``ws="auto"`` picks when the websockets library is installed) on a connection that negotiated
no extension qualifies (:meth:`Writer.attach`); any other socket goes through ASGI as before.

Private internals: the protocol's class, its ``transport``, ``conn`` (websockets' sans-I/O
``ServerProtocol``), ``handshake_complete`` and ``close_sent`` attributes, and Starlette's
``WebSocket._receive`` (uvicorn's bound ``receive``). They are known to work with the versions
pyproject.toml declares, and ``tests/test_frames.py`` fails if the direct path stops being taken
on the locked ones. On any other version where they are missing, this module still imports,
:data:`SANSIO` is None (or :meth:`Writer.attach` finds an attribute missing), one warning is
logged and every socket takes the queue path.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from typing import Any

from starlette.websockets import WebSocket

log = logging.getLogger(__name__)

_TEXT = 0x81  # FIN, opcode 1: a whole text message


def _sansio_protocol() -> type[Any] | None:
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:  # uvicorn before 0.35, or its internals moved
        return None
    return WebSocketsSansIOProtocol


SANSIO: type[Any] | None = _sansio_protocol()
"""uvicorn's sans-I/O WebSocket protocol (what the server must run for the direct path)."""

_warned: set[str] = set()  # each reason to fall back is logged once per process


def fall_back(reason: str) -> None:
    """Log, once per process and reason, that sockets take the queue path."""
    if reason not in _warned:
        _warned.add(reason)
        log.warning("direct WebSocket frames unavailable (%s): sockets take the queue path", reason)


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented server-to-client text frame (RFC 6455 §5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((_TEXT, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", _TEXT, 126, size) + payload
    return struct.pack("!BBQ", _TEXT, 127, size) + payload


class Writer:
    """Frames for one client, written to its transport while at most ``limit`` bytes wait there.

    The transport's buffer is the socket's only queue: a peer that reads slower than the hub
    writes lets it grow past ``limit`` (:meth:`write` says no), and a peer that stops reading
    leaves it unflushed (:meth:`stalled_for` counts the seconds).
    """

    def __init__(self, transport: asyncio.WriteTransport, limit: int) -> None:
        self.transport, self.limit = transport, limit
        self.written = 0  # bytes handed to the transport, ever
        self._flushed, self._since = -1, 0.0  # flushed bytes at the last check, and since when

    @classmethod
    def attach(cls, ws: WebSocket, limit: int) -> Writer | None:
        """A writer for an accepted socket served by uvicorn's sans-I/O protocol without
        extensions (permessage-deflate would need every frame compressed); otherwise None."""
        if SANSIO is None:
            fall_back("uvicorn has no websockets_sansio_impl.WebSocketsSansIOProtocol")
            return None
        protocol: Any = getattr(getattr(ws, "_receive", None), "__self__", None)  # uvicorn's
        if type(protocol) is not SANSIO:  # another server, or a subclass that writes frames itself
            return None
        try:
            transport = protocol.transport
            usable = (
                protocol.handshake_complete
                and not protocol.close_sent
                and not protocol.conn.extensions
            )
        except AttributeError as exc:  # another uvicorn or websockets: its internals changed
            fall_back(f"uvicorn's protocol has no attribute {exc.name!r}")
            return None
        if not usable or transport is None or transport.is_closing():
            return None
        return cls(transport, limit)

    def write(self, frame: bytes) -> bool:
        """Write one whole frame; False, writing nothing, when more than ``limit`` bytes wait.
        A closing transport (the peer or uvicorn is closing it) swallows the frame."""
        transport = self.transport
        if transport.is_closing():
            return True
        if transport.get_write_buffer_size() > self.limit:
            return False
        transport.write(frame)
        self.written += len(frame)
        return True

    def stalled_for(self, now: float) -> float:
        """Seconds the transport has held unsent bytes without flushing any (0: it is keeping up).
        Call it periodically: progress between two calls resets the count."""
        flushed = self.written - self.transport.get_write_buffer_size()
        if flushed != self._flushed or flushed == self.written:
            self._flushed, self._since = flushed, now
        return now - self._since

    def abort(self) -> None:
        """Drop the connection and whatever it still buffers (a peer that never reads again)."""
        self.transport.abort()
