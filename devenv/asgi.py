"""An ASGI app run in process, as a server runs it (tests and benchmarks, never production).

``httpx.ASGITransport`` sends requests straight to an app: it runs no lifespan and carries no
lifespan state. :func:`lifespan` does what uvicorn does: it sends ``lifespan.startup`` with a
state dict, waits for the app to be ready, and yields an ASGI app that hands every request and
socket a copy of that state; leaving the block sends ``lifespan.shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@contextlib.asynccontextmanager
async def lifespan(app: ASGIApp) -> AsyncIterator[ASGIApp]:
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def send(message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            started.set_result(None)
        elif kind == "lifespan.startup.failed" and not started.done():
            started.set_exception(RuntimeError(f"app start-up failed: {message.get('message')}"))

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def run() -> None:  # create_task wants a coroutine; an ASGI app returns an awaitable
        await app(scope, inbox.get, send)

    task = asyncio.create_task(run())
    await inbox.put({"type": "lifespan.startup"})
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        task.result()  # the app's own start-up error
        raise RuntimeError("the app ended its lifespan before it started")
    started.result()

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    try:
        yield with_state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task
