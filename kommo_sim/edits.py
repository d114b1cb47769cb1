"""Applying field changes given as keyword arguments to a lead, contact or company."""

from __future__ import annotations

from typing import Any

from kommo_sim.fields import coerce
from kommo_sim.seed import LOST, WON
from kommo_sim.state import Company, Contact, Kind, Lead, State, Value

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
COMPANY_FIELDS = {"name", "responsible_user_id", "custom_fields"}


def apply_lead_fields(state: State, lead: Lead, fields: dict[str, Any], now: int) -> None:
    """Set lead fields. Moving to 142/143 sets ``closed_at``, leaving them clears it; a lead
    in 143 (lost) has a loss reason (the one given, or one of the account's), others none."""
    unknown = set(fields) - LEAD_FIELDS
    if unknown:
        raise ValueError(f"unknown lead fields {sorted(unknown)}")
    for name in ("name", "price", "responsible_user_id"):
        if name in fields:
            setattr(lead, name, fields[name])
    if "pipeline_id" in fields or "status_id" in fields:
        pipeline = state.pipeline(fields.get("pipeline_id", lead.pipeline_id))
        status_id = fields.get("status_id", pipeline.first_open().id)
        state.status(pipeline.id, status_id)
        was_closed = lead.status_id in (WON, LOST)
        lead.pipeline_id, lead.status_id = pipeline.id, status_id
        closed = status_id in (WON, LOST)
        lead.closed_at = (lead.closed_at if was_closed else now) if closed else None
        if state.status(pipeline.id, status_id).type != 1:
            lead.incoming = None  # moved out of Incoming leads: no longer an unsorted entry
    _loss_reason(state, lead, fields.get("loss_reason_id"))
    apply_custom_fields(state, lead.custom_fields, "leads", fields.get("custom_fields"))


def _loss_reason(state: State, lead: Lead, wanted: int | None) -> None:
    if lead.status_id != LOST:
        if wanted is not None:
            raise ValueError("loss_reason_id needs the lead in status 143 (lost)")
        lead.loss_reason_id = None
        return
    if wanted is not None:
        if wanted not in state.loss_reasons:
            raise ValueError(f"no loss reason {wanted}")
        lead.loss_reason_id = wanted
    elif lead.loss_reason_id is None and state.loss_reasons:
        reasons = sorted(state.loss_reasons)
        lead.loss_reason_id = reasons[lead.id % len(reasons)]


def apply_party_fields(state: State, party: Contact | Company, fields: dict[str, Any]) -> None:
    """Set contact or company fields (a contact's name follows first/last name changes)."""
    is_contact = isinstance(party, Contact)
    allowed = CONTACT_FIELDS if is_contact else COMPANY_FIELDS
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(
            f"unknown {'contact' if is_contact else 'company'} fields {sorted(unknown)}"
        )
    for name in allowed - {"custom_fields"}:
        if name in fields:
            setattr(party, name, fields[name])
    if isinstance(party, Contact) and "name" not in fields:
        if "first_name" in fields or "last_name" in fields:
            party.name = f"{party.first_name} {party.last_name}".strip()
    kind: Kind = "contacts" if is_contact else "companies"
    apply_custom_fields(state, party.custom_fields, kind, fields.get("custom_fields"))


def apply_custom_fields(
    state: State,
    target: dict[int, list[Value]],
    kind: Kind,
    changes: dict[Any, Any] | None,
) -> None:
    """Apply ``{field_id: value}``; None or [] clears the field, a list gives several values
    (see :func:`kommo_sim.fields.coerce` for what each type takes)."""
    fields = state.fields_of(kind)
    for key, value in (changes or {}).items():
        field = fields.get(int(key))
        if field is None:
            raise ValueError(f"no {kind} custom field {key}")
        if value is None or value == []:
            target.pop(field.id, None)
            continue
        items = value if isinstance(value, list) else [value]
        target[field.id] = [coerce(field, item, state.account) for item in items]
