"""Webhook bodies in Kommo's layout, encoded like PHP ``http_build_query`` (API.md §7.2).

Contacts and companies share the ``contacts[...]`` key and differ by ``[type]``. Unsorted
(Incoming leads) bodies follow amoCRM's webhooks-format page, section "Примеры массивов
неразобранного": ``unsorted[add][i][uid|category|…|data][…]`` and, on accept or decline,
``unsorted[delete][i][action]=accept|decline`` with ``accept_result[leads][k]`` or
``decline_result[leads][k]`` (PHP numbers list elements, so ``[]`` arrives as ``[0]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kommo_sim.fields import CONTACT_PHONE, webhook_value_pairs
from kommo_sim.layouts import FIXED, Layout, php_quote
from kommo_sim.state import (
    Company,
    Contact,
    CustomField,
    Incoming,
    Kind,
    Lead,
    State,
    Tag,
    Value,
)

__all__ = ["Pair", "WebhookItem", "encode_body", "php_quote"]

Pair = tuple[tuple[str, ...], str]  # (path below the entity index, value)
UNSORTED = "(unsorted)"  # the pseudo-setting of unsorted items: no documented name exists


@dataclass(frozen=True)
class WebhookItem:
    """One entity inside a webhook body, e.g. ``leads[update][i]``."""

    setting: str  # the subscription that carries it, e.g. "update_lead"
    section: str  # "leads" | "contacts" | "unsorted"
    action: str  # "add" | "update" | "status" | "responsible" | "delete" | "restore"
    pairs: tuple[Pair, ...]


def encode_body(state: State, items: Sequence[WebhookItem], layout: Layout = FIXED) -> str:
    """The urlencoded body: the account block and every item under its index."""
    account = state.account
    block = [
        ("account[subdomain]", account.subdomain),
        ("account[id]", str(account.id)),
        ("account[_links][self]", f"https://{account.subdomain}.kommo.com"),
    ]
    counters: dict[tuple[str, str], int] = {}
    pairs: list[tuple[str, str]] = []
    for item in items:
        index = counters.get((item.section, item.action), 0)
        counters[(item.section, item.action)] = index + 1
        prefix = f"{item.section}[{item.action}][{index}]"
        for path, value in item.pairs:
            pairs.append((prefix + "".join(f"[{p}]" for p in path), value))
    return layout.encode(block, pairs)


def _custom_fields(values: dict[int, list[Value]], fields: dict[int, CustomField]) -> list[Pair]:
    pairs: list[Pair] = []
    shown = [f for f in values if f in fields]
    for k, field_id in enumerate(sorted(shown, key=lambda f: fields[f].sort)):
        field = fields[field_id]
        cf = ("custom_fields", str(k))
        pairs += [(cf + ("id",), str(field.id)), (cf + ("name",), field.name)]
        for j, value in enumerate(values[field_id]):
            pairs += [(cf + path, text) for path, text in webhook_value_pairs(field, j, value)]
        if field.code:
            pairs.append((cf + ("code",), field.code))
    return pairs


def _tags(tag_ids: list[int], tags: dict[int, Tag]) -> list[Pair]:
    pairs: list[Pair] = []
    for k, tag_id in enumerate(t for t in tag_ids if t in tags):
        pairs += [
            (("tags", str(k), "id"), str(tag_id)),
            (("tags", str(k), "name"), tags[tag_id].name),
        ]
    return pairs


def lead_pairs(
    state: State,
    lead: Lead,
    *,
    old_status_id: int | None = None,
    old_pipeline_id: int | None = None,
    old_responsible_user_id: int | None = None,
) -> tuple[Pair, ...]:
    """Full lead field set (add/update/status/responsible/restore), in the observed order."""
    pairs: list[Pair] = [
        (("id",), str(lead.id)),
        (("name",), lead.name),
        (("status_id",), str(lead.status_id)),
    ]
    if old_status_id is not None:
        pairs.append((("old_status_id",), str(old_status_id)))
    pairs += [
        (("price",), str(lead.price)),
        (("responsible_user_id",), str(lead.responsible_user_id)),
        (("last_modified",), str(lead.updated_at)),
        (("modified_user_id",), str(lead.updated_by)),
        (("created_user_id",), str(lead.created_by)),
        (("date_create",), str(lead.created_at)),
        (("pipeline_id",), str(lead.pipeline_id)),
    ]
    if old_pipeline_id is not None:
        pairs.append((("old_pipeline_id",), str(old_pipeline_id)))
    pairs += _tags(lead.tags, state.lead_tags)
    pairs.append((("account_id",), str(state.account.id)))
    pairs += _custom_fields(lead.custom_fields, state.fields_of("leads"))
    if old_responsible_user_id is not None:
        pairs.append((("old_responsible_user_id",), str(old_responsible_user_id)))
    pairs += [(("created_at",), str(lead.created_at)), (("updated_at",), str(lead.updated_at))]
    return tuple(pairs)


def lead_delete_pairs(lead: Lead) -> tuple[Pair, ...]:
    return (
        (("id",), str(lead.id)),
        (("status_id",), str(lead.status_id)),
        (("pipeline_id",), str(lead.pipeline_id)),
    )


def party_pairs(
    state: State, party: Contact | Company, *, old_responsible_user_id: int | None = None
) -> tuple[Pair, ...]:
    """Full contact or company field set (add/update/responsible/restore), in observed order."""
    kind: Kind = "contacts" if isinstance(party, Contact) else "companies"
    pairs: list[Pair] = [
        (("id",), str(party.id)),
        (("name",), party.name),
        (("responsible_user_id",), str(party.responsible_user_id)),
        (("date_create",), str(party.created_at)),
        (("last_modified",), str(party.updated_at)),
        (("created_user_id",), str(party.created_by)),
        (("modified_user_id",), str(party.updated_by)),
    ]
    company = _live_company(state, party)
    if company is not None:
        pairs += [(("company_name",), company.name), (("linked_company_id",), str(company.id))]
    pairs.append((("account_id",), str(state.account.id)))
    pairs += _custom_fields(party.custom_fields, state.fields_of(kind))
    pairs += _tags(party.tags, state.tags_of(kind))
    leads = state.leads.rows
    for lead_id in party.leads:
        if lead_id in leads and not leads[lead_id].is_deleted:
            pairs.append((("linked_leads_id", str(lead_id), "ID"), str(lead_id)))
    if old_responsible_user_id is not None:
        pairs.append((("old_responsible_user_id",), str(old_responsible_user_id)))
    pairs += [
        (("created_at",), str(party.created_at)),
        (("updated_at",), str(party.updated_at)),
        (("type",), "contact" if kind == "contacts" else "company"),
    ]
    return tuple(pairs)


def _live_company(state: State, party: Contact | Company) -> Company | None:
    if not isinstance(party, Contact) or party.company_id is None:
        return None
    company = state.companies.get(party.company_id)
    return None if company is None or company.is_deleted else company


def party_delete_pairs(party: Contact | Company) -> tuple[Pair, ...]:
    return ((("id",), str(party.id)), (("type",), _type(party)))


def _type(party: Contact | Company) -> str:
    return "contact" if isinstance(party, Contact) else "company"


def unsorted_add_pairs(state: State, lead: Lead) -> tuple[Pair, ...]:
    """``unsorted[add][i]``: the form entry that made an incoming lead (doc example layout)."""
    incoming = lead.incoming
    assert incoming is not None
    at = str(incoming.created_at)
    pairs: list[Pair] = [
        (("uid",), incoming.uid),
        (("category",), incoming.category),
        (("account_id",), str(state.account.id)),
        (("user_id",), str(lead.responsible_user_id)),
        (("source",), incoming.source),
        (("pipeline_id",), str(lead.pipeline_id)),
        (("source_data", "form_id"), str(lead.id % 1000000)),
        (("source_data", "form_type"), "1"),
        (("source_data", "date"), at),
        (("source_data", "from"), incoming.source),
        (("source_data", "origin", "ip"), "203.0.113.7"),
        (("source_data", "origin", "referer"), f"https://{state.account.subdomain}.example"),
        (("data", "leads", "0", "date_create"), at),
        (("data", "leads", "0", "created_user_id"), "0"),
        (("data", "leads", "0", "modified_user_id"), "0"),
        (("data", "leads", "0", "main_user_id"), str(lead.responsible_user_id)),
    ]
    for k, contact_id in enumerate(lead.contacts):
        contact = state.contacts.rows[contact_id]
        row = ("data", "contacts", str(k))
        pairs.append((row + ("name",), contact.name))
        for j, phone in enumerate(contact.custom_fields.get(CONTACT_PHONE, [])):
            cf = row + ("custom_fields", str(j))
            pairs += [
                (cf + ("id",), str(CONTACT_PHONE)),
                (cf + ("values", "0", "enum"), str(phone["enum_id"])),
                (cf + ("values", "0", "value"), str(phone["value"])),
            ]
        pairs += [(row + ("date_create",), at), (row + ("created_user_id",), "0")]
    return tuple(pairs)


def unsorted_delete_pairs(incoming: Incoming, lead: Lead, action: str, at: int) -> tuple[Pair, ...]:
    """``unsorted[delete][i]``: an accept or a decline, with the entities it produced."""
    result = f"{action}_result"
    pairs: list[Pair] = [
        (("action",), action),
        (("uid",), incoming.uid),
        (("category",), incoming.category),
        (("created_at",), str(at)),
        ((result, "leads", "0"), str(lead.id)),
    ]
    if action == "accept":
        pairs += [((result, "contacts", str(k)), str(c)) for k, c in enumerate(lead.contacts)]
    return tuple(pairs)
