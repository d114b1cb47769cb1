"""Which accounts' messages this deployment's hub relays.

Redis pub/sub ignores the logical database, so deployments that share a Redis server can hear
each other's channels; the channel name already carries the prefix and the database number
(:mod:`service.keys`), and the hub also relays only messages of accounts this deployment
mirrors: ``KOMMO_ACCOUNT_ID`` when set, and every account with cursors in its own Postgres. A
message of an account it has not seen before makes it look again (an account's first import
writes its cursor before any lead), at most every ``recheck_s`` seconds, so a new account's
first messages are not lost and another deployment's flood costs a few queries a second.
"""

from __future__ import annotations

import time

import asyncpg
from prometheus_client import Counter

from service.store import reads

FOREIGN = Counter(
    "ws_foreign_messages_dropped_total", "lead_update messages of accounts this deployment lacks"
)


class Accounts:
    def __init__(self, configured: int | None, *, recheck_s: float = 0.25) -> None:
        self.known: set[int] = set() if configured is None else {configured}
        self.recheck_s = recheck_s
        self._checked = float("-inf")

    async def load(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn:
            self.known |= await reads.mirrored_accounts(conn)
        self._checked = time.monotonic()

    async def ours(self, pool: asyncpg.Pool, account_ids: set[int]) -> set[int]:
        """Those of ``account_ids`` this deployment mirrors (looking new ones up)."""
        unknown = account_ids - self.known
        if unknown and time.monotonic() - self._checked > self.recheck_s:
            await self.load(pool)
        return account_ids & self.known
