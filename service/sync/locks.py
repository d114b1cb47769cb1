"""Short-lived Redis locks that stay held while their holder lives.

A lock is taken with ``SET NX`` and a short TTL and released by compare-and-delete, so only its
holder can release or extend it. :func:`held` also refreshes it in the background while the
work runs; the hint drain (:mod:`service.sync.drain`) extends its lock between batches
instead. A process killed with SIGKILL stops refreshing, so its lock is free again within one
TTL: a crash never blocks the others for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from service.scripts import COMPARE_AND_DELETE, COMPARE_AND_EXPIRE

log = logging.getLogger(__name__)


async def acquire(redis: Redis, key: str, ttl_ms: int) -> str | None:
    """Take ``key``: a token when taken, None when someone else holds it."""
    token = secrets.token_hex(16)
    return token if await redis.set(key, token, nx=True, px=ttl_ms) else None


async def extend(redis: Redis, key: str, token: str, ttl_ms: int) -> bool:
    """Keep holding ``key`` for ``ttl_ms`` more; False when it was lost."""
    return bool(await COMPARE_AND_EXPIRE(redis, [key], [token, ttl_ms]))


async def release(redis: Redis, key: str, token: str) -> bool:
    """Release ``key`` if we still hold it."""
    return bool(await COMPARE_AND_DELETE(redis, [key], [token]))


@contextlib.asynccontextmanager
async def held(redis: Redis, key: str, ttl: float = 20.0) -> AsyncIterator[bool]:
    """Yield True while holding ``key`` (refreshed every ttl/3), False if someone else holds it."""
    ttl_ms = int(ttl * 1000)
    token = await acquire(redis, key, ttl_ms)
    if token is None:
        yield False
        return

    async def refresh() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await extend(redis, key, token, ttl_ms):
                    log.warning("lock %s was lost while held", key)
                    return
            except RedisError as exc:
                log.warning("could not refresh lock %s: %s", key, exc)

    task = asyncio.create_task(refresh())
    try:
        yield True
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(RedisError):
            await release(redis, key, token)
