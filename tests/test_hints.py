"""The hint queue on real Redis: coalescing, compare-and-remove, delays, lock, drain protocol."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from service.keys import Keys
from service.sync import hints as q
from service.sync.drain import Drain
from service.sync.hints import Hints
from service.sync.mirror import Batch, Mirror


async def _keys(redis: Redis, keys: Keys) -> set[str]:
    return {k.decode()[len(keys.prefix) :] for k in await redis.keys(keys.matching())}


async def test_push_queues_ids_and_sets_the_flag_once(redis: Redis, keys: Keys) -> None:
    h = Hints(changes={"leads": {1: 100, 2: 0}, "contacts": {7: 5}}, deletes={"contacts": {8}})
    assert (await q.push(redis, keys, h, now=1000)).scheduled is True
    assert (await q.push(redis, keys, Hints(changes={"leads": {3: 1}}))).scheduled is False  # held
    assert await redis.pttl(keys.hints_scheduled) > 4000
    await q.clear_scheduled(redis, keys)
    assert (await q.push(redis, keys, Hints(changes={"leads": {4: 1}}))).scheduled is True

    assert [i for i, _, _ in await q.claim(redis, keys, "leads")] == [1, 2, 3, 4]
    assert await q.claim(redis, keys, "contacts") == [(7, 1, 5)]
    assert await q.claim(redis, keys, "contact_deletes") == [(8, 1, 1000)]
    assert await q.claim(redis, keys, "lead_deletes") == []
    assert await q.pending_count(redis, keys) == 6


async def test_empty_hints_touch_nothing(redis: Redis, keys: Keys) -> None:
    assert (
        await q.push(redis, keys, Hints(unsorted=3, ignored=Counter(task=1)))
    ).scheduled is False
    assert await _keys(redis, keys) == set()


async def test_last_modified_keeps_the_maximum(redis: Redis, keys: Keys) -> None:
    for lm in (100, 50, 0, 200, 150):
        await q.push(redis, keys, Hints(changes={"leads": {9: lm}}))
    [(ident, seq, lm)] = await q.claim(redis, keys, "leads")
    assert (ident, seq, lm) == (9, 5, 200)


async def test_claim_is_oldest_first_and_limited(redis: Redis, keys: Keys) -> None:
    for ident in (5, 3, 9, 1):
        await q.push(redis, keys, Hints(changes={"leads": {ident: 0}}))
    await q.push(redis, keys, Hints(changes={"leads": {5: 0}}))  # re-hint moves 5 to the back
    assert [i for i, _, _ in await q.claim(redis, keys, "leads", limit=3)] == [3, 9, 1]
    assert [i for i, _, _ in await q.claim(redis, keys, "leads")] == [3, 9, 1, 5]


async def test_done_keeps_an_id_re_hinted_during_its_fetch(redis: Redis, keys: Keys) -> None:
    await q.push(redis, keys, Hints(changes={"leads": {1: 100, 2: 100}}))
    claimed = await q.claim(redis, keys, "leads")
    # while the worker fetches, lead 1 changes again
    await q.push(redis, keys, Hints(changes={"leads": {1: 130}}))
    assert await q.done(redis, keys, "leads", claimed) == 1
    again = await q.claim(redis, keys, "leads")
    assert [(i, lm) for i, _, lm in again] == [(1, 130)]
    assert again[0][1] > claimed[0][1]
    assert await q.done(redis, keys, "leads", again) == 1
    assert await q.pending_count(redis, keys) == 0
    assert await _keys(redis, keys) == {"hints:seq", "hints:scheduled"}


async def test_restore_and_delete_flags(redis: Redis, keys: Keys) -> None:
    # delete and restore of one id in one push: both hints, the flag survives
    await q.push(
        redis,
        keys,
        Hints(changes={"leads": {1: 7}}, deletes={"leads": {1}}, restores={"leads": {1}}),
    )
    assert await q.restores(redis, keys, "lead_deletes", [1, 2]) == {1}
    assert await q.restores(redis, keys, "leads", [1]) == {1}
    # a later delete clears a pending restore flag (the later delete wins)
    await q.push(redis, keys, Hints(restores={"leads": {2}}))
    assert [i for i, _, _ in await q.claim(redis, keys, "leads")] == [1, 2]  # restore fetches
    await q.push(redis, keys, Hints(deletes={"leads": {2}}))
    assert await q.restores(redis, keys, "leads", [1, 2]) == {1}
    # the delete kind does not consume the flag; the fetch kind does
    await q.done(redis, keys, "lead_deletes", await q.claim(redis, keys, "lead_deletes"))
    assert await q.restores(redis, keys, "leads", [1]) == {1}
    await q.done(redis, keys, "leads", await q.claim(redis, keys, "leads"))
    assert await q.restores(redis, keys, "leads", [1, 2]) == set()
    assert await q.restores(redis, keys, "contacts", []) == set()
    # contacts have their own flags
    await q.push(redis, keys, Hints(restores={"contacts": {1}}))
    assert await q.restores(redis, keys, "contact_deletes", [1]) == {1}
    assert await q.restores(redis, keys, "leads", [1]) == set()
    assert [(i, lm) for i, _, lm in await q.claim(redis, keys, "contacts")] == [(1, 0)]


async def test_retry_later_and_promote_due(redis: Redis, keys: Keys) -> None:
    await q.push(redis, keys, Hints(changes={"leads": {1: 500, 2: 600}, "contacts": {3: 9}}))
    leads = await q.claim(redis, keys, "leads")
    assert await q.retry_later(redis, keys, "leads", leads, 2.0, now=1000) == 2
    assert await q.retry_later(redis, keys, "contacts", [3], 5.0, now=1000) == 1
    assert await q.pending_count(redis, keys) == 0
    assert await q.delayed_count(redis, keys) == 3
    assert await q.promote_due(redis, keys, now=1001) == 0
    assert await q.promote_due(redis, keys, now=1002) == 2
    back = await q.claim(redis, keys, "leads")
    assert [(i, lm) for i, _, lm in back] == [(1, 500), (2, 600)]  # lm kept for the re-check
    assert back[0][1] > leads[0][1]
    assert await q.promote_due(redis, keys, now=1005) == 1
    assert [i for i, _, _ in await q.claim(redis, keys, "contacts")] == [3]
    assert await q.delayed_count(redis, keys) == 0


async def test_retry_later_leaves_a_re_hinted_id_queued(redis: Redis, keys: Keys) -> None:
    await q.push(redis, keys, Hints(changes={"leads": {1: 1, 2: 1}}))
    claimed = await q.claim(redis, keys, "leads")
    await q.push(redis, keys, Hints(changes={"leads": {1: 2}}))
    assert await q.retry_later(redis, keys, "leads", claimed, 10, now=0) == 1
    assert [i for i, _, _ in await q.claim(redis, keys, "leads")] == [1]
    assert await q.retry_later(redis, keys, "leads", [], 10) == 0


async def test_lock(redis: Redis, keys: Keys) -> None:
    token = await q.acquire_lock(redis, keys)
    assert token is not None
    assert await q.acquire_lock(redis, keys) is None
    assert await q.release_lock(redis, keys, "not-mine") is False
    assert await q.extend_lock(redis, keys, "not-mine") is False
    assert await q.extend_lock(redis, keys, token, 60_000) is True
    assert await redis.pttl(keys.hints_lock) > 30_000
    assert await q.release_lock(redis, keys, token) is True
    assert await q.release_lock(redis, keys, token) is False
    assert await q.acquire_lock(redis, keys) is not None


async def test_scripts_reload_after_script_flush(redis: Redis, keys: Keys) -> None:
    await q.push(redis, keys, Hints(changes={"leads": {1: 1}}))
    await redis.script_flush()
    assert await q.claim(redis, keys, "leads") == [(1, 1, 1)]


# --- the drain protocol: the real Drain, two drainers and concurrent pushers -----------------


class _Kommo:
    @contextlib.asynccontextmanager
    async def admitted(self, priority: object) -> AsyncIterator[None]:
        yield


class _Mirror:
    """What the drain writes to, standing in for Kommo and Postgres: a fetch returns each id at
    the newest last_modified pushed so far (Kommo has the change), after letting others run."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.res = SimpleNamespace(redis=redis, keys=keys)
        self.kommo = _Kommo()
        self.jobs: asyncio.Queue[None] = asyncio.Queue()
        self.last_hint: dict[tuple[str, int], int] = {}  # (kind, id) -> highest lm pushed
        self.seen: dict[tuple[str, int], int] = {}  # (kind, id) -> highest lm fetched
        self.draining = 0
        self.max_draining = 0
        self.enqueued = 0
        self.clock = 0  # every pushed last_modified is larger than all before it

    async def pusher(self, seed: int, rounds: int) -> None:
        rnd = random.Random(seed)
        for _ in range(rounds):
            h = Hints()
            for _ in range(rnd.randint(1, 5)):
                self.clock += 1
                ident, lm = rnd.randint(1, 40), self.clock
                kind = "leads" if rnd.random() < 0.7 else "contacts"
                h.changes[kind][ident] = lm
                self.last_hint[(kind, ident)] = lm
            if (await q.push(self.res.redis, self.res.keys, h)).scheduled:
                self.enqueued += 1
                self.jobs.put_nowait(None)
            await asyncio.sleep(0)

    async def fetch_and_apply(self, ids: dict[str, set[int]], **kw: Any) -> tuple[None, Any]:
        self.draining += 1
        self.max_draining = max(self.max_draining, self.draining)
        for _ in range(random.randint(0, 3)):  # the "fetch": let pushers run meanwhile
            await asyncio.sleep(0)
        stamps: dict[str, dict[int, int]] = {}
        for kind, wanted in ids.items():
            for ident in wanted:
                now = self.last_hint.get((kind, ident), 0)
                stamps.setdefault(kind, {})[ident] = now
                self.seen[(kind, ident)] = max(self.seen.get((kind, ident), 0), now)
        self.draining -= 1
        return None, stamps

    async def apply(self, batch: Batch, source: str) -> None:
        raise AssertionError("nothing was deleted")

    def drain(self) -> Drain:
        return Drain(cast(Mirror, self), limit=7)

    async def worker(self) -> None:
        while True:
            await self.jobs.get()
            try:
                await self.drain().run()
            finally:
                self.jobs.task_done()


async def test_two_drainers_and_re_hints_lose_nothing(redis: Redis, keys: Keys) -> None:
    random.seed(5)
    sim = _Mirror(redis, keys)
    workers = [asyncio.create_task(sim.worker()) for _ in range(2)]
    try:
        async with asyncio.timeout(30):
            for burst in range(20):  # bursts; every other one waits until the drainers idle
                await asyncio.gather(*(sim.pusher(burst * 10 + n, 30) for n in range(4)))
                if burst % 2:
                    await sim.jobs.join()
            await sim.jobs.join()
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    assert await q.pending_count(redis, keys) == 0  # nothing stranded
    assert await q.delayed_count(redis, keys) == 0
    assert sim.seen == sim.last_hint  # every id fetched after (with the lm of) its last hint
    assert sim.max_draining == 1  # a single drainer at any time
    assert 10 <= sim.enqueued < 20 * 4 * 30 / 4  # drainers idled and restarted; coalesced
    assert await redis.exists(keys.hints_lock) == 0


async def test_a_hint_after_the_last_claim_is_drained(
    redis: Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drainer's final pending check picks up a push whose own job is slow to start."""
    sim = _Mirror(redis, keys)
    release = q.release_lock

    async def release_then_push(r: Redis, k: Keys, token: str) -> bool:
        released = await release(r, k, token)
        if ("leads", 99) not in sim.last_hint:
            sim.last_hint[("leads", 99)] = 1
            # the flag was cleared before the release, so this push asks for a job; we drop
            # that job, as if arq were slow: the drainer itself must not leave id 99 behind
            assert (await q.push(r, k, Hints(changes={"leads": {99: 1}}))).scheduled
        return released

    await q.push(redis, keys, Hints(changes={"leads": {1: 1}}))
    sim.last_hint[("leads", 1)] = 1
    monkeypatch.setattr(q, "release_lock", release_then_push)
    assert await sim.drain().run() == 2
    assert sim.seen == {("leads", 1): 1, ("leads", 99): 1}
