"""The mirror's SQL, and nothing else: plain functions that take a connection.

``entities`` (upserts of any entity kind, tombstones), ``links`` (tags, links, phones),
``dictionaries`` (pipelines, statuses, users), ``cursors``, ``leadview`` (what a lead shows
and its versions), ``reads`` (the read API and status queries), ``migrations``.
"""

from __future__ import annotations

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
