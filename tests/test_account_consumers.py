"""Consumer tokens scoped to accounts: WS_TOKENS see every account, an issued token sees its
accounts, anything else sees nothing; only digests are stored."""

from __future__ import annotations

import asyncpg
import pytest

from service.accounts import consumers, registry
from service.accounts.consumers import ALL_ACCOUNTS, may_see, scope_of
from service.accounts.registry import Credential
from service.accounts.secrets import digest
from service.settings import Secret, Settings
from tests.accounts import ENV_ACCOUNT, SECOND, THIRD, deployment
from tests.session import WS_TOKEN


async def _register(pool: asyncpg.Pool, settings: Settings, account_id: int, sub: str) -> None:
    await registry.register(
        pool,
        settings,
        account_id=account_id,
        subdomain=sub,
        base_url=f"https://{sub}.kommo.com",
        credential=Credential(token=Secret(f"token-of-{sub}-0123456789")),
    )


async def test_scopes(env: dict[str, str], pool: asyncpg.Pool) -> None:
    settings = deployment(env, WS_TOKENS=f"{WS_TOKEN},second-configured-token")
    await _register(pool, settings, SECOND, "examplecorp2")
    await _register(pool, settings, THIRD, "examplecorp3")
    one = await consumers.issue(pool, [SECOND])
    both = await consumers.issue(pool, [SECOND, THIRD, SECOND])
    another = await consumers.issue(pool, [SECOND])  # several per account

    assert await scope_of(pool, settings, WS_TOKEN) is ALL_ACCOUNTS
    assert await scope_of(pool, settings, "second-configured-token") is ALL_ACCOUNTS
    assert await scope_of(pool, settings, one) == frozenset({SECOND})
    assert await scope_of(pool, settings, another) == frozenset({SECOND})
    assert await scope_of(pool, settings, both) == frozenset({SECOND, THIRD})
    for wrong in (None, "", "nope", one + "x", one[:-1], WS_TOKEN.upper(), digest(one)):
        assert await scope_of(pool, settings, wrong) is None
    assert len({one, both, another}) == 3 and one.startswith(consumers.TOKEN_PREFIX)

    stored = await pool.fetch("SELECT token_hash FROM consumer_tokens")
    assert {r["token_hash"] for r in stored} == {digest(t) for t in (one, both, another)}

    assert may_see(ALL_ACCOUNTS, ENV_ACCOUNT) and may_see(frozenset({SECOND}), SECOND)
    assert not may_see(frozenset({SECOND}), THIRD)
    assert not may_see(frozenset({SECOND}), ENV_ACCOUNT)  # nor the environment's account

    async with pool.acquire() as conn:  # disabling keeps what the token may read
        await registry.set_state(conn, "examplecorp3", "disabled", None)
    assert await scope_of(pool, settings, both) == frozenset({SECOND, THIRD})
    await registry.remove(pool, "examplecorp2", purge=False)
    assert await scope_of(pool, settings, one) is None
    assert await scope_of(pool, settings, both) == frozenset({THIRD})


async def test_a_token_needs_an_account(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError):
        await consumers.issue(pool, [])


async def test_ws_tokens_compare_every_token(env: dict[str, str]) -> None:
    """Any configured token matches, in whichever position, and only exactly."""
    tokens = [f"configured-token-{i:02d}-abcdef" for i in range(5)]
    settings = deployment(env, WS_TOKENS=",".join(tokens))
    assert all(consumers.configured(settings, t) for t in tokens)
    assert not consumers.configured(settings, "configured-token-05-abcdef")
    assert not consumers.configured(settings, tokens[0][:-1])
