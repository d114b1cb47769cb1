"""The hint queue on real Redis: coalescing, compare-and-remove, delays, lock, drain protocol."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from redis.asyncio import Redis

from service import hints as q
from service.hints import Hints
from service.settings import Settings


async def _keys(redis: Redis, settings: Settings) -> set[str]:
    return {k.decode()[len(settings.redis_prefix) :] for k in await redis.keys(settings.key("*"))}


async def test_push_queues_ids_and_sets_the_flag_once(redis: Redis, settings: Settings) -> None:
    h = Hints(lead_changes={1: 100, 2: 0}, contact_changes={7: 5}, contact_deletes={8})
    assert await q.push(redis, settings, h, now=1000) is True
    assert await q.push(redis, settings, Hints(lead_changes={3: 1})) is False  # flag held
    assert await redis.pttl(settings.key("hints:scheduled")) > 4000
    await q.clear_scheduled(redis, settings)
    assert await q.push(redis, settings, Hints(lead_changes={4: 1})) is True

    assert [i for i, _, _ in await q.claim(redis, settings, "leads")] == [1, 2, 3, 4]
    assert await q.claim(redis, settings, "contacts") == [(7, 1, 5)]
    assert await q.claim(redis, settings, "contact_deletes") == [(8, 1, 1000)]
    assert await q.claim(redis, settings, "lead_deletes") == []
    assert await q.pending_count(redis, settings) == 6


async def test_empty_hints_touch_nothing(redis: Redis, settings: Settings) -> None:
    assert await q.push(redis, settings, Hints(companies=3, ignored=Counter(task=1))) is False
    assert await _keys(redis, settings) == set()


async def test_last_modified_keeps_the_maximum(redis: Redis, settings: Settings) -> None:
    for lm in (100, 50, 0, 200, 150):
        await q.push(redis, settings, Hints(lead_changes={9: lm}))
    [(ident, seq, lm)] = await q.claim(redis, settings, "leads")
    assert (ident, seq, lm) == (9, 5, 200)


async def test_claim_is_oldest_first_and_limited(redis: Redis, settings: Settings) -> None:
    for ident in (5, 3, 9, 1):
        await q.push(redis, settings, Hints(lead_changes={ident: 0}))
    await q.push(redis, settings, Hints(lead_changes={5: 0}))  # re-hint moves 5 to the back
    assert [i for i, _, _ in await q.claim(redis, settings, "leads", limit=3)] == [3, 9, 1]
    assert [i for i, _, _ in await q.claim(redis, settings, "leads")] == [3, 9, 1, 5]


async def test_done_keeps_an_id_re_hinted_during_its_fetch(
    redis: Redis, settings: Settings
) -> None:
    await q.push(redis, settings, Hints(lead_changes={1: 100, 2: 100}))
    claimed = await q.claim(redis, settings, "leads")
    # while the worker fetches, lead 1 changes again
    await q.push(redis, settings, Hints(lead_changes={1: 130}))
    assert await q.done(redis, settings, "leads", claimed) == 1
    again = await q.claim(redis, settings, "leads")
    assert [(i, lm) for i, _, lm in again] == [(1, 130)]
    assert again[0][1] > claimed[0][1]
    assert await q.done(redis, settings, "leads", again) == 1
    assert await q.pending_count(redis, settings) == 0
    assert await _keys(redis, settings) == {"hints:seq", "hints:scheduled"}


async def test_restore_and_delete_flags(redis: Redis, settings: Settings) -> None:
    # delete and restore of one id in one push: both hints, the flag survives
    await q.push(redis, settings, Hints(lead_deletes={1}, lead_restores={1}, lead_changes={1: 7}))
    assert await q.restores(redis, settings, "lead_deletes", [1, 2]) == {1}
    assert await q.restores(redis, settings, "leads", [1]) == {1}
    # a later delete clears a pending restore flag (the later delete wins)
    await q.push(redis, settings, Hints(lead_restores={2}))
    assert [i for i, _, _ in await q.claim(redis, settings, "leads")] == [1, 2]  # restore fetches
    await q.push(redis, settings, Hints(lead_deletes={2}))
    assert await q.restores(redis, settings, "leads", [1, 2]) == {1}
    # the delete kind does not consume the flag; the fetch kind does
    await q.done(redis, settings, "lead_deletes", await q.claim(redis, settings, "lead_deletes"))
    assert await q.restores(redis, settings, "leads", [1]) == {1}
    await q.done(redis, settings, "leads", await q.claim(redis, settings, "leads"))
    assert await q.restores(redis, settings, "leads", [1, 2]) == set()
    assert await q.restores(redis, settings, "contacts", []) == set()
    # contacts have their own flags
    await q.push(redis, settings, Hints(contact_restores={1}))
    assert await q.restores(redis, settings, "contact_deletes", [1]) == {1}
    assert await q.restores(redis, settings, "leads", [1]) == set()
    assert [(i, lm) for i, _, lm in await q.claim(redis, settings, "contacts")] == [(1, 0)]


async def test_retry_later_and_promote_due(redis: Redis, settings: Settings) -> None:
    await q.push(redis, settings, Hints(lead_changes={1: 500, 2: 600}, contact_changes={3: 9}))
    leads = await q.claim(redis, settings, "leads")
    assert await q.retry_later(redis, settings, "leads", leads, 2.0, now=1000) == 2
    assert await q.retry_later(redis, settings, "contacts", [3], 5.0, now=1000) == 1
    assert await q.pending_count(redis, settings) == 0
    assert await q.delayed_count(redis, settings) == 3
    assert await q.promote_due(redis, settings, now=1001) == 0
    assert await q.promote_due(redis, settings, now=1002) == 2
    back = await q.claim(redis, settings, "leads")
    assert [(i, lm) for i, _, lm in back] == [(1, 500), (2, 600)]  # lm kept for the re-check
    assert back[0][1] > leads[0][1]
    assert await q.promote_due(redis, settings, now=1005) == 1
    assert [i for i, _, _ in await q.claim(redis, settings, "contacts")] == [3]
    assert await q.delayed_count(redis, settings) == 0


async def test_retry_later_leaves_a_re_hinted_id_queued(redis: Redis, settings: Settings) -> None:
    await q.push(redis, settings, Hints(lead_changes={1: 1, 2: 1}))
    claimed = await q.claim(redis, settings, "leads")
    await q.push(redis, settings, Hints(lead_changes={1: 2}))
    assert await q.retry_later(redis, settings, "leads", claimed, 10, now=0) == 1
    assert [i for i, _, _ in await q.claim(redis, settings, "leads")] == [1]
    assert await q.retry_later(redis, settings, "leads", [], 10) == 0


async def test_lock(redis: Redis, settings: Settings) -> None:
    token = await q.acquire_lock(redis, settings)
    assert token is not None
    assert await q.acquire_lock(redis, settings) is None
    assert await q.release_lock(redis, settings, "not-mine") is False
    assert await q.extend_lock(redis, settings, "not-mine") is False
    assert await q.extend_lock(redis, settings, token, 60_000) is True
    assert await redis.pttl(settings.key("hints:lock")) > 30_000
    assert await q.release_lock(redis, settings, token) is True
    assert await q.release_lock(redis, settings, token) is False
    assert await q.acquire_lock(redis, settings) is not None


async def test_scripts_reload_after_script_flush(redis: Redis, settings: Settings) -> None:
    await q.push(redis, settings, Hints(lead_changes={1: 1}))
    await redis.script_flush()
    assert await q.claim(redis, settings, "leads") == [(1, 1, 1)]


# --- the drain protocol, simulated with two drainers and concurrent pushers ----------------


class _Sim:
    """Pushers, an arq stand-in (a queue of jobs) and drainers, all using only the primitives."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis, self.settings = redis, settings
        self.jobs: asyncio.Queue[None] = asyncio.Queue()
        self.last_hint: dict[tuple[str, int], int] = {}  # (kind, id) -> highest lm pushed
        self.seen: dict[tuple[str, int], int] = {}  # (kind, id) -> highest lm processed
        self.draining = 0
        self.max_draining = 0
        self.enqueued = 0
        self.batches = 0
        self.clock = 0  # every pushed last_modified is larger than all before it

    async def pusher(self, seed: int, rounds: int) -> None:
        rnd = random.Random(seed)
        for _ in range(rounds):
            h = Hints()
            for _ in range(rnd.randint(1, 5)):
                self.clock += 1
                ident, lm = rnd.randint(1, 40), self.clock
                if rnd.random() < 0.7:
                    h.lead_changes[ident] = lm
                    self.last_hint[("leads", ident)] = lm
                else:
                    h.contact_changes[ident] = lm
                    self.last_hint[("contacts", ident)] = lm
            if await q.push(self.redis, self.settings, h):
                self.enqueued += 1
                self.jobs.put_nowait(None)
            await asyncio.sleep(0)

    async def process(self, kind: q.Kind, items: list[q.Claimed]) -> None:
        self.draining += 1
        self.max_draining = max(self.max_draining, self.draining)
        for _ in range(random.randint(0, 3)):  # the "fetch": let pushers run meanwhile
            await asyncio.sleep(0)
        for ident, _, lm in items:
            self.seen[(kind, ident)] = max(self.seen.get((kind, ident), 0), lm)
        self.draining -= 1
        self.batches += 1

    async def drain(self) -> None:
        """What ``process_hints`` does (see the module docstring of service.hints)."""
        r, s = self.redis, self.settings
        token = await q.acquire_lock(r, s)
        if token is None:
            return
        while True:
            await q.clear_scheduled(r, s)
            while True:
                await q.promote_due(r, s)
                busy = False
                for kind in ("leads", "contacts"):
                    items = await q.claim(r, s, kind, limit=7)
                    if items:
                        busy = True
                        await self.process(kind, items)
                        await q.done(r, s, kind, items)
                        assert await q.extend_lock(r, s, token)
                if not busy:
                    break
            await q.clear_scheduled(r, s)
            await q.release_lock(r, s, token)
            if await q.pending_count(r, s) == 0:
                return
            token = await q.acquire_lock(r, s)
            if token is None:
                return

    async def worker(self) -> None:
        while True:
            await self.jobs.get()
            try:
                await self.drain()
            finally:
                self.jobs.task_done()


async def test_two_drainers_and_re_hints_lose_nothing(redis: Redis, settings: Settings) -> None:
    random.seed(5)
    sim = _Sim(redis, settings)
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

    assert await q.pending_count(redis, settings) == 0  # nothing stranded
    assert sim.seen == sim.last_hint  # every id processed after (with the lm of) its last hint
    assert sim.max_draining == 1  # a single drainer at any time
    assert 10 <= sim.enqueued < 20 * 4 * 30 / 4  # drainers idled and restarted; coalesced
    assert await redis.exists(settings.key("hints:lock")) == 0


async def test_a_hint_after_the_last_claim_is_drained(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drainer's final pending check picks up a push whose own job is slow to start."""
    sim = _Sim(redis, settings)
    release = q.release_lock

    async def release_then_push(r: Redis, s: Settings, token: str) -> bool:
        released = await release(r, s, token)
        if ("leads", 99) not in sim.last_hint:
            sim.last_hint[("leads", 99)] = 1
            # the flag was cleared before the release, so this push asks for a job; we drop
            # that job, as if arq were slow: the drainer itself must not leave id 99 behind
            assert await q.push(r, s, Hints(lead_changes={99: 1}))
        return released

    await q.push(redis, settings, Hints(lead_changes={1: 1}))
    sim.last_hint[("leads", 1)] = 1
    monkeypatch.setattr(q, "release_lock", release_then_push)
    await sim.drain()
    assert sim.seen == {("leads", 1): 1, ("leads", 99): 1}
    assert await q.pending_count(redis, settings) == 0
