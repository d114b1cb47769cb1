"""Retention of deleted entities' personal data.

A tombstoned lead or contact keeps its id, ``deleted_at`` and version forever (so a late update
can't bring it back and consumers can still read ``action: "deleted"``), but its personal data
(the raw copy, names, custom fields, phones, tags, links) need not stay: :func:`purge` removes it
from everything deleted before a date. ``kommo-sync purge --deleted-before DATE`` runs it by
hand; with ``PURGE_DELETED_AFTER_DAYS`` set, a worker runs it once a day.
"""

from __future__ import annotations

import logging
import time

from service.kinds import ENTITY_KINDS
from service.resources import Resources
from service.store import entities, reads

log = logging.getLogger(__name__)


async def purge(res: Resources, before: float) -> dict[str, int]:
    """Scrub everything tombstoned before ``before`` (Unix s); return the count per kind."""
    removed = {kind.name: 0 for kind in ENTITY_KINDS}
    async with res.pool.acquire() as conn:
        accounts = sorted(await reads.mirrored_accounts(conn))
    for account in accounts:
        for kind in ENTITY_KINDS:
            async with res.pool.acquire() as conn, conn.transaction():
                removed[kind.name] += len(await entities.scrub_deleted(conn, account, kind, before))
    if any(removed.values()):
        log.info(
            "purged the personal data of %s deleted before %s",
            ", ".join(f"{n} {kind}" for kind, n in removed.items()),
            time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(before)),
        )
    return removed
