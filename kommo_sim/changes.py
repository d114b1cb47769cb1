"""What one change of a lead or contact produces: events (API.md §6) and webhook items (§7.2).

Both are derived by comparing the entity before and after the change, so every mutation
of the simulator gets the right events and webhooks without listing them by hand.
"""

from __future__ import annotations

from typing import Any, Literal

from kommo_sim.events import EventLog
from kommo_sim.payloads import (
    WebhookItem,
    contact_delete_pairs,
    contact_pairs,
    lead_delete_pairs,
    lead_pairs,
)
from kommo_sim.state import Contact, CustomField, Lead, State

Action = Literal["add", "update", "delete", "restore"]
FIELD_TYPE_IDS = {
    "text": 1,
    "numeric": 2,
    "checkbox": 3,
    "select": 4,
    "multiselect": 5,
    "date": 6,
    "url": 7,
    "multitext": 8,
    "textarea": 9,
    "radiobutton": 10,
}


def lead_changes(
    state: State, events: EventLog, before: Lead | None, lead: Lead, by: int, action: Action
) -> list[WebhookItem]:
    at = lead.updated_at
    log = _Log(events, "lead", lead.id, by, at)
    if action == "add" or before is None:
        log("lead_added", [], [{"note": {"id": state.new_id("note")}}])
        return [WebhookItem("add_lead", "leads", "add", lead_pairs(state, lead))]
    if action == "delete":
        log("lead_deleted", [], [])
        return [WebhookItem("delete_lead", "leads", "delete", lead_delete_pairs(lead))]
    if action == "restore":
        log("lead_restored", [], [])
        return [WebhookItem("restore_lead", "leads", "restore", lead_pairs(state, lead))]
    status_changed = (before.status_id, before.pipeline_id) != (lead.status_id, lead.pipeline_id)
    old_status = before.status_id if status_changed else None
    old_pipeline = before.pipeline_id if before.pipeline_id != lead.pipeline_id else None
    items = [
        WebhookItem(
            "update_lead",
            "leads",
            "update",
            lead_pairs(state, lead, old_status_id=old_status, old_pipeline_id=old_pipeline),
        )
    ]
    if status_changed:
        log(
            "lead_status_changed",
            [{"lead_status": {"id": before.status_id, "pipeline_id": before.pipeline_id}}],
            [{"lead_status": {"id": lead.status_id, "pipeline_id": lead.pipeline_id}}],
        )
        items.append(
            WebhookItem(
                "status_lead",
                "leads",
                "status",
                lead_pairs(state, lead, old_status_id=old_status, old_pipeline_id=old_pipeline),
            )
        )
    if before.responsible_user_id != lead.responsible_user_id:
        log(
            "entity_responsible_changed",
            [{"responsible_user": {"id": before.responsible_user_id}}],
            [{"responsible_user": {"id": lead.responsible_user_id}}],
        )
        items.append(
            WebhookItem(
                "responsible_lead",
                "leads",
                "responsible",
                lead_pairs(
                    state,
                    lead,
                    old_status_id=old_status,
                    old_pipeline_id=old_pipeline,
                    old_responsible_user_id=before.responsible_user_id,
                ),
            )
        )
    if before.name != lead.name:
        log(
            "name_field_changed",
            [{"name_field_value": {"name": before.name}}],
            [{"name_field_value": {"name": lead.name}}],
        )
    if before.price != lead.price:
        log(
            "sale_field_changed",
            [{"sale_field_value": {"sale": before.price}}],
            [{"sale_field_value": {"sale": lead.price}}],
        )
    _common(state, log, "leads", before.custom_fields, lead.custom_fields, before.tags, lead.tags)
    _links(log, "contact", list(before.contacts), list(lead.contacts))
    return items


def contact_changes(
    state: State,
    events: EventLog,
    before: Contact | None,
    contact: Contact,
    by: int,
    action: Action,
) -> list[WebhookItem]:
    log = _Log(events, "contact", contact.id, by, contact.updated_at)
    if action == "add" or before is None:
        log("contact_added", [], [{"note": {"id": state.new_id("note")}}])
        return [WebhookItem("add_contact", "contacts", "add", contact_pairs(state, contact))]
    if action == "delete":
        log("contact_deleted", [], [])
        return [WebhookItem("delete_contact", "contacts", "delete", contact_delete_pairs(contact))]
    if action == "restore":
        log("contact_restored", [], [])
        return [
            WebhookItem("restore_contact", "contacts", "restore", contact_pairs(state, contact))
        ]
    old_responsible = before.responsible_user_id
    items = [
        WebhookItem(
            "update_contact",
            "contacts",
            "update",
            contact_pairs(state, contact, old_responsible_user_id=old_responsible),
        )
    ]
    if old_responsible != contact.responsible_user_id:
        log(
            "entity_responsible_changed",
            [{"responsible_user": {"id": old_responsible}}],
            [{"responsible_user": {"id": contact.responsible_user_id}}],
        )
        items.append(
            WebhookItem(
                "responsible_contact",
                "contacts",
                "responsible",
                contact_pairs(state, contact, old_responsible_user_id=old_responsible),
            )
        )
    if before.name != contact.name:
        log(
            "name_field_changed",
            [{"name_field_value": {"name": before.name}}],
            [{"name_field_value": {"name": contact.name}}],
        )
    _common(
        state,
        log,
        "contacts",
        before.custom_fields,
        contact.custom_fields,
        before.tags,
        contact.tags,
    )
    _links(log, "lead", list(before.leads), list(contact.leads))
    return items


class _Log:
    """Writes events about one entity, by one user, at one time."""

    def __init__(self, events: EventLog, entity: str, entity_id: int, by: int, at: int) -> None:
        self.args = (events, entity, entity_id, by, at)

    def __call__(
        self, type_: str, before: list[dict[str, Any]], after: list[dict[str, Any]]
    ) -> None:
        events, entity, entity_id, by, at = self.args
        events.add(type_, entity, entity_id, by, at, before, after)


def _field_value(field: CustomField, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "custom_field_value": {
                "field_id": field.id,
                "field_type": FIELD_TYPE_IDS.get(field.type, 0),
                "enum_id": v.get("enum_id"),
                "text": str(v["value"]),
            }
        }
        for v in values
    ]


def _common(
    state: State,
    log: _Log,
    kind: Literal["leads", "contacts"],
    cf_before: dict[int, list[dict[str, Any]]],
    cf_after: dict[int, list[dict[str, Any]]],
    tags_before: list[int],
    tags_after: list[int],
) -> None:
    fields = state.fields_of(kind)
    for field_id in sorted(set(cf_before) | set(cf_after)):
        old, new = cf_before.get(field_id, []), cf_after.get(field_id, [])
        if old != new:
            log(
                "custom_field_value_changed",
                _field_value(fields[field_id], old),
                _field_value(fields[field_id], new),
            )
    tags = state.tags_of(kind)
    added = [{"tag": {"name": tags[t].name}} for t in tags_after if t not in tags_before]
    removed = [{"tag": {"name": tags[t].name}} for t in tags_before if t not in tags_after]
    if added:
        log("entity_tag_added", [], added)
    if removed:
        log("entity_tag_deleted", removed, [])


def _links(log: _Log, other: str, before: list[int], after: list[int]) -> None:
    for other_id in after:
        if other_id not in before:
            log("entity_linked", [], [{"link": {"entity": {"type": other, "id": other_id}}}])
    for other_id in before:
        if other_id not in after:
            log("entity_unlinked", [{"link": {"entity": {"type": other, "id": other_id}}}], [])
