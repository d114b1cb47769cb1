"""The schema documents itself: a COMMENT on every table, view and column (``\\d+``)."""

from __future__ import annotations

import asyncpg


async def test_every_table_view_and_column_has_a_comment(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        relations = await conn.fetch(
            """SELECT c.relname, c.relkind, obj_description(c.oid, 'pg_class') AS comment
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')"""
        )
        columns = await conn.fetch(
            """SELECT c.relname, a.attname, col_description(c.oid, a.attnum) AS comment
               FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v')"""
        )
    assert {r["relname"] for r in relations} >= {"leads", "companies", "lead_stage_durations"}
    assert [r["relname"] for r in relations if not r["comment"]] == []
    assert [f"{r['relname']}.{r['attname']}" for r in columns if not r["comment"]] == []
