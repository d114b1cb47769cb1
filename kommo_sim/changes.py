"""What one change of a lead, contact or company produces: events (API.md §6) and webhook
items (§7.2).

Both are derived by comparing the entity before and after the change, so every mutation
of the simulator gets the right events and webhooks without listing them by hand.

Links write an event on both sides [INF: Kommo documents the event types, not which side
gets which]: a lead or contact linked to a company gets ``entity_linked`` with
``{"link": {"entity": {"type": "company", "id": C}}}``, the company gets ``company_linked``
naming the lead or contact; a lead and a contact each get ``entity_linked`` naming the other.
"""

from __future__ import annotations

from typing import Any, Literal

from kommo_sim.events import EventLog
from kommo_sim.fields import FIELD_TYPE_IDS, event_text
from kommo_sim.history import record_move
from kommo_sim.payloads import (
    WebhookItem,
    lead_delete_pairs,
    lead_pairs,
    party_delete_pairs,
    party_pairs,
)
from kommo_sim.state import Company, Contact, CustomField, Kind, Lead, State

__all__ = ["FIELD_TYPE_IDS", "Action", "lead_changes", "party_changes"]

Action = Literal["add", "update", "delete", "restore"]


class _Log:
    """Writes events about one entity, by one user, at one time."""

    def __init__(self, events: EventLog, entity: str, entity_id: int, by: int, at: int) -> None:
        self.args = (events, entity, entity_id, by, at)

    def __call__(
        self, type_: str, before: list[dict[str, Any]], after: list[dict[str, Any]]
    ) -> None:
        events, entity, entity_id, by, at = self.args
        events.add(type_, entity, entity_id, by, at, before, after)

    def lifecycle(self, state: State, action: Action) -> None:
        entity = self.args[1]
        if action == "add":
            self(f"{entity}_added", [], [{"note": {"id": state.new_id("note")}}])
        else:
            self(f"{entity}_{'deleted' if action == 'delete' else 'restored'}", [], [])


def lead_changes(
    state: State, events: EventLog, before: Lead | None, lead: Lead, by: int, action: Action
) -> list[WebhookItem]:
    log = _Log(events, "lead", lead.id, by, lead.updated_at)
    if action == "add" or before is None:
        log.lifecycle(state, "add")
        return [WebhookItem("add_lead", "leads", "add", lead_pairs(state, lead))]
    if action == "delete":
        log.lifecycle(state, action)
        return [WebhookItem("delete_lead", "leads", "delete", lead_delete_pairs(lead))]
    if action == "restore":
        log.lifecycle(state, action)
        return [WebhookItem("restore_lead", "leads", "restore", lead_pairs(state, lead))]
    moved = (before.pipeline_id, before.status_id) != (lead.pipeline_id, lead.status_id)
    olds = {
        "old_status_id": before.status_id if moved else None,
        "old_pipeline_id": before.pipeline_id if before.pipeline_id != lead.pipeline_id else None,
    }
    items = [WebhookItem("update_lead", "leads", "update", lead_pairs(state, lead, **olds))]
    if moved:
        record_move(
            state,
            events,
            lead.id,
            (before.pipeline_id, before.status_id),
            (lead.pipeline_id, lead.status_id),
            by,
            lead.updated_at,
        )
        items.append(WebhookItem("status_lead", "leads", "status", lead_pairs(state, lead, **olds)))
    if before.responsible_user_id != lead.responsible_user_id:
        _responsible(log, before.responsible_user_id, lead.responsible_user_id)
        pairs = lead_pairs(state, lead, **olds, old_responsible_user_id=before.responsible_user_id)
        items.append(WebhookItem("responsible_lead", "leads", "responsible", pairs))
    _name(log, before.name, lead.name)
    if before.price != lead.price:
        log(
            "sale_field_changed",
            [{"sale_field_value": {"sale": before.price}}],
            [{"sale_field_value": {"sale": lead.price}}],
        )
    _values_and_tags(state, log, "leads", before, lead)
    _links(log, "entity", "contact", list(before.contacts), list(lead.contacts))
    _links(log, "entity", "company", _one(before.company_id), _one(lead.company_id))
    return items


def party_changes(
    state: State,
    events: EventLog,
    before: Contact | Company | None,
    party: Contact | Company,
    by: int,
    action: Action,
) -> list[WebhookItem]:
    """Changes of a contact or a company: both travel as ``contacts[...]`` with a ``[type]``."""
    is_contact = isinstance(party, Contact)
    kind: Kind = "contacts" if is_contact else "companies"
    word = "contact" if is_contact else "company"
    log = _Log(events, word, party.id, by, party.updated_at)
    if action == "add" or before is None:
        log.lifecycle(state, "add")
        return [WebhookItem(f"add_{word}", "contacts", "add", party_pairs(state, party))]
    if action == "delete":
        log.lifecycle(state, action)
        pairs = party_delete_pairs(party)
        return [WebhookItem(f"delete_{word}", "contacts", "delete", pairs)]
    if action == "restore":
        log.lifecycle(state, action)
        return [WebhookItem(f"restore_{word}", "contacts", "restore", party_pairs(state, party))]
    old = before.responsible_user_id
    pairs = party_pairs(state, party, old_responsible_user_id=old)
    items = [WebhookItem(f"update_{word}", "contacts", "update", pairs)]
    if old != party.responsible_user_id:
        _responsible(log, old, party.responsible_user_id)
        items.append(WebhookItem(f"responsible_{word}", "contacts", "responsible", pairs))
    _name(log, before.name, party.name)
    _values_and_tags(state, log, kind, before, party)
    _links(
        log, "entity" if is_contact else "company", "lead", list(before.leads), list(party.leads)
    )
    if isinstance(before, Contact) and isinstance(party, Contact):
        _links(log, "entity", "company", _one(before.company_id), _one(party.company_id))
    elif isinstance(before, Company) and isinstance(party, Company):
        _links(log, "company", "contact", list(before.contacts), list(party.contacts))
    return items


def _one(entity_id: int | None) -> list[int]:
    return [] if entity_id is None else [entity_id]


def _responsible(log: _Log, before: int, after: int) -> None:
    log(
        "entity_responsible_changed",
        [{"responsible_user": {"id": before}}],
        [{"responsible_user": {"id": after}}],
    )


def _name(log: _Log, before: str, after: str) -> None:
    if before != after:
        log(
            "name_field_changed",
            [{"name_field_value": {"name": before}}],
            [{"name_field_value": {"name": after}}],
        )


def _field_value(field: CustomField, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        enum_id, text = event_text(field, value)
        out.append(
            {
                "custom_field_value": {
                    "field_id": field.id,
                    "field_type": FIELD_TYPE_IDS.get(field.type, 0),
                    "enum_id": enum_id,
                    "text": text,
                }
            }
        )
    return out


def _values_and_tags(
    state: State,
    log: _Log,
    kind: Kind,
    before: Lead | Contact | Company,
    after: Lead | Contact | Company,
) -> None:
    fields = state.fields_of(kind)
    old_values, new_values = before.custom_fields, after.custom_fields
    for field_id in sorted(set(old_values) | set(new_values)):
        old, new = old_values.get(field_id), new_values.get(field_id)
        if old != new and field_id in fields:
            field = fields[field_id]
            log(
                "custom_field_value_changed",
                _field_value(field, old or []),
                _field_value(field, new or []),
            )
    tags = state.tags_of(kind)
    added = [{"tag": {"name": tags[t].name}} for t in after.tags if t not in before.tags]
    removed = [{"tag": {"name": tags[t].name}} for t in before.tags if t not in after.tags]
    if added:
        log("entity_tag_added", [], added)
    if removed:
        log("entity_tag_deleted", removed, [])


def _links(log: _Log, prefix: str, other: str, before: list[int], after: list[int]) -> None:
    """``<prefix>_linked`` / ``_unlinked`` events naming the linked ``other`` entity."""
    for other_id in after:
        if other_id not in before:
            log(f"{prefix}_linked", [], [{"link": {"entity": {"type": other, "id": other_id}}}])
    for other_id in before:
        if other_id not in after:
            log(f"{prefix}_unlinked", [{"link": {"entity": {"type": other, "id": other_id}}}], [])
