"""A time cursor read for one pass of a reconcile stream or the events feed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from service.store import cursors
from service.sync.mirror import Mirror

OVERLAP = 10  # seconds re-read behind each cursor: same-second edits and lagging lists
SETTLE = 60  # seconds a cursor must stand still before its overlap is no longer re-read


@dataclass
class Window:
    """A time cursor read for one pass: where to start, and what to save afterwards.

    The read starts ``overlap`` seconds behind the cursor (same-second edits, lagging lists);
    once the cursor has not moved for ``SETTLE`` seconds the overlap has been re-read many
    times over, so it starts just past the cursor: an idle stream costs a 204, not the same
    rows again and again (which Kommo counts against a client).
    """

    cursor: int
    state: dict[str, Any]
    now: float = field(default_factory=time.time)

    @property
    def moved_at(self) -> float:
        return float(self.state.get("moved_at") or self.now)

    def start(self, overlap: int) -> int:
        return (
            self.cursor + 1 if self.now - self.moved_at > SETTLE else max(0, self.cursor - overlap)
        )

    def saved(self, newest: int, **extra: Any) -> dict[str, Any]:
        return {**extra, "moved_at": self.now if newest != self.cursor else self.moved_at}


async def load_window(mirror: Mirror, name: str) -> Window | None:
    async with mirror.res.pool.acquire() as conn:
        found = await cursors.get_cursor_state(conn, mirror.account_id, name)
    return None if found is None else Window(*found)
