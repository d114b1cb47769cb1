"""Every long-lived resource of a process, opened and closed in one place.

Both the web lifespan and the arq worker's ``on_startup``/``on_shutdown`` use
:func:`open_resources`; the result is handed around as one typed :class:`Resources`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import asyncpg
import httpx
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis

from service.settings import Settings

if TYPE_CHECKING:
    from service.kommo import KommoClient


@dataclasses.dataclass
class Resources:
    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    arq: ArqRedis
    kommo: KommoClient | None = None

    @property
    def queue_name(self) -> str:
        return self.settings.key("arq:queue")

    def require_kommo(self) -> KommoClient:
        if self.kommo is None:
            raise RuntimeError("this process was started without a Kommo client")
        return self.kommo


@contextlib.asynccontextmanager
async def open_resources(
    settings: Settings,
    *,
    kommo: bool = False,
    kommo_transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[Resources]:
    """Open everything; ``kommo_transport`` lets tests route Kommo calls to the simulator."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(
            settings.database_dsn, min_size=1, max_size=10, command_timeout=60
        )
        stack.push_async_callback(pool.close)
        redis: Redis = Redis.from_url(settings.redis_dsn, decode_responses=False)
        stack.push_async_callback(redis.aclose)
        arq = await create_pool(
            RedisSettings.from_dsn(settings.redis_dsn),
            default_queue_name=settings.key("arq:queue"),
        )
        stack.push_async_callback(arq.aclose)
        res = Resources(settings=settings, pool=pool, redis=redis, arq=arq)
        if kommo:
            from service.kommo import open_kommo_client

            client = open_kommo_client(res, transport=kommo_transport)
            res.kommo = await stack.enter_async_context(client)
        yield res
