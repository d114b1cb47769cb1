"""Webhook bodies in Kommo's layout, encoded like PHP ``http_build_query`` (API.md §7.2)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote_plus

from kommo_sim.state import Contact, CustomField, Lead, State, Tag

Pair = tuple[tuple[str, ...], str]  # (path below the entity index, value)


@dataclass(frozen=True)
class WebhookItem:
    """One entity inside a webhook body, e.g. ``leads[update][i]``."""

    setting: str  # the subscription that carries it, e.g. "update_lead"
    section: str  # "leads" | "contacts"
    action: str  # "add" | "update" | "status" | "responsible" | "delete" | "restore"
    pairs: tuple[Pair, ...]


def php_quote(text: str) -> str:
    """PHP ``urlencode``: like quote_plus, except that ``~`` is encoded too."""
    return quote_plus(text, safe="").replace("~", "%7E")


def encode_body(state: State, items: Sequence[WebhookItem]) -> str:
    """The urlencoded body: the account block first, then every item under its index."""
    account = state.account
    pairs: list[tuple[str, str]] = [
        ("account[subdomain]", account.subdomain),
        ("account[id]", str(account.id)),
        ("account[_links][self]", f"https://{account.subdomain}.kommo.com"),
    ]
    counters: dict[tuple[str, str], int] = {}
    for item in items:
        index = counters.get((item.section, item.action), 0)
        counters[(item.section, item.action)] = index + 1
        prefix = f"{item.section}[{item.action}][{index}]"
        for path, value in item.pairs:
            pairs.append((prefix + "".join(f"[{p}]" for p in path), value))
    return "&".join(f"{php_quote(k)}={php_quote(v)}" for k, v in pairs)


def _custom_fields(
    values: dict[int, list[dict[str, object]]], fields: dict[int, CustomField], with_code: bool
) -> list[Pair]:
    pairs: list[Pair] = []
    for k, field_id in enumerate(sorted(values, key=lambda f: fields[f].sort)):
        field = fields[field_id]
        cf = ("custom_fields", str(k))
        pairs += [(cf + ("id",), str(field.id)), (cf + ("name",), field.name)]
        for j, value in enumerate(values[field_id]):
            raw = value["value"]
            if field.type in ("date", "date_time", "birthday"):
                pairs.append((cf + ("values", str(j)), str(raw)))
                continue
            text = ("1" if raw else "0") if isinstance(raw, bool) else str(raw)
            pairs.append((cf + ("values", str(j), "value"), text))
            if "enum_id" in value:
                pairs.append((cf + ("values", str(j), "enum"), str(value["enum_id"])))
        if with_code and field.code:
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
    pairs += _custom_fields(lead.custom_fields, state.fields_of("leads"), with_code=False)
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


def contact_pairs(
    state: State, contact: Contact, *, old_responsible_user_id: int | None = None
) -> tuple[Pair, ...]:
    """Full contact field set (add/update/responsible/restore), in the observed order."""
    pairs: list[Pair] = [
        (("id",), str(contact.id)),
        (("name",), contact.name),
        (("responsible_user_id",), str(contact.responsible_user_id)),
        (("date_create",), str(contact.created_at)),
        (("last_modified",), str(contact.updated_at)),
        (("created_user_id",), str(contact.created_by)),
        (("modified_user_id",), str(contact.updated_by)),
        (("account_id",), str(state.account.id)),
    ]
    pairs += _custom_fields(contact.custom_fields, state.fields_of("contacts"), with_code=True)
    pairs += _tags(contact.tags, state.contact_tags)
    leads = state.leads.rows
    for lead_id in contact.leads:
        if lead_id in leads and not leads[lead_id].is_deleted:
            pairs.append((("linked_leads_id", str(lead_id), "ID"), str(lead_id)))
    if old_responsible_user_id is not None:
        pairs.append((("old_responsible_user_id",), str(old_responsible_user_id)))
    pairs += [
        (("created_at",), str(contact.created_at)),
        (("updated_at",), str(contact.updated_at)),
        (("type",), "contact"),
    ]
    return tuple(pairs)


def contact_delete_pairs(contact: Contact) -> tuple[Pair, ...]:
    return ((("id",), str(contact.id)), (("type",), "contact"))
