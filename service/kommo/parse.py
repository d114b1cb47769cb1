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
from service.records import Event, Pipeline, Record, Status, TagRef, User

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
    for link in kind.links:
        if link.needs_with is None or link.embedded in (obj.get("_embedded") or {}):
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
        phones=tuple(phones_of(obj)) if kind.phones_table else (),
    )


def records(kind: EntityKind, objs: Iterable[JSON]) -> list[Record]:
    return [record(kind, o) for o in objs]


def linked_ids(obj: JSON, key: str) -> set[int]:
    """Ids listed in ``_embedded[key]`` (e.g. the leads of a contact read ``with=leads``)."""
    return {int(x["id"]) for x in embedded(obj, key)}


def phones_of(obj: JSON) -> list[tuple[str, str | None]]:
    """The (raw value, enum code) of every PHONE value, in Kommo's order."""
    found = []
    for cf in obj.get("custom_fields_values") or []:
        if cf.get("field_code") != "PHONE":
            continue
        for v in cf.get("values") or []:
            if v.get("value") not in (None, ""):
                code = v.get("enum_code") or v.get("enum")
                found.append((str(v["value"]), None if code is None else str(code)))
    return found


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
