"""The slow-changing dictionaries, refreshed in the reconcile's rotation and by the backfill:
pipelines with their statuses, users, and the tag dictionary of each kind. Each goes through
the mirror's one write path, so a renamed tag re-shows the leads that carry it."""

from __future__ import annotations

import logging

from service.kinds import EntityKind
from service.kommo.budget import Priority
from service.kommo.errors import KommoBadRequest
from service.sync.mirror import Batch, Mirror

log = logging.getLogger(__name__)


async def pipelines(mirror: Mirror, priority: Priority = Priority.RECONCILE) -> int:
    found = await mirror.kommo.pipelines(priority=priority)
    await mirror.apply(Batch(pipelines=found), "reconcile")
    return 0


async def users(mirror: Mirror, priority: Priority = Priority.RECONCILE) -> int:
    try:
        found = await mirror.kommo.users(priority=priority)
    except KommoBadRequest as exc:  # the users list needs admin rights
        log.warning("users not mirrored: %s", exc)
        return 0
    await mirror.apply(Batch(users=found), "reconcile")
    return 0


async def tags(mirror: Mirror, kind: EntityKind, priority: Priority = Priority.RECONCILE) -> int:
    """Refresh one tag dictionary; return the leads re-shown because a tag was renamed."""
    found = await mirror.kommo.tags(kind, priority=priority)
    outcome = await mirror.apply(Batch(tags={kind.name: found}), "reconcile")
    return len(outcome.changes)
