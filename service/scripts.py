"""Lua scripts on Redis: the one way the service runs them.

A :class:`Script` is created at import time from its source (no connection needed) and called
with any client: ``EVALSHA`` first, the source again after a ``SCRIPT FLUSH`` or a restart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError


class Script:
    """A Lua script run by EVALSHA on any client."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)  # type: ignore[misc]


COMPARE_AND_DELETE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)
"""KEYS: lock; ARGV: token. Release a lock only if we still hold it."""

COMPARE_AND_EXPIRE = Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
)
"""KEYS: lock; ARGV: token, ttl ms. Keep holding a lock only if we still hold it."""
