"""Entities as Kommo API v4 JSON objects, with Kommo's key order."""

from __future__ import annotations

from typing import Any

from kommo_sim.state import Contact, CustomField, Lead, Pipeline, State, Tag, User

JSON = dict[str, Any]


def link(href: str) -> JSON:
    return {"self": {"href": href}}


def custom_fields_values(
    values: dict[int, list[dict[str, Any]]], fields: dict[int, CustomField]
) -> list[JSON] | None:
    if not values:
        return None
    out: list[JSON] = []
    for field_id in sorted(values, key=lambda f: fields[f].sort):
        field = fields[field_id]
        out.append(
            {
                "field_id": field.id,
                "field_name": field.name,
                "field_code": field.code,
                "field_type": field.type,
                "values": [dict(v) for v in values[field_id]],
            }
        )
    return out


def tag(t: Tag) -> JSON:
    return {"id": t.id, "name": t.name, "color": t.color}


class Renderer:
    """Builds API objects; ``base`` is the scheme and host that hrefs start with."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.lead_fields = state.fields_of("leads")
        self.contact_fields = state.fields_of("contacts")

    def lead(self, lead: Lead, base: str, query: str = "", with_contacts: bool = False) -> JSON:
        suffix = f"?{query}" if query else ""
        tags = self.state.lead_tags
        embedded: JSON = {
            "tags": [tag(tags[t]) for t in lead.tags if t in tags],
            "companies": []
            if lead.company_id is None
            else [
                {
                    "id": lead.company_id,
                    "_links": link(f"{base}/api/v4/companies/{lead.company_id}{suffix}"),
                }
            ],
        }
        if with_contacts:
            contacts = self.state.contacts.rows
            embedded["contacts"] = [
                {
                    "id": cid,
                    "is_main": is_main,
                    "_links": link(f"{base}/api/v4/contacts/{cid}{suffix}"),
                }
                for cid, is_main in lead.contacts.items()
                if cid in contacts and not contacts[cid].is_deleted
            ]
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
            "custom_fields_values": custom_fields_values(lead.custom_fields, self.lead_fields),
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
        tags = self.state.contact_tags
        embedded: JSON = {
            "tags": [tag(tags[t]) for t in contact.tags if t in tags],
            "companies": [],
        }
        if with_leads:
            leads = self.state.leads.rows
            embedded["leads"] = [
                {"id": lid, "_links": link(f"{base}/api/v4/leads/{lid}{suffix}")}
                for lid in contact.leads
                if lid in leads and not leads[lid].is_deleted
            ]
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
            "is_unsorted": False,
            "custom_fields_values": custom_fields_values(
                contact.custom_fields, self.contact_fields
            ),
            "account_id": self.state.account.id,
            "_links": link(f"{base}/api/v4/contacts/{contact.id}{suffix}"),
            "_embedded": embedded,
        }

    def account(self, base: str, with_datetime: bool) -> JSON:
        account = self.state.account
        body: JSON = {
            "id": account.id,
            "name": account.name,
            "subdomain": account.subdomain,
            "created_at": account.created_at,
            "created_by": 0,
            "updated_at": account.created_at,
            "updated_by": 0,
            "current_user_id": self.state.users[0].id,
            "country": "PE",
            "currency": "PEN",
            "currency_symbol": "S/",
            "customers_mode": "disabled",
            "is_unsorted_on": True,
            "is_loss_reason_enabled": True,
            "is_helpbot_enabled": False,
            "is_technical_account": False,
            "contact_name_display_order": 1,
            "_links": link(f"{base}/api/v4/account"),
        }
        if with_datetime:
            body["_embedded"] = {
                "datetime_settings": {
                    "date_pattern": "d.m.Y H:i",
                    "short_date_pattern": "d.m.Y",
                    "short_time_pattern": "H:i",
                    "date_formant": "d.m.Y",
                    "time_format": "H:i:s",
                    "timezone": account.timezone,
                    "timezone_offset": account.timezone_offset,
                }
            }
        return body

    def pipeline(self, pipeline: Pipeline, base: str) -> JSON:
        account_id = self.state.account.id
        href = f"{base}/api/v4/leads/pipelines/{pipeline.id}"
        return {
            "id": pipeline.id,
            "name": pipeline.name,
            "sort": pipeline.sort,
            "is_main": pipeline.is_main,
            "is_unsorted_on": True,
            "is_archive": False,
            "account_id": account_id,
            "_links": link(href),
            "_embedded": {
                "statuses": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "sort": s.sort,
                        "is_editable": s.is_editable,
                        "pipeline_id": s.pipeline_id,
                        "color": s.color,
                        "type": s.type,
                        "account_id": account_id,
                        "_links": link(f"{href}/statuses/{s.id}"),
                    }
                    for s in pipeline.statuses
                ]
            },
        }

    def user(self, user: User, base: str) -> JSON:
        level = "A" if user.is_admin else "M"
        entity = {"view": level, "edit": level, "add": "A", "delete": level, "export": level}
        return {
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "lang": "en",
            "rights": {
                "leads": dict(entity),
                "contacts": dict(entity),
                "companies": dict(entity),
                "tasks": {"edit": level, "delete": level},
                "mail_access": True,
                "catalog_access": True,
                "status_rights": None,
                "is_admin": user.is_admin,
                "is_free": False,
                "is_active": True,
                "group_id": None,
                "role_id": None,
            },
            "_links": link(f"{base}/api/v4/users/{user.id}"),
        }

    def custom_field(self, field: CustomField, base: str) -> JSON:
        enums = (
            None
            if field.enums is None
            else [{"id": e[0], "value": e[1], "sort": i + 1} for i, e in enumerate(field.enums)]
        )
        return {
            "id": field.id,
            "name": field.name,
            "type": field.type,
            "account_id": self.state.account.id,
            "code": field.code,
            "sort": field.sort,
            "is_api_only": False,
            "enums": enums,
            "group_id": None,
            "required_statuses": [],
            "is_deletable": field.code is None,
            "is_predefined": field.code is not None,
            "entity_type": field.entity_type,
            "tracking_callback": None,
            "remind": None,
            "triggers": [],
            "currency": None,
            "hidden_statuses": [],
            "chained_lists": None,
            "_links": link(f"{base}/api/v4/{field.entity_type}/custom_fields/{field.id}"),
        }
