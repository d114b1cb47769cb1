"""What the mirror writes, as plain values: Kommo's wire format stops at :mod:`service.kommo`.

The client parses every API object into one of these (:mod:`service.kommo.parse`); the store
writes them and the sync engine reasons about them, neither ever digging in ``_embedded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.kinds import EntityKind


@dataclass(frozen=True, slots=True)
class TagRef:
    id: int
    name: str
    color: str | None = None


@dataclass(frozen=True, slots=True)
class FieldValue:
    """One value of a custom field, typed by the field's type (design.md, custom_field_values)."""

    field_id: int
    position: int
    text: str | None  # the value as text (for every type: the raw value is never lost)
    number: Decimal | None = None  # numeric, price, monetary
    flag: bool | None = None  # checkbox
    at: float | None = None  # date, date_time, birthday (Unix s)
    enum_id: int | None = None  # select, multiselect, radiobutton, category, multitext
    enum_code: str | None = None  # multitext (WORK, MOB, ...)


@dataclass(frozen=True, slots=True)
class Record:
    """One lead, contact, … as Kommo returned it."""

    kind: EntityKind
    id: int
    updated_at: int
    row: tuple[Any, ...]  # the kind's columns, in declaration order
    custom_fields: str  # JSON text of custom_fields_values ([] when Kommo sends null)
    raw: str  # JSON text of the whole object, without the _links that echo each query
    tags: tuple[TagRef, ...] = ()
    links: Mapping[str, tuple[tuple[int, bool], ...]] = field(default_factory=dict)
    """``Link.embedded`` -> (target id, flag); a link absent here was not in the answer."""
    phones: tuple[tuple[str, str | None], ...] = ()  # (raw value, enum code), in Kommo's order
    emails: tuple[tuple[str, str | None], ...] = ()  # (raw value, enum code), in Kommo's order
    values: tuple[FieldValue, ...] = ()  # custom field values; none when Kommo sends null
    loss_reason: LossReason | None = None  # a lead read with=loss_reason

    def linked(self, embedded: str) -> tuple[int, ...]:
        return tuple(target for target, _ in self.links.get(embedded, ()))


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the events feed: what happened to which entity, and what it links to."""

    id: str
    type: str
    entity_type: str  # singular: "lead", "contact", …
    entity_id: int
    created_at: int
    linked: tuple[tuple[str, int], ...] = ()  # (entity_type, id) from link/unlink values
    created_by: int | None = None  # 0: a robot or automation
    status_before: tuple[int, int] | None = None  # (pipeline_id, status_id), status changes
    status_after: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Status:
    pipeline_id: int
    id: int
    name: str
    sort: int
    color: str | None
    type: int
    is_editable: bool
    raw: str


@dataclass(frozen=True, slots=True)
class Pipeline:
    id: int
    name: str
    sort: int
    is_main: bool
    is_archive: bool
    raw: str
    statuses: tuple[Status, ...] = ()


@dataclass(frozen=True, slots=True)
class LossReason:
    id: int
    name: str
    sort: int
    raw: str


@dataclass(frozen=True, slots=True)
class FieldOption:
    id: int
    value: str
    sort: int


@dataclass(frozen=True, slots=True)
class CustomField:
    """A custom field's definition (``/api/v4/{leads,contacts,companies}/custom_fields``)."""

    entity_type: str  # leads, contacts, companies
    id: int
    name: str
    type: str
    code: str | None
    sort: int
    raw: str
    options: tuple[FieldOption, ...] = ()


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    email: str | None
    is_active: bool
    raw: str
