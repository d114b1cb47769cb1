"""Every long-lived resource of a process, opened and closed in one place.

The web lifespan opens :func:`open_resources` (Postgres, Redis, the arq pool); workers and the
commands that call Kommo open :func:`open_sync_resources`, which adds the Kommo client. Both
hand them around as one immutable object.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import httpx
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import Redis

from service.keys import Keys
from service.kommo.client import KommoClient, kommo_client
from service.settings import Settings


@dataclasses.dataclass(frozen=True)
class Resources:
    settings: Settings
    keys: Keys
    pool: asyncpg.Pool
    redis: Redis
    arq: ArqRedis


@dataclasses.dataclass(frozen=True)
class SyncResources(Resources):
    """What the sync engine needs: the resources and a Kommo client that is always there."""

    kommo: KommoClient


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    async with contextlib.AsyncExitStack() as stack:
        keys = Keys.of(settings)
        pool = await asyncpg.create_pool(
            settings.database_dsn, min_size=1, max_size=10, command_timeout=60
        )
        stack.push_async_callback(pool.close)
        redis: Redis = Redis.from_url(settings.redis_dsn, decode_responses=False)
        stack.push_async_callback(redis.aclose)
        arq = await create_pool(
            RedisSettings.from_dsn(settings.redis_dsn), default_queue_name=keys.queue
        )
        stack.push_async_callback(arq.aclose)
        yield Resources(settings, keys, pool, redis, arq)


@contextlib.asynccontextmanager
async def open_sync_resources(
    settings: Settings, *, kommo_transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[SyncResources]:
    """Also the Kommo client; ``kommo_transport`` lets tests route its calls to the simulator."""
    async with (
        open_resources(settings) as res,
        kommo_client(settings, res.redis, res.pool, transport=kommo_transport) as kommo,
    ):
        yield SyncResources(res.settings, res.keys, res.pool, res.redis, res.arq, kommo)
