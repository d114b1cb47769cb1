"""Webhook layout variety: every layout variant carries the fixtures' nested structure; the
choice per delivery is seeded; a fixed layout can be asked for."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import pytest

from kommo_sim import VARIANTS, Layout, Simulator
from tests.sim.helpers import (
    HOOK_URL,
    Receiver,
    decoded_form,
    fixture_form,
    form_paths,
    make_config,
    parse_php_form,
)
from tests.sim.scenarios import KINDS, drain


def without_account(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tree.items() if k != "account"}


async def body_of(kind: str, layout: Layout | str, seed: int = 7) -> str:
    receiver = Receiver()
    sim = Simulator(
        make_config(webhook_layouts=layout, seed=seed), webhook_transport=receiver.transport
    )
    change, setting = KINDS[kind]
    sim.webhooks.subscribe(HOOK_URL, [setting])
    change(sim)
    await drain(sim)
    await sim.aclose()
    return receiver.bodies[-1]


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_decoded_views_are_the_raw_fixtures(kind: str) -> None:
    assert decoded_form(f"{kind}.decoded.txt") == parse_php_form(fixture_form(f"{kind}.txt"))


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_every_layout_has_the_fixture_structure(kind: str) -> None:
    expected = form_paths(decoded_form(f"{kind}.decoded.txt"))
    trees = []
    for layout in VARIANTS:
        body = await body_of(kind, layout)
        tree = parse_php_form(body)
        account = {"account.subdomain"} | (
            {"account.id", "account._links.self"} if layout.account_id else set()
        )
        assert (
            form_paths(tree)
            == (expected - {p for p in expected if p.startswith("account.")}) | account
        ), layout
        keys = [k for k, _ in parse_qsl(body)]
        assert (keys[0].startswith("account[")) == (layout.account == "first") or len(keys) == len(
            account
        )
        assert ("%5B" in body) == layout.encode_brackets and ("[" in body) != layout.encode_brackets
        if any(" " in value for _, value in parse_qsl(body)):
            assert ("%20" in body) == (layout.space == "%20") != ("+" in body)
        trees.append(without_account(tree))
        if layout.account_id:
            assert tree["account"]["id"] == "31000001"
    assert all(t == trees[0] for t in trees)  # the same change, whatever the layout


async def test_layouts_vary_per_delivery_and_repeat_per_seed() -> None:
    runs = []
    for _ in range(2):
        recv = Receiver()
        sim = Simulator(make_config(webhook_layouts="vary"), webhook_transport=recv.transport)
        sim.webhooks.subscribe(HOOK_URL, ["update_lead"])
        for lead_id in list(sim.state.leads.rows)[:40]:
            sim.update_lead(lead_id, name="Website request  two")
        await drain(sim)
        await sim.aclose()
        runs.append(recv.bodies)
    assert runs[0] == runs[1]  # deterministic from the seed
    shapes = {
        (
            b.startswith("account"),
            "account%5Bid%5D" in b or "account[id]" in b,
            "%5B" in b,
            "%20" in b,
        )
        for b in runs[0]
    }
    assert len(shapes) >= 8  # first/last, with/without id, brackets, spaces: all seen
    for body in runs[0]:
        assert parse_php_form(body)["leads"]["update"]["0"]["name"] == "Website request  two"
        assert parse_php_form(body)["leads"]["update"]["0"]["account_id"] == "31000001"


async def test_fixed_layout_is_the_fixtures_one() -> None:
    body = await body_of("lead_update", "fixed")
    assert body.startswith("account%5Bsubdomain%5D=examplecorp&account%5Bid%5D=31000001&")
    assert "%20" not in body and "[" not in body
    pinned = await body_of(
        "lead_update", Layout(account="last", account_id=False, encode_brackets=False, space="%20")
    )
    assert pinned.endswith("&account[subdomain]=examplecorp") and "account[id]" not in pinned
    assert "Call%20after%205%20pm" in pinned
    with pytest.raises(ValueError):
        Simulator(make_config(webhook_layouts="random"))
