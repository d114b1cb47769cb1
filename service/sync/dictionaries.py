"""The slow-changing dictionaries, refreshed in the reconcile's rotation and by the backfill:
pipelines with their statuses, users, loss reasons, custom field definitions and the tag
dictionary of each kind. Each goes through the mirror's one write path, so a renamed stage, user,
loss reason or tag re-shows exactly the leads that show it."""

from __future__ import annotations

import logging

from service.kinds import EntityKind, kind_named
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


async def loss_reasons(mirror: Mirror, priority: Priority = Priority.RECONCILE) -> int:
    found = await mirror.kommo.loss_reasons(priority=priority)
    outcome = await mirror.apply(Batch(loss_reasons=found), "reconcile")
    return len(outcome.changes)


async def custom_fields(
    mirror: Mirror, kind: EntityKind, priority: Priority = Priority.RECONCILE
) -> int:
    """Refresh one kind's field definitions; return how many fields it has."""
    found = await mirror.kommo.custom_fields(kind, priority=priority)
    await mirror.apply(Batch(custom_fields={kind.name: found}), "reconcile")
    return len(found)


async def refresh_stale(mirror: Mirror) -> int:
    """Refresh the dictionaries the mirror's writes found incomplete (a lead in a stage, or with
    a user, loss reason or custom field it has no entry for): one read each, only when needed."""
    stale = await mirror.res.redis.spop(mirror.res.keys.dictionaries_stale, 20)  # type: ignore[misc]
    names = sorted({s.decode() if isinstance(s, bytes) else str(s) for s in stale or []})
    for name in names:
        if name == "pipelines":
            await pipelines(mirror)
        elif name == "users":
            await users(mirror)
        elif name == "loss_reasons":
            await loss_reasons(mirror)
        elif name.startswith("custom_fields:"):
            await custom_fields(mirror, kind_named(name.partition(":")[2]))
    return len(names)
