"""Publication that follows the commit: the ``lead_outbox`` table, published and pruned.

Each write transaction queues its ``lead_update`` messages in ``lead_outbox``
(sql/003_outbox.sql). After the commit the writer publishes them on Redis and deletes them
(:func:`publish`). A writer that dies between commit and publish (or loses Redis) leaves them
queued: :func:`sweep`, run every second by one worker, publishes whatever has waited longer
than ``SWEEP_AFTER_S`` in version order, then deletes it. A message may therefore be published
twice (a writer that published and died before deleting), never lost; consumers tell
duplicates apart by ``version``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from prometheus_client import Counter

from service.resources import Resources

log = logging.getLogger(__name__)

SWEEP_AFTER_S = 2.0
SWEEP_BATCH = 1000
SWEPT = Counter("lead_outbox_swept_total", "lead_update messages published by the outbox sweep")


async def publish(res: Resources, messages: Sequence[tuple[int, str]]) -> None:
    """Publish (version, payload) messages in order, then drop them from the outbox."""
    if not messages:
        return
    channel = res.keys.lead_update
    async with res.redis.pipeline(transaction=False) as pipe:
        for _, payload in messages:
            pipe.publish(channel, payload)
        await pipe.execute()
    await res.pool.execute(
        "DELETE FROM lead_outbox WHERE version = ANY($1::bigint[])", [v for v, _ in messages]
    )


async def sweep(res: Resources, *, older_than: float = SWEEP_AFTER_S) -> int:
    """Publish the messages their writer left behind; return how many."""
    total = 0
    while True:
        rows = await res.pool.fetch(
            """SELECT version, payload FROM lead_outbox
               WHERE created_at < clock_timestamp() - make_interval(secs => $1)
               ORDER BY version LIMIT $2""",
            older_than,
            SWEEP_BATCH,
        )
        if not rows:
            break
        await publish(res, [(r["version"], r["payload"]) for r in rows])
        total += len(rows)
        if len(rows) < SWEEP_BATCH:
            break
    if total:
        SWEPT.inc(total)
        log.warning("outbox: published %d lead_update messages a writer left behind", total)
    return total
