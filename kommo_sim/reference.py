"""The account's reference data as API v4 JSON: account, pipelines, users, custom field
definitions, loss reasons (key order as in the fixtures)."""

from __future__ import annotations

from typing import Any

from kommo_sim.state import CustomField, LossReason, Pipeline, State, User

JSON = dict[str, Any]


def link(href: str) -> JSON:
    return {"self": {"href": href}}


def account(state: State, base: str, with_datetime: bool) -> JSON:
    acc = state.account
    body: JSON = {
        "id": acc.id,
        "name": acc.name,
        "subdomain": acc.subdomain,
        "created_at": acc.created_at,
        "created_by": 0,
        "updated_at": acc.created_at,
        "updated_by": 0,
        "current_user_id": state.users[0].id,
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
                "timezone": acc.timezone,
                "timezone_offset": acc.timezone_offset,
            }
        }
    return body


def pipeline(state: State, p: Pipeline, base: str) -> JSON:
    account_id = state.account.id
    href = f"{base}/api/v4/leads/pipelines/{p.id}"
    return {
        "id": p.id,
        "name": p.name,
        "sort": p.sort,
        "is_main": p.is_main,
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
                for s in p.statuses
            ]
        },
    }


def user(u: User, base: str) -> JSON:
    level = "A" if u.is_admin else "M"
    entity = {"view": level, "edit": level, "add": "A", "delete": level, "export": level}
    return {
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "lang": "en",
        "rights": {
            "leads": dict(entity),
            "contacts": dict(entity),
            "companies": dict(entity),
            "tasks": {"edit": level, "delete": level},
            "mail_access": True,
            "catalog_access": True,
            "status_rights": None,
            "is_admin": u.is_admin,
            "is_free": False,
            "is_active": True,
            "group_id": None,
            "role_id": None,
        },
        "_links": link(f"{base}/api/v4/users/{u.id}"),
    }


def custom_field(state: State, field: CustomField, base: str) -> JSON:
    """A definition, key by key as fixtures/api/leads_custom_fields.json."""
    enums = (
        None
        if field.enums is None
        else [{"id": o.id, "value": o.value, "sort": o.sort} for o in field.enums]
    )
    return {
        "id": field.id,
        "name": field.name,
        "type": field.type,
        "account_id": state.account.id,
        "code": field.code,
        "sort": field.sort,
        "is_api_only": False,
        "enums": enums,
        "group_id": None,
        "required_statuses": [],
        "is_deletable": field.code not in ("PHONE", "EMAIL"),
        "is_predefined": field.code is not None,
        "entity_type": field.entity_type,
        "tracking_callback": None,
        "remind": field.remind,
        "triggers": [],
        "currency": field.currency,
        "hidden_statuses": [],
        "chained_lists": None,
        "_links": link(f"{base}/api/v4/{field.entity_type}/custom_fields/{field.id}"),
    }


def loss_reason(reason: LossReason, base: str) -> JSON:
    return {
        "id": reason.id,
        "name": reason.name,
        "sort": reason.sort,
        "created_at": reason.created_at,
        "updated_at": reason.updated_at,
        "_links": link(f"{base}/api/v4/leads/loss_reasons/{reason.id}"),
    }
