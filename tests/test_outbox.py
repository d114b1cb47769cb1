"""Publication follows the commit durably, and versions become visible in order.

A writer that commits and dies before publishing leaves its messages in ``lead_outbox``; the
sweep publishes them. Writers of two accounts at once: the later version waits for the earlier
one's commit, so a reader never sees version N+1 before N.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from service.kinds import LEADS
from service.kommo import parse
from service.resources import Resources, open_resources
from service.settings import Settings
from service.store import entities, leadview, links, reads
from service.sync import outbox

A, B = 31000001, 31000002
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "kommo" / "api"


def lead() -> dict[str, Any]:
    return dict(json.loads((FIXTURE / "lead_24000101_with_contacts.json").read_text()))


async def write_lead(conn: Any, account: int, lead_id: int, name: str) -> list[int]:
    """One write transaction's work for one lead, inside the caller's transaction."""
    obj = lead()
    obj.update(id=lead_id, name=name, account_id=account)
    await leadview.lock_account(conn, account)
    rows = await entities.upsert(conn, account, LEADS, parse.records(LEADS, [obj]))
    await links.replace_all(conn, account, LEADS, rows, "PE")
    changes = await leadview.refresh_leads(conn, account, [r.id for r in rows], "webhook")
    return [c.version for c in changes]


@pytest.fixture
async def res(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> AsyncIterator[Resources]:
    async with open_resources(settings) as opened:
        yield opened


async def test_a_writer_that_dies_after_commit_loses_no_message(res: Resources) -> None:
    sub = res.redis.pubsub()
    await sub.subscribe(res.keys.lead_update)
    async with res.pool.acquire() as conn, conn.transaction():
        (version,) = await write_lead(conn, A, 24000101, "committed, never published")
    # ... and here the writer died: nothing was published, the message waits in the outbox
    assert await res.pool.fetchval("SELECT count(*) FROM lead_outbox") == 1
    assert await outbox.sweep(res) == 0  # too young: its writer may still be publishing
    assert await outbox.sweep(res, older_than=0) == 1
    message = await _next_message(sub)
    assert json.loads(message)["data"]["version"] == version
    assert json.loads(message)["data"]["lead"]["name"] == "committed, never published"
    assert await res.pool.fetchval("SELECT count(*) FROM lead_outbox") == 0  # pruned
    await sub.aclose()


async def test_a_writer_that_publishes_prunes_its_outbox(res: Resources) -> None:
    async with res.pool.acquire() as conn, conn.transaction():
        versions = await write_lead(conn, A, 24000101, "published at once")
    payload = await res.pool.fetchval("SELECT payload FROM lead_outbox")
    await outbox.publish(res, [(versions[0], payload)])
    assert await res.pool.fetchval("SELECT count(*) FROM lead_outbox") == 0


async def test_versions_become_visible_in_order_across_accounts(res: Resources) -> None:
    """B's writer takes its version while A's transaction, which took a smaller one, is still
    open: B waits for A's commit, so a reader sees A's version first, then B's."""
    first = await res.pool.acquire()
    tx = first.transaction()
    await tx.start()
    try:
        (a_version,) = await write_lead(first, A, 24000101, "A, slow to commit")

        async def writer_b() -> list[int]:
            async with res.pool.acquire() as conn, conn.transaction():
                return await write_lead(conn, B, 24000201, "B, fast")

        b_task = asyncio.create_task(writer_b())
        async with res.pool.acquire() as reader:  # B is parked on the version lock
            await _until_waiting_on_a_lock(reader)
            assert await reads.changes_after(reader, 0, 10, None) == ([], 0)
        await tx.commit()
    finally:
        await res.pool.release(first)
    (b_version,) = await asyncio.wait_for(b_task, 10)
    assert b_version > a_version
    async with res.pool.acquire() as reader:
        items, last = await reads.changes_after(reader, 0, 10, None)
    assert [json.loads(i)["version"] for i in items] == [a_version, b_version]
    assert last == b_version


async def _until_waiting_on_a_lock(conn: Any) -> None:
    async with asyncio.timeout(10):
        while not await conn.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            await asyncio.sleep(0.01)


async def _next_message(sub: Any) -> str:
    async with asyncio.timeout(5):
        while True:
            message = await sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                return str(message["data"].decode())
