"""The webhook form parser: fixture bodies, layout variations, errors, and generated bodies."""

from __future__ import annotations

from collections import Counter
from urllib.parse import quote, quote_plus, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.web.webform import MAX_ID, WebhookParseError, parse_webhook
from tests.webhook_bodies import (
    EXPECTED,
    FIXTURES,
    Case,
    expected_hints,
    fixture_bodies,
    flat,
    garbage,
    mutated_bodies,
    valid_cases,
)


def test_every_fixture_is_covered() -> None:
    assert set(fixture_bodies()) == set(EXPECTED)


@pytest.mark.parametrize("name", fixture_bodies())
def test_fixture_body(name: str) -> None:
    body = (FIXTURES / f"{name}.txt").read_bytes()
    assert parse_webhook(body) == expected_hints(name)


@pytest.mark.parametrize("name", fixture_bodies())
def test_decoded_view_parses_the_same(name: str) -> None:
    """The decoded views, re-encoded by urlencode (and with literal brackets), agree."""
    lines = (FIXTURES / f"{name}.decoded.txt").read_text().splitlines()
    kept = (line for line in lines if line and not line.startswith("#"))
    pairs = [(key, value) for key, value in (line.split("=", 1) for line in kept)]
    assert parse_webhook(urlencode(pairs).encode()) == expected_hints(name)
    literal = "&".join(f"{quote(k, safe='[]')}={quote_plus(v)}" for k, v in pairs)
    assert parse_webhook(literal.encode()) == expected_hints(name)


def body(*pairs: tuple[str, str | int]) -> bytes:
    return urlencode([(k, str(v)) for k, v in pairs]).encode()


def test_several_kinds_sparse_indices_any_order_account_last() -> None:
    hints = parse_webhook(
        body(
            ("leads[update][7][last_modified]", 20),
            ("contacts[add][3][type]", "contact"),
            ("leads[update][7][id]", 11),
            ("leads[status][0][id]", 12),
            ("leads[status][0][updated_at]", 30),
            ("leads[status][0][last_modified]", 25),
            ("contacts[add][3][id]", 21),
            ("leads[update][2][custom_fields][0][values][0]", 1615845600),
            ("leads[update][2][id]", 11),
            ("leads[update][2][updated_at]", 15),
            ("contacts[update][0][id]", 22),
            ("contacts[delete][5][id]", 23),
            ("contacts[delete][5][type]", "contact"),
            ("contacts[delete][6][id]", 24),
            ("contacts[delete][6][type]", "company"),
            ("task[add][0][id]", 1),
            ("task[add][0][last_modified]", "2026-05-26 14:11:09"),
            ("task[add][1][id]", 2),
            ("leads[note][0][note][text]", "hi"),
            ("unsorted[delete][0][accept_result][leads][]", 5),
            ("account[subdomain]", "examplecorp"),
            ("account[id]", 31000001),
        )
    )
    assert hints == flat(
        account_ids={31000001},
        subdomain="examplecorp",
        lead_changes={11: 20, 12: 30, 5: 0},  # 5: an accepted incoming lead
        contact_changes={21: 0, 22: 0},
        contact_deletes={23},
        company_deletes={24},
        unsorted=1,
        ignored=Counter({"task": 2, "leads[note]": 1}),
    )


def test_account_absent_or_subdomain_only() -> None:
    assert parse_webhook(b"leads[add][0][id]=5").account_ids == set()
    hints = parse_webhook(b"leads%5Badd%5D%5B0%5D%5Bid%5D=5&account%5Bsubdomain%5D=old")
    assert (hints.account_ids, hints.subdomain, hints.changes["leads"]) == (set(), "old", {5: 0})


def test_delete_wins_over_a_change_of_the_same_id() -> None:
    hints = parse_webhook(
        body(("leads[update][0][id]", 1), ("leads[delete][0][id]", 1), ("leads[add][0][id]", 2))
    )
    assert (hints.changes["leads"], hints.deletes["leads"]) == ({2: 0}, {1})


def test_delete_and_restore_of_one_id_are_both_kept() -> None:
    hints = parse_webhook(
        body(
            ("contacts[restore][0][id]", 1),
            ("contacts[restore][0][last_modified]", 9),
            ("contacts[delete][0][id]", 1),
            ("contacts[update][0][id]", 1),
            ("contacts[update][0][last_modified]", 8),
        )
    )
    assert hints.changes["contacts"] == {1: 9}
    assert hints.deletes["contacts"] == hints.restores["contacts"] == {1}


def test_ignored_kinds_alone_are_valid() -> None:
    hints = parse_webhook(body(("talk[add][0][talk_id]", 1), ("message[add][0][id]", "x")))
    assert hints.is_empty() and hints.ignored == Counter({"talk": 1, "message": 1})
    assert parse_webhook(b"contacts[note][0][note][text]=x").ignored == {"contacts[note]": 1}


def test_unusual_but_valid_forms() -> None:
    # trailing '&', lower-case escapes, '+' spaces, a leading-zero index, timestamps not integers
    hints = parse_webhook(
        b"leads%5bupdate%5d%5b007%5d%5bid%5d=5&leads[update][007][name]=a+b"
        b"&leads[update][007][last_modified]=soon&&"
    )
    assert hints.changes["leads"] == {5: 0}
    assert parse_webhook(b"leads[add][0][id]=%39").changes["leads"] == {9: 0}
    assert parse_webhook(f"leads[add][0][id]={MAX_ID}".encode()).changes["leads"] == {MAX_ID: 0}
    # non-ASCII, percent-encoded or raw UTF-8
    raw = "leads[add][0][id]=1&leads[add][0][name]=Señor ☃".encode()
    assert parse_webhook(raw).changes["leads"] == {1: 0}
    assert parse_webhook(body(("leads[add][0][id]", 1), ("leads[add][0][name]", "Ж😀"))).changes[
        "leads"
    ]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty body"),
        (b"  \r\n", "empty body"),
        (b'{"leads": {"add": [{"id": 1}]}}', "not form-encoded"),
        (b"leads[add][0][id]=1&oops", "not form-encoded"),
        (b"account[id]=31000001&account[subdomain]=x", "no leads, contacts"),
        (b"foo=bar&id=3", "no leads, contacts"),
        (b"leads[add][0][id]=abc", "leads[add][0][id] is not a positive integer"),
        (b"leads[add][0][id]=0", "not a positive integer"),
        (b"leads[add][0][id]=-4", "not a positive integer"),
        (b"leads[add][0][id]=", "not a positive integer"),
        (b"leads[add][0][id]=1.0", "not a positive integer"),
        (b"leads[add][0][id]=%D9%A3", "not a positive integer"),  # Arabic-Indic three
        (f"leads[add][0][id]={MAX_ID + 1}".encode(), "not a positive integer"),
        (b"leads[add][0][id]=99999999999999999999", "not a positive integer"),
        (b"leads[add][0][name]=x", "leads[add][0] has no id"),
        (b"leads[add][0][id]=1&leads[add][1][price]=3", "leads[add][1] has no id"),
        (b"contacts[update][x][id]=1", "index is not numeric"),
        (b"contacts[update][-1][id]=1", "index is not numeric"),
        (b"leads[update][][id]=1", "index is not numeric"),
        (b"leads[update][0]=1", "has no index and field"),
        (b"leads[update]=1", "has no index and field"),
        (b"leads[update][0][id][x]=1", "malformed key"),
        (b"leads[update][0][id=1", "malformed key"),
        (b"leads[add][0][id]=1&leads[add][0][id]=2", "two different values"),
        (b"contacts[add][0][id]=1&contacts[add][0][type]=customer", "not contact or company"),
        (b"contacts[add][0][id]=1&contacts[add][0][type]=", "not contact or company"),
        (b"leads[add][0][id]=1&account[id]=abc", "account[id] is not a positive integer"),
        (b"leads[add][0][id]=1&account[id]=1&account[id]=2", "two different accounts"),
        (b"leads[add][0][id]=1&leads[add][0][name]=100%", "malformed percent-encoding"),
        (b"leads[add][0][id]=1&leads[add][0][name]=%zz", "malformed percent-encoding"),
        (b"leads%5Badd%5D%5B0%5D%5Bid%5D=1%", "malformed percent-encoding"),
        (b"leads[add][0][id]=1&leads[add][0][name]=%C3%28", "not valid UTF-8"),
        (b"leads[add][0][id]=1&leads[add][0][name]=%ff", "not valid UTF-8"),
        (b"leads[add][0][id]=1&leads[add][0][name]=\xff", "not valid UTF-8"),
        (b"leads[add][0][id]=1&leads[add][0][name]=%C3%%A9", "malformed percent-encoding"),
    ],
)
def test_invalid_bodies(raw: bytes, reason: str) -> None:
    with pytest.raises(WebhookParseError) as info:
        parse_webhook(raw)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message and len(message) < 200


@settings(max_examples=600, deadline=None, database=None)
@given(valid_cases())
def test_generated_valid_bodies(case: Case) -> None:
    assert parse_webhook(case.body) == case.hints


@settings(
    max_examples=600, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.one_of(mutated_bodies(), garbage))
def test_mutated_and_garbage_bodies_fail_cleanly(raw: bytes) -> None:
    try:
        hints = parse_webhook(raw)
    except WebhookParseError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    for group in (hints.changes["leads"], hints.deletes["leads"], hints.changes["contacts"],
                  hints.deletes["contacts"]):  # fmt: skip
        assert all(0 < i <= MAX_ID for i in group)
    assert hints.restores["leads"] <= hints.changes["leads"].keys()
    assert hints.restores["contacts"] <= hints.changes["contacts"].keys()


def test_companies_under_their_own_key_or_as_typed_contacts() -> None:
    hints = parse_webhook(
        b"companies[update][0][id]=7&companies[update][0][updated_at]=9"
        b"&contacts[add][0][id]=8&contacts[add][0][type]=company"
        b"&contacts[restore][0][id]=9&contacts[restore][0][type]=company"
        b"&companies[delete][0][id]=10"
    )
    assert hints == flat(
        company_changes={7: 9, 8: 0, 9: 0}, company_restores={9}, company_deletes={10}
    )
