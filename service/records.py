"""What the mirror writes, as plain values: Kommo's wire format stops at :mod:`service.kommo`.

The client parses every API object into one of these (:mod:`service.kommo.parse`); the store
writes them and the sync engine reasons about them, neither ever digging in ``_embedded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.kinds import EntityKind


@dataclass(frozen=True, slots=True)
class TagRef:
    id: int
    name: str
    color: str | None = None


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
class User:
    id: int
    name: str
    email: str | None
    is_active: bool
    raw: str
