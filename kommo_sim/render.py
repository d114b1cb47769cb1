"""Leads, contacts and companies as Kommo API v4 JSON objects, with Kommo's key order.

Reference data (account, pipelines, users, field definitions, loss reasons) is rendered by
:mod:`kommo_sim.reference`; :class:`Renderer` offers both.
"""

from __future__ import annotations

from typing import Any

from kommo_sim import reference
from kommo_sim.fields import api_value
from kommo_sim.reference import JSON, link
from kommo_sim.state import (
    Company,
    Contact,
    CustomField,
    Lead,
    LossReason,
    Pipeline,
    State,
    Tag,
    User,
    Value,
)

__all__ = ["JSON", "Renderer", "custom_fields_values", "link", "tag"]


def custom_fields_values(
    values: dict[int, list[Value]], fields: dict[int, CustomField], legacy_enum: bool = False
) -> list[JSON] | None:
    """The ``custom_fields_values`` array: null (never ``[]``) when nothing is filled."""
    shown = [fields[f] for f in values if f in fields]
    if not shown:
        return None
    if len(shown) > 1:
        shown.sort(key=lambda f: f.sort)
    out: list[JSON] = []
    for field in shown:
        stored = values[field.id]
        if field.enums is None:
            rendered = [{"value": v["value"]} for v in stored]
        else:
            maybe = (api_value(field, v, legacy_enum) for v in stored)
            rendered = [v for v in maybe if v is not None]
        out.append(
            {
                "field_id": field.id,
                "field_name": field.name,
                "field_code": field.code,
                "field_type": field.type,
                "values": rendered,
            }
        )
    return out


def tag(t: Tag) -> JSON:
    return {"id": t.id, "name": t.name, "color": t.color}


def _refs(kind: str, ids: Any, base: str, suffix: str) -> list[JSON]:
    return [{"id": i, "_links": link(f"{base}/api/v4/{kind}/{i}{suffix}")} for i in ids]


class Renderer:
    """Builds API objects; ``base`` is the scheme, host (and account prefix) hrefs start with."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._rows: dict[str, dict[int, Any]] = {
            "leads": state.leads.rows,
            "contacts": state.contacts.rows,
            "companies": state.companies.rows,
        }

    def _alive(self, kind: str, ids: Any) -> list[int]:
        rows = self._rows[kind]
        return [i for i in ids if i in rows and not rows[i].is_deleted]

    def _tags(self, kind: Any, ids: list[int]) -> list[JSON]:
        tags = self.state.tags_of(kind)
        return [tag(tags[t]) for t in ids if t in tags]

    def _company(self, company_id: int | None, base: str, suffix: str) -> list[JSON]:
        if company_id is None:
            return []
        return _refs("companies", self._alive("companies", (company_id,)), base, suffix)

    def lead(
        self,
        lead: Lead,
        base: str,
        query: str = "",
        with_contacts: bool = False,
        with_loss_reason: bool = False,
    ) -> JSON:
        suffix = f"?{query}" if query else ""
        embedded: JSON = {
            "tags": self._tags("leads", lead.tags),
            "companies": self._company(lead.company_id, base, suffix),
        }
        if with_contacts:
            embedded["contacts"] = [
                {
                    "id": cid,
                    "is_main": lead.contacts[cid],
                    "_links": link(f"{base}/api/v4/contacts/{cid}{suffix}"),
                }
                for cid in self._alive("contacts", lead.contacts)
            ]
        if with_loss_reason:
            reason = self.state.loss_reasons.get(lead.loss_reason_id or 0)
            embedded["loss_reason"] = (
                [] if reason is None else [reference.loss_reason(reason, base)]
            )
        return {
            "id": lead.id,
            "name": lead.name,
            "price": lead.price,
            "responsible_user_id": lead.responsible_user_id,
            "group_id": lead.group_id,
            "status_id": lead.status_id,
            "pipeline_id": lead.pipeline_id,
            "loss_reason_id": lead.loss_reason_id,
            "created_by": lead.created_by,
            "updated_by": lead.updated_by,
            "created_at": lead.created_at,
            "updated_at": lead.updated_at,
            "closed_at": lead.closed_at,
            "closest_task_at": None,
            "is_deleted": lead.is_deleted,
            "custom_fields_values": custom_fields_values(
                lead.custom_fields, self.state.fields_of("leads")
            ),
            "score": None,
            "account_id": self.state.account.id,
            "labor_cost": None,
            "_links": link(f"{base}/api/v4/leads/{lead.id}{suffix}"),
            "_embedded": embedded,
        }

    def trashed_lead(self, lead: Lead, base: str, query: str) -> JSON:
        return {
            "id": lead.id,
            "updated_at": lead.updated_at,
            "updated_by": lead.updated_by,
            "is_deleted": True,
            "_links": link(f"{base}/api/v4/leads/{lead.id}?{query}"),
        }

    def contact(
        self, contact: Contact, base: str, query: str = "", with_leads: bool = False
    ) -> JSON:
        suffix = f"?{query}" if query else ""
        embedded: JSON = {
            "tags": self._tags("contacts", contact.tags),
            "companies": self._company(contact.company_id, base, suffix),
        }
        if with_leads:
            embedded["leads"] = _refs("leads", self._alive("leads", contact.leads), base, suffix)
        return {
            "id": contact.id,
            "name": contact.name,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "responsible_user_id": contact.responsible_user_id,
            "group_id": contact.group_id,
            "created_by": contact.created_by,
            "updated_by": contact.updated_by,
            "created_at": contact.created_at,
            "updated_at": contact.updated_at,
            "closest_task_at": None,
            "is_deleted": contact.is_deleted,
            "is_unsorted": contact.is_unsorted,
            "custom_fields_values": custom_fields_values(
                contact.custom_fields, self.state.fields_of("contacts"), contact.legacy_enum
            ),
            "account_id": self.state.account.id,
            "_links": link(f"{base}/api/v4/contacts/{contact.id}{suffix}"),
            "_embedded": embedded,
        }

    def company(
        self,
        company: Company,
        base: str,
        query: str = "",
        with_leads: bool = False,
        with_contacts: bool = False,
    ) -> JSON:
        """A company: a contact's keys without first/last name and is_unsorted [A companies-api]."""
        suffix = f"?{query}" if query else ""
        embedded: JSON = {"tags": self._tags("companies", company.tags)}
        if with_leads:
            embedded["leads"] = _refs("leads", self._alive("leads", company.leads), base, suffix)
        if with_contacts:
            alive = self._alive("contacts", company.contacts)
            embedded["contacts"] = _refs("contacts", alive, base, suffix)
        return {
            "id": company.id,
            "name": company.name,
            "responsible_user_id": company.responsible_user_id,
            "group_id": company.group_id,
            "created_by": company.created_by,
            "updated_by": company.updated_by,
            "created_at": company.created_at,
            "updated_at": company.updated_at,
            "closest_task_at": None,
            "is_deleted": company.is_deleted,
            "custom_fields_values": custom_fields_values(
                company.custom_fields, self.state.fields_of("companies"), company.legacy_enum
            ),
            "account_id": self.state.account.id,
            "_links": link(f"{base}/api/v4/companies/{company.id}{suffix}"),
            "_embedded": embedded,
        }

    # ----- reference data -----

    def account(self, base: str, with_datetime: bool) -> JSON:
        return reference.account(self.state, base, with_datetime)

    def pipeline(self, pipeline: Pipeline, base: str) -> JSON:
        return reference.pipeline(self.state, pipeline, base)

    def user(self, user: User, base: str) -> JSON:
        return reference.user(user, base)

    def custom_field(self, field: CustomField, base: str) -> JSON:
        return reference.custom_field(self.state, field, base)

    def loss_reason(self, reason: LossReason, base: str) -> JSON:
        return reference.loss_reason(reason, base)
