"""The background imports of one account, in order: the backfill, the quiet upgrade of a mirror
an earlier release made (:data:`service.sync.backfill.UPGRADE`), then the stage history. One
worker runs them (under the backfill lock); the reconcile waits only for the first."""

from __future__ import annotations

import logging

from service.sync.backfill import Backfill
from service.sync.history import HistoryImport
from service.sync.mirror import Mirror

log = logging.getLogger(__name__)


class Imports:
    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror
        self._done = False  # once everything is imported, asking again costs nothing

    async def pending(self) -> list[str]:
        """The imports still to run, in order: ``backfill``, ``upgrade``, ``history``."""
        if self._done:
            return []
        found = []
        if await Backfill(self.mirror).needed():
            found.append("backfill")
        elif await Backfill.upgrade(self.mirror).needed():
            found.append("upgrade")
        if await HistoryImport(self.mirror).needed():
            found.append("history")
        self._done = not found
        return found

    async def run(self, *, restart: bool = False) -> None:
        await Backfill(self.mirror).run(restart=restart)
        upgrade = Backfill.upgrade(self.mirror)
        if await upgrade.needed():
            log.info(
                "upgrading the mirror in the background: companies, custom field values, "
                "e-mails, loss reasons (no lead_update messages for what only gains fields)"
            )
            await upgrade.run()
        await HistoryImport(self.mirror).run()
        self._done = False  # a restart (or a new kind) may need them again
