"""Applying field changes given as keyword arguments to a lead or contact."""

from __future__ import annotations

from typing import Any

from kommo_sim.seed import LOST, WON
from kommo_sim.state import Contact, Kind, Lead, State

LEAD_FIELDS = {
    "name",
    "price",
    "status_id",
    "pipeline_id",
    "responsible_user_id",
    "loss_reason_id",
    "custom_fields",
}
CONTACT_FIELDS = {"name", "first_name", "last_name", "responsible_user_id", "custom_fields"}


def apply_lead_fields(state: State, lead: Lead, fields: dict[str, Any], now: int) -> None:
    """Set lead fields; moving to 142/143 sets ``closed_at``, leaving them clears it."""
    unknown = set(fields) - LEAD_FIELDS
    if unknown:
        raise ValueError(f"unknown lead fields {sorted(unknown)}")
    for name in ("name", "price", "responsible_user_id", "loss_reason_id"):
        if name in fields:
            setattr(lead, name, fields[name])
    if "pipeline_id" in fields or "status_id" in fields:
        pipeline_id = fields.get("pipeline_id", lead.pipeline_id)
        pipeline = next((p for p in state.pipelines if p.id == pipeline_id), None)
        if pipeline is None:
            raise ValueError(f"no pipeline {pipeline_id}")
        first_open = pipeline.statuses[1] if len(pipeline.statuses) > 1 else pipeline.statuses[0]
        status_id = fields.get("status_id", first_open.id)
        state.status(pipeline_id, status_id)
        was_closed = lead.status_id in (WON, LOST)
        lead.pipeline_id, lead.status_id = pipeline_id, status_id
        if status_id in (WON, LOST):
            lead.closed_at = lead.closed_at if was_closed else now
            lead.loss_reason_id = fields.get("loss_reason_id", lead.loss_reason_id)
        else:
            lead.closed_at = None
        if status_id != LOST:
            lead.loss_reason_id = None
    apply_custom_fields(state, lead.custom_fields, "leads", fields.get("custom_fields"))


def apply_contact_fields(state: State, contact: Contact, fields: dict[str, Any]) -> None:
    unknown = set(fields) - CONTACT_FIELDS
    if unknown:
        raise ValueError(f"unknown contact fields {sorted(unknown)}")
    for name in ("name", "first_name", "last_name", "responsible_user_id"):
        if name in fields:
            setattr(contact, name, fields[name])
    if "name" not in fields and ("first_name" in fields or "last_name" in fields):
        contact.name = f"{contact.first_name} {contact.last_name}".strip()
    apply_custom_fields(state, contact.custom_fields, "contacts", fields.get("custom_fields"))


def apply_custom_fields(
    state: State,
    target: dict[int, list[dict[str, Any]]],
    kind: Kind,
    changes: dict[Any, Any] | None,
) -> None:
    """Apply ``{field_id: value}``; None or [] clears the field, a list gives several values.

    select/radiobutton: the option text or its enum id; multitext (PHONE/EMAIL): the text,
    or ``{"value": …, "enum": "WORK"}``; date: a timestamp; checkbox: a bool;
    text/numeric: anything (stored as a string, as Kommo answers it).
    """
    fields = state.fields_of(kind)
    for key, value in (changes or {}).items():
        field = fields.get(int(key))
        if field is None:
            raise ValueError(f"no {kind} custom field {key}")
        if value is None or value == []:
            target.pop(field.id, None)
            continue
        values: list[dict[str, Any]] = []
        for item in value if isinstance(value, list) else [value]:
            if field.type == "multitext":
                text, code = (
                    (item["value"], item.get("enum", "WORK"))
                    if isinstance(item, dict)
                    else (item, "WORK")
                )
                enum = field.enum_by_value(str(code))
                values.append({"value": str(text), "enum_id": enum[0], "enum_code": enum[2]})
            elif field.enums is not None:
                enum = (
                    field.enum_by_id(item)
                    if isinstance(item, int)
                    else field.enum_by_value(str(item))
                )
                values.append({"value": enum[1], "enum_id": enum[0], "enum_code": enum[2]})
            elif field.type in ("numeric", "text", "textarea"):
                values.append({"value": str(item)})
            elif field.type == "checkbox":
                values.append({"value": bool(item)})
            else:
                values.append({"value": int(item)})
        target[field.id] = values
