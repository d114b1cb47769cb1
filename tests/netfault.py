"""Network faults for tests: a TCP proxy between a process and a real server, cut at will.

``async with Proxy(host, port) as proxy`` listens on a free loopback port and relays every
connection to the real server (the local PostgreSQL or Redis). ``await proxy.cut()`` closes the
listener and drops every open connection, both ways, as a crashed or unplugged server would:
the process sees its connections reset and new ones refused. ``await proxy.refuse()`` drops
them too but keeps listening and resets each new connection at once, counting the attempts
(``attempts``), which shows a process retrying. ``await proxy.restore()`` relays again, on the
same port. The proxy runs in the test's event loop, so the test must keep awaiting (which
every test here does) for bytes to flow.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

CHUNK = 65536


class Proxy:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.connections = 0  # relayed since the start
        self.attempts = 0  # reset while refusing
        self.refusing = False
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @classmethod
    def for_url(cls, url: str, default_port: int) -> Proxy:
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or default_port)

    def url(self, url: str) -> str:
        """``url`` pointed at the proxy instead of the real server (user, path, query kept)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def __aenter__(self) -> Proxy:
        await self.restore()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cut()

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def restore(self) -> None:
        """Relay (again, on the same port once it has one)."""
        self.refusing = False
        await self._listen()

    async def refuse(self) -> None:
        """Drop every open connection; reset each new one as it comes (and count it)."""
        self.refusing = True
        await self._listen()
        await self._drop()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Stop listening and drop every open connection at once."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._drop()
        if server is not None:
            await server.wait_closed()

    async def _drop(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        for pipe in list(self._pipes):
            pipe.cancel()
        if self._pipes:
            await asyncio.wait(self._pipes)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None or self.refusing:
            self.attempts += 1
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pipes = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            for w in (writer, up_writer):
                w.transport.abort()
                self._writers.discard(w)
            self._pipes.difference_update(pipes)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
