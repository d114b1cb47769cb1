"""Kommo's API objects made into :mod:`service.records`: the one place that reads their shape.

Everything Kommo sends is taken as it comes: ``custom_fields_values`` may be ``null``,
numbers may arrive as strings, ``_embedded`` lists may be missing. An object without an
``id`` or ``updated_at`` is not an entity and raises :class:`ValueError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from service.kinds import EntityKind
from service.kommo import fields
from service.records import (
    CustomField,
    Event,
    FieldOption,
    LossReason,
    Pipeline,
    Record,
    Status,
    TagRef,
    User,
)

JSON = Mapping[str, Any]


def strip_links(value: Any) -> Any:
    """Kommo's ``_links`` echo each request's query string: keep them out of the stored copy."""
    if isinstance(value, dict):
        return {k: strip_links(v) for k, v in value.items() if k != "_links"}
    if isinstance(value, list):
        return [strip_links(v) for v in value]
    return value


def embedded(obj: JSON, key: str) -> list[dict[str, Any]]:
    return list((obj.get("_embedded") or {}).get(key) or [])


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _value(kind: str, value: Any) -> Any:
    if kind == "text":
        return "" if value is None else str(value)
    if kind == "bool":
        return bool(value)
    return _int(value)


def record(kind: EntityKind, obj: JSON) -> Record:
    """One lead, contact, … as the mirror writes it."""
    row = tuple(_value(c.type, obj.get(c.name)) for c in kind.columns)
    links: dict[str, tuple[tuple[int, bool], ...]] = {}
    for link in kind.links:  # a list Kommo did not send is unknown, not empty
        if link.embedded in (obj.get("_embedded") or {}):
            links[link.embedded] = tuple(
                (int(x["id"]), bool(x.get("is_main"))) for x in embedded(obj, link.embedded)
            )
    return Record(
        kind=kind,
        id=int(obj["id"]),
        updated_at=int(obj["updated_at"]),
        row=row,
        custom_fields=json.dumps(obj.get("custom_fields_values") or []),
        raw=json.dumps(strip_links(obj)),
        tags=tuple(tag(t) for t in embedded(obj, "tags")) if kind.tag_table else (),
        links=links,
        phones=tuple(fields.multitext(obj, "PHONE")) if kind.phones_table else (),
        emails=tuple(fields.multitext(obj, "EMAIL")) if kind.emails_table else (),
        values=fields.values_of(obj),
        loss_reason=next((loss_reason(r) for r in embedded(obj, "loss_reason")), None),
    )


def records(kind: EntityKind, objs: Iterable[JSON]) -> list[Record]:
    return [record(kind, o) for o in objs]


def linked_ids(obj: JSON, key: str) -> set[int]:
    """Ids listed in ``_embedded[key]`` (e.g. the leads of a contact read ``with=leads``)."""
    return {int(x["id"]) for x in embedded(obj, key)}


def phones_of(obj: JSON) -> list[tuple[str, str | None]]:
    """The (raw value, enum code) of every PHONE value, in Kommo's order."""
    return fields.multitext(obj, "PHONE")


def tag(obj: JSON) -> TagRef:
    return TagRef(int(obj["id"]), str(obj.get("name") or ""), obj.get("color"))


def event(obj: JSON) -> Event:
    linked = []
    for value in [*(obj.get("value_after") or []), *(obj.get("value_before") or [])]:
        target = (value.get("link") or {}).get("entity") or {} if isinstance(value, dict) else {}
        if target.get("type") and target.get("id") is not None:
            linked.append((str(target["type"]), int(target["id"])))
    return Event(
        str(obj["id"]),
        str(obj["type"]),
        str(obj.get("entity_type")),
        int(obj["entity_id"]),
        int(obj["created_at"]),
        tuple(linked),
        _int(obj.get("created_by")),
        _status(obj.get("value_before")),
        _status(obj.get("value_after")),
    )


def _status(values: Any) -> tuple[int, int] | None:
    """``[{"lead_status": {"id": S, "pipeline_id": P}}]`` → (P, S)."""
    for value in values or []:
        status = value.get("lead_status") if isinstance(value, dict) else None
        if isinstance(status, dict) and status.get("id") is not None:
            return int(status.get("pipeline_id") or 0), int(status["id"])
    return None


def loss_reason(obj: JSON) -> LossReason:
    return LossReason(
        int(obj["id"]),
        str(obj.get("name") or ""),
        int(obj.get("sort") or 0),
        json.dumps(strip_links(obj)),
    )


def custom_field(entity_type: str, obj: JSON) -> CustomField:
    options = tuple(
        FieldOption(int(e["id"]), str(e.get("value") or ""), int(e.get("sort") or 0))
        for e in obj.get("enums") or []
        if isinstance(e, dict) and e.get("id") is not None
    )
    return CustomField(
        entity_type,
        int(obj["id"]),
        str(obj.get("name") or ""),
        str(obj.get("type") or ""),
        obj.get("code"),
        int(obj.get("sort") or 0),
        json.dumps(strip_links(obj)),
        options,
    )


def pipeline(obj: JSON) -> Pipeline:
    pid = int(obj["id"])
    statuses = tuple(
        Status(
            pid,
            int(s["id"]),
            str(s.get("name") or ""),
            int(s.get("sort") or 0),
            s.get("color"),
            int(s.get("type") or 0),
            bool(s.get("is_editable", True)),
            json.dumps(strip_links(s)),
        )
        for s in embedded(obj, "statuses")
    )
    return Pipeline(
        pid,
        str(obj.get("name") or ""),
        int(obj.get("sort") or 0),
        bool(obj.get("is_main")),
        bool(obj.get("is_archive")),
        json.dumps(strip_links(obj)),
        statuses,
    )


def user(obj: JSON) -> User:
    return User(
        int(obj["id"]),
        str(obj.get("name") or ""),
        obj.get("email"),
        bool((obj.get("rights") or {}).get("is_active", True)),
        json.dumps(strip_links(obj)),
    )
