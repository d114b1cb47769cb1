"""Short-lived Redis locks that stay held while their holder lives.

A lock is taken with ``SET NX`` and a short TTL, refreshed in the background while the work
runs, and released by compare-and-delete. A process killed with SIGKILL stops refreshing, so
its lock is free again within one TTL: a crash never blocks the others for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@contextlib.asynccontextmanager
async def held(redis: Redis, key: str, ttl: float = 20.0) -> AsyncIterator[bool]:
    """Yield True while holding ``key`` (refreshed every ttl/3), False if someone else holds it."""
    token = secrets.token_hex(12)
    ttl_ms = int(ttl * 1000)
    if not await redis.set(key, token, nx=True, px=ttl_ms):
        yield False
        return

    async def refresh() -> None:
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                if not await redis.eval(_REFRESH, 1, key, token, str(ttl_ms)):  # type: ignore[misc]
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
            await redis.eval(_RELEASE, 1, key, token)  # type: ignore[misc]
