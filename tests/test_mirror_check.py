"""The comparison with the simulator sees one wrong row in any table, so its passes mean
something."""

from __future__ import annotations

import asyncpg
import pytest

from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.settings import Settings
from tests.engine import SIM_TOKEN, kommo_settings_for, run_worker_burst
from tests.mirror import differences_on

# (table, a change to one of its rows, which rows qualify)
TAMPERING = [
    ("leads", "loss_reason_id = NULL", "loss_reason_id IS NOT NULL"),
    ("companies", "name = name || '!'", "NOT is_deleted"),
    ("company_phones", "normalized = '1'", "true"),
    ("contact_emails", "normalized = 'a@b.example'", "true"),
    ("custom_field_values", "value_number = value_number + 1", "value_number IS NOT NULL"),
    ("custom_field_values", "enum_id = enum_id + 1", "enum_id IS NOT NULL"),
    ("custom_field_values", "value_at = value_at + interval '1 day'", "value_at IS NOT NULL"),
    ("custom_field_values", "value_bool = NOT value_bool", "value_bool IS NOT NULL"),
    ("custom_field_values", "value_text = value_text || '!'", "value_text IS NOT NULL"),
    ("custom_fields", "name = name || '!'", "true"),
    ("custom_field_enums", "value = value || '!'", "true"),
    ("loss_reasons", "name = name || '!'", "true"),
]
REMOVALS = ["company_tags", "lead_companies", "contact_companies", "lead_status_changes"]


@pytest.fixture
def sim() -> Simulator:
    config = SimConfig(
        seed=5, leads=300, contacts=150, token=SIM_TOKEN, rate_limit=RateLimitConfig(rate=0)
    )
    return Simulator(config)


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env)


async def test_one_wrong_row_anywhere_is_a_difference(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool
) -> None:
    await run_worker_burst(kommo_settings, sim)
    changes = [
        f"UPDATE {table} SET {change} WHERE ctid = (SELECT ctid FROM {table} WHERE {rows} LIMIT 1)"
        for table, change, rows in TAMPERING
    ]
    changes += [
        f"DELETE FROM {table} WHERE ctid = (SELECT ctid FROM {table} LIMIT 1)" for table in REMOVALS
    ]
    async with pool.acquire() as conn:
        assert await differences_on(conn, sim) == []
        for sql in changes:
            transaction = conn.transaction()
            await transaction.start()
            try:
                assert await conn.execute(sql) in ("UPDATE 1", "DELETE 1"), sql
                assert await differences_on(conn, sim), f"not seen: {sql}"
            finally:
                await transaction.rollback()
        assert await differences_on(conn, sim) == []
