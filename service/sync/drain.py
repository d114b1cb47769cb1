"""The hint drain: what the ``process_hints`` job does with the queue of :mod:`service.sync.hints`.

One drainer at a time (a lock); claim up to 250 ids of every queue, fetch and write them in one
batch, settle them; again until nothing is claimed. The protocol, and why nothing is stranded::

    token = acquire_lock()                 # can't? exit: the holder loops and sees our hints
    while token:
        clear_scheduled()                  # pushes from now on enqueue a follow-up job
        while drain_once() and extend_lock(token): promote_due()
        clear_scheduled(); release_lock(token)
        if pending_count() == 0: break
        token = acquire_lock()             # a hint arrived after the last claim (or another
                                           # job already holds the lock: it will see it)

A push writes its ids and tries ``SET NX`` on the scheduled flag atomically. If it ran before
the drainer's final ``clear_scheduled``, the drainer's ``pending_count`` (which comes after) sees
its ids and loops; if it ran after, its ``SET NX`` succeeds and it enqueues a new job. A crashed
drainer leaves its lock to expire (10 s) and the flag to expire (5 s); the reconcile tick calls
``promote_due`` and ``ensure_scheduled``, so queued ids and due retries never wait for the next
webhook.

Deletes are verified: a delete webhook is believed only after a by-id read no longer finds the
id (webhooks arrive late and out of order, so a delete can land after the restore that undid
it). A change whose read is older than its webhook (Kommo's reads lag) is retried shortly, a
few times (``hints:lag_tries:*``), then left to the reconcile. A change Kommo does not return
at all is not a lagging read: an id the mirror holds gets one short retry (the read lag is
about a second), an id the mirror never saw is given up at once (ids nobody has, a flood of
them included, cost one read per 250); the reconcile reads whatever really changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from prometheus_client import Counter

from service.kinds import ENTITY_KINDS
from service.kommo.budget import Priority
from service.sync import hints
from service.sync.hints import Claimed
from service.sync.mirror import Batch, Mirror

log = logging.getLogger(__name__)

LAG_RETRY_S = 1.0
LAG_MAX_TRIES = 5
MISSING_RETRY_S = 2.0
MISSING_MAX_TRIES = 1
HINT_FETCHES = Counter("hint_ids_processed_total", "webhook hint ids processed", ["kind"])
HINTS_NOT_FOUND = Counter(
    "hint_ids_not_found_total",
    "webhook hint ids Kommo did not return, given up",
    ["kind", "seen"],  # seen: the mirror holds the id (it had a retry) or not (given up at once)
)


class Drain:
    """The drainer of one mirror; ``limit`` ids of each queue per batch."""

    def __init__(self, mirror: Mirror, *, limit: int = 250) -> None:
        self.mirror, self.limit = mirror, limit
        self.redis, self.keys = mirror.res.redis, mirror.res.keys

    async def run(self) -> int:
        """Drain while this caller holds the drainer's lock; return the ids processed."""
        redis, keys = self.redis, self.keys
        token = await hints.acquire_lock(redis, keys)
        processed = 0
        while token is not None:
            try:
                await hints.clear_scheduled(redis, keys)
                while True:
                    await hints.promote_due(redis, keys)
                    count = await self.once()
                    processed += count
                    if not count or not await hints.extend_lock(redis, keys, token):
                        break
                await hints.clear_scheduled(redis, keys)
            finally:
                await hints.release_lock(redis, keys, token)
            if await hints.pending_count(redis, keys) == 0:
                break
            token = await hints.acquire_lock(redis, keys)
        return processed

    async def once(self) -> int:
        """Claim up to ``limit`` ids of each queue, fetch and write them; how many were claimed.

        The budget slot is taken before the claim: whatever arrives during the wait rides along.
        """
        if await hints.pending_count(self.redis, self.keys) == 0:
            return 0
        async with self.mirror.kommo.admitted(Priority.WEBHOOK):
            return await self._claimed()

    async def _claimed(self) -> int:
        redis, keys, mirror, limit = self.redis, self.keys, self.mirror, self.limit
        changes = {k.name: await hints.claim(redis, keys, k.name, limit) for k in ENTITY_KINDS}
        deletes = {
            k.name: await hints.claim(redis, keys, k.deletes_queue, limit) for k in ENTITY_KINDS
        }
        if not any((*changes.values(), *deletes.values())):
            return 0
        batch = Batch()
        for k in ENTITY_KINDS:
            batch.restored[k.name] = await hints.restores(
                redis, keys, k.name, [c[0] for c in changes[k.name]]
            )
        ids = {k.name: {c[0] for c in (*changes[k.name], *deletes[k.name])} for k in ENTITY_KINDS}
        _, seen = await mirror.fetch_and_apply(
            ids, priority=Priority.WEBHOOK, source="webhook", batch=batch
        )
        gone: dict[str, list[Claimed]] = {}
        again: dict[str, set[int]] = {}  # a restore Kommo can no longer read was deleted again
        for k in ENTITY_KINDS:
            found = seen.get(k.name, {})
            gone[k.name] = [c for c in deletes[k.name] if c[0] not in found]
            again[k.name] = {i for i in batch.restored[k.name] if i not in found}
        if any((*gone.values(), *again.values())):
            when = max([float(c[2]) for g in gone.values() for c in g] or [time.time()])
            await mirror.apply(
                Batch(
                    deletes={k: {c[0] for c in gone[k]} | again[k] for k in gone},
                    deleted_at=when,
                ),
                "webhook",
            )
        for k in ENTITY_KINDS:
            found = seen.get(k.name, {})
            claimed = changes[k.name]
            await _settle(
                mirror,
                k.name,
                claimed,
                lagging=[c for c in claimed if c[2] and c[0] in found and found[c[0]] < c[2]],
                missing=[c for c in claimed if c[2] and c[0] not in found],
            )
            await _settle(
                mirror,
                k.deletes_queue,
                deletes[k.name],
                lagging=[c for c in deletes[k.name] if c[0] in found],  # still readable
            )
        return sum(map(len, changes.values())) + sum(map(len, deletes.values()))


async def _settle(
    mirror: Mirror,
    queue: str,
    items: Sequence[Claimed],
    *,
    lagging: Sequence[Claimed] = (),
    missing: Sequence[Claimed] = (),
) -> None:
    """Done with the claimed ids, except those worth another read (retried shortly): lagging
    reads a few times, and ids Kommo did not return once if the mirror holds them."""
    redis, keys = mirror.res.redis, mirror.res.keys
    held = await mirror.known(hints.kind_of(queue), [c[0] for c in missing]) if missing else set()
    missed = [c for c in missing if c[0] in held]
    again = {c[0] for c in (*lagging, *missed)}
    settled = [c[0] for c in items if c[0] not in again]
    if settled:  # a later lag of the same id starts counting afresh
        await redis.hdel(keys.hints_lag_tries(queue), *map(str, settled))  # type: ignore[misc]
    late = await _still_worth_retrying(mirror, queue, lagging, LAG_MAX_TRIES, "older than")
    gone = await _still_worth_retrying(mirror, queue, missed, MISSING_MAX_TRIES, "not found by")
    await hints.retry_later(redis, keys, queue, [c for c in lagging if c[0] in late], LAG_RETRY_S)
    await hints.retry_later(
        redis, keys, queue, [c for c in missed if c[0] in gone], MISSING_RETRY_S
    )
    await hints.done(redis, keys, queue, [c for c in items if c[0] not in late | gone])
    HINT_FETCHES.labels(queue).inc(len(items))
    if missing:
        HINTS_NOT_FOUND.labels(queue, "no").inc(len(missing) - len(missed))
        HINTS_NOT_FOUND.labels(queue, "yes").inc(len(missed) - len(gone))


async def _still_worth_retrying(
    mirror: Mirror, queue: str, items: Sequence[Claimed], most: int, what: str
) -> set[int]:
    """Those of ``items`` read fewer than ``most`` times again (and count this try); the rest
    are left to the reconcile."""
    if not items:
        return set()
    ids = [c[0] for c in items]
    key = mirror.res.keys.hints_lag_tries(queue)
    async with mirror.res.redis.pipeline(transaction=False) as pipe:
        for ident in ids:
            pipe.hincrby(key, str(ident), 1)
        pipe.expire(key, 600)
        tries = (await pipe.execute())[:-1]
    keep = {i for i, n in zip(ids, tries, strict=True) if int(n) <= most}
    if len(keep) < len(ids):
        log.warning(
            "%d %s still %s their webhook after %d retries; reconcile will catch them",
            len(ids) - len(keep),
            queue,
            what,
            most,
        )
    return keep
