import asyncpg
from redis.asyncio import Redis

from service.settings import Settings


async def test_database_is_migrated_and_empty(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        names = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        assert "001_schema.sql" in names
        assert await conn.fetchval("SELECT count(*) FROM leads") == 0


async def test_redis_namespace_starts_empty(redis: Redis, settings: Settings) -> None:
    assert settings.redis_prefix.startswith("test:")
    await redis.set((settings.redis_prefix + "probe"), b"1")
    keys = [k async for k in redis.scan_iter(match=settings.redis_prefix + "*")]
    assert keys == [(settings.redis_prefix + "probe").encode()]
