"""Webhook bodies for tests: Kommo's fixture bodies with what each must queue, and hypothesis
strategies for valid bodies (each with a model of its hints), mutated bodies and garbage."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from hypothesis import strategies as st

from service.kinds import kind_named
from service.sync.hints import Hints
from service.web.webform import MAX_ID

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kommo" / "webhooks"
if not FIXTURES.is_dir():  # the checkout's own copy, when the shared folder is not mounted
    FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


# fixture name -> what it must queue (account 31000001 / examplecorp in all of them)
def flat(**fields: Any) -> Hints:
    """Hints from the flat names of the queues (lead_changes=…, contact_deletes=…)."""
    hints = Hints(**{k: v for k, v in fields.items() if "_" not in k or k == "account_ids"})
    for name, value in fields.items():
        kind, _, what = name.partition("_")
        if what in ("changes", "deletes", "restores"):
            getattr(hints, what)[kind_named(kind).name] = value
    return hints


EXPECTED: dict[str, dict[str, Any]] = {
    "SYNTHETIC_two_leads_one_body": {"lead_changes": {24000101: 1748300000, 24000102: 1748300000}},
    "company_add": {"company_changes": {35000777: 1726576534}},
    "company_delete": {"company_deletes": {35000777}},
    "contact_add": {"contact_changes": {35000501: 1748289231}},
    "contact_delete": {"contact_deletes": {35000501}},
    "contact_update": {"contact_changes": {35000501: 1748292937}},
    "dp_lead_add": {"lead_changes": {24000103: 0}},
    "dp_lead_status": {"lead_changes": {24000102: 0}},
    "lead_add": {"lead_changes": {24000101: 1748268669}},
    "lead_delete": {"lead_deletes": {24000101}},
    "lead_responsible": {"lead_changes": {24000102: 1726572882}},
    "lead_restore": {"lead_changes": {24000101: 1726572650}, "lead_restores": {24000101}},
    "lead_status": {"lead_changes": {24000102: 1615985846}},
    "lead_update": {"lead_changes": {24000101: 1748268812}},
}


def fixture_bodies() -> list[str]:
    names = sorted(
        p.name.removesuffix(".txt")
        for p in FIXTURES.glob("*.txt")
        if not p.name.endswith(".decoded.txt") and p.name != "headers.txt"
    )
    assert names, f"no webhook fixtures in {FIXTURES}"
    return names


def expected_hints(name: str) -> Hints:
    return flat(account_ids={31000001}, subdomain="examplecorp", **EXPECTED[name])


# --- generated bodies ------------------------------------------------------------------------

LEAD_ACTIONS = ["add", "update", "status", "responsible", "delete", "restore"]
CONTACT_ACTIONS = ["add", "update", "delete", "restore", "responsible"]
IGNORED = [
    ("task", "task[add]"),
    ("task", "task[update]"),
    ("talk", "talk[update]"),
    ("message", "message[add]"),
    ("leads[note]", "leads[note]"),
    ("contacts[note]", "contacts[note]"),
    ("customers", "customers[add]"),
]
ids = st.one_of(st.integers(1, 40), st.integers(1, MAX_ID))
indices = st.one_of(st.integers(0, 4), st.integers(0, 999_999_999))
timestamps = st.one_of(st.none(), st.integers(0, 2**31), st.integers(0, 10**14))
texts = st.text(max_size=12)


@dataclasses.dataclass
class Case:
    body: bytes
    hints: Hints


def _encode(key: str, value: str, style: int) -> str:
    safe = "[]" if style == 1 else ""
    return f"{quote(key, safe=safe)}={quote_plus(value) if style != 2 else quote(value, safe='')}"


@st.composite
def valid_cases(draw: st.DrawFn, account_id: int = 31000001) -> Case:
    """A valid body in Kommo's layout, with a model of what the parser must return."""
    fields: list[tuple[str, str]] = []
    expected = Hints()
    used: set[tuple[str, str, int]] = set()
    for _ in range(draw(st.integers(0, 8))):
        top = draw(st.sampled_from(["leads", "contacts"]))
        action = draw(st.sampled_from(LEAD_ACTIONS if top == "leads" else CONTACT_ACTIONS))
        index = draw(indices)
        if (top, action, index) in used:
            continue
        used.add((top, action, index))
        ident = draw(ids)
        p = f"{top}[{action}][{index}]"
        fields.append((f"{p}[id]", str(ident)))
        lm = 0
        for name in ("last_modified", "updated_at"):
            ts = draw(timestamps)
            if ts is not None:
                fields.append((f"{p}[{name}]", str(ts)))
                lm = max(lm, ts)
        fields.append((f"{p}[name]", draw(texts)))
        if draw(st.booleans()):
            fields.append((f"{p}[custom_fields][0][id]", "752013"))
            fields.append((f"{p}[custom_fields][0][values][0]", str(draw(st.integers(0, 2**31)))))
            fields.append((f"{p}[tags][0][name]", draw(texts)))
        kind = "contact"
        if top == "contacts":
            kind = draw(st.sampled_from(["contact", "company", "absent"]))
            if kind != "absent":
                fields.append((f"{p}[type]", kind))
            fields.append((f"{p}[linked_leads_id][{draw(ids)}][ID]", "1"))
        name = "leads" if top == "leads" else "companies" if kind == "company" else "contacts"
        changes, deletes, restores = (
            expected.changes[name],
            expected.deletes[name],
            expected.restores[name],
        )
        if action == "delete":
            deletes.add(ident)
        else:
            changes[ident] = max(changes.get(ident, 0), lm)
            if action == "restore":
                restores.add(ident)
    for name in ("leads", "contacts", "companies"):
        for ident in expected.deletes[name] - expected.restores[name]:
            expected.changes[name].pop(ident, None)
    seen_ignored: set[tuple[str, int]] = set()
    for _ in range(draw(st.integers(0 if used else 1, 3))):
        label, prefix = draw(st.sampled_from(IGNORED))
        index = draw(indices)
        fields.append((f"{prefix}[{index}][id]", str(draw(ids))))
        fields.append((f"{prefix}[{index}][text]", draw(texts)))
        if (prefix, index) not in seen_ignored:
            seen_ignored.add((prefix, index))
            expected.ignored[label] += 1
    fields = draw(st.permutations(fields))
    account = draw(st.sampled_from(["first", "last", "middle", "absent", "subdomain"]))
    acc = [("account[subdomain]", "examplecorp"), ("account[id]", str(account_id))]
    acc.append(("account[_links][self]", "https://examplecorp.kommo.com"))
    if account == "subdomain":
        acc = acc[:1]
    if account == "absent":
        acc = []
    else:
        expected.subdomain = "examplecorp"
        expected.account_ids = {account_id} if account != "subdomain" else set()
    if account == "first":
        fields = acc + fields
    elif account == "middle":
        fields = fields[:1] + acc + fields[1:]
    else:
        fields = fields + acc
    style = draw(st.sampled_from([0, 1, 2]))  # %5B brackets / literal brackets / %20 spaces
    raw = "&".join(_encode(k, v, style) for k, v in fields)
    return Case(raw.encode(), expected)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A valid body with a random edit: a cut, an insertion, a changed byte, a truncation."""
    raw = bytearray(draw(valid_cases()).body)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        edit = draw(st.sampled_from(["cut", "insert", "change", "truncate"]))
        if edit == "cut":
            del raw[at : at + draw(st.integers(1, 12))]
        elif edit == "insert":
            piece = draw(st.one_of(st.binary(min_size=1, max_size=6), st.sampled_from(SPECIAL)))
            raw[at:at] = piece
        elif edit == "change" and at < len(raw):
            raw[at] = draw(st.integers(0, 255))
        else:
            del raw[at:]
    return bytes(raw)


SPECIAL = [b"&", b"=", b"[", b"]", b"%", b"%5B", b"%5D", b"+", b"%FF", b"%C3", b"0", b"-"]
garbage = st.one_of(
    st.binary(max_size=200),
    st.text(alphabet="leadscontr[]=&%5BD0123+id", max_size=120).map(str.encode),
)
