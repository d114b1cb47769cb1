"""The simulated account's data: plain dataclasses kept in dicts by id.

Custom-field values are stored already in the API shape (``{"value": …, "enum_id": …}``),
keyed by field id, so rendering a lead is a few dict builds. Lists ordered by
``(updated_at, id)`` use a sorted index that is rebuilt lazily after a change.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

Kind = Literal["leads", "contacts"]
Value = dict[str, Any]


@dataclass
class User:
    id: int
    name: str
    email: str
    is_admin: bool


@dataclass
class Status:
    id: int
    name: str
    sort: int
    pipeline_id: int
    color: str
    type: int
    is_editable: bool


@dataclass
class Pipeline:
    id: int
    name: str
    sort: int
    is_main: bool
    statuses: list[Status]


@dataclass
class Tag:
    id: int
    name: str
    color: str | None


@dataclass
class CustomField:
    id: int
    name: str
    type: str
    code: str | None
    sort: int
    entity_type: Kind
    enums: list[tuple[int, str, str | None]] | None = None  # (id, value, code)

    def enum_by_value(self, value: str) -> tuple[int, str, str | None]:
        for enum in self.enums or []:
            if enum[1] == value or enum[2] == value:
                return enum
        raise ValueError(f"field {self.id} has no enum {value!r}")

    def enum_by_id(self, enum_id: int) -> tuple[int, str, str | None]:
        for enum in self.enums or []:
            if enum[0] == enum_id:
                return enum
        raise ValueError(f"field {self.id} has no enum id {enum_id}")


@dataclass
class Lead:
    id: int
    name: str
    price: int
    responsible_user_id: int
    status_id: int
    pipeline_id: int
    created_by: int
    updated_by: int
    created_at: int
    updated_at: int
    closed_at: int | None = None
    loss_reason_id: int | None = None
    group_id: int = 0
    company_id: int | None = None
    custom_fields: dict[int, list[Value]] = field(default_factory=dict)
    tags: list[int] = field(default_factory=list)
    contacts: dict[int, bool] = field(default_factory=dict)  # contact id -> is_main
    is_deleted: bool = False

    def clone(self) -> Lead:
        return replace(
            self,
            custom_fields={k: [dict(v) for v in vs] for k, vs in self.custom_fields.items()},
            tags=list(self.tags),
            contacts=dict(self.contacts),
        )


@dataclass
class Contact:
    id: int
    name: str
    first_name: str
    last_name: str
    responsible_user_id: int
    created_by: int
    updated_by: int
    created_at: int
    updated_at: int
    group_id: int = 0
    custom_fields: dict[int, list[Value]] = field(default_factory=dict)
    tags: list[int] = field(default_factory=list)
    leads: dict[int, None] = field(default_factory=dict)  # linked lead ids, in link order
    is_deleted: bool = False

    def clone(self) -> Contact:
        return replace(
            self,
            custom_fields={k: [dict(v) for v in vs] for k, vs in self.custom_fields.items()},
            tags=list(self.tags),
            leads=dict(self.leads),
        )


E = TypeVar("E", Lead, Contact)


class Table(Generic[E]):
    """Entities by id (insertion order = id order) plus a lazy (updated_at, id) index."""

    def __init__(self) -> None:
        self.rows: dict[int, E] = {}
        self._by_updated: list[tuple[int, int]] = []
        self._dirty = True

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[E]:
        return iter(self.rows.values())

    def get(self, entity_id: int) -> E | None:
        return self.rows.get(entity_id)

    def put(self, entity: E) -> None:
        self.rows[entity.id] = entity
        self._dirty = True

    def touched(self) -> None:
        """Mark the updated_at index stale after an entity's updated_at changed."""
        self._dirty = True

    def by_updated(
        self, lo: int | None = None, hi: int | None = None, descending: bool = False
    ) -> Iterable[int]:
        """Ids ordered by (updated_at, id) with lo <= updated_at <= hi."""
        if self._dirty:
            self._by_updated = sorted((e.updated_at, e.id) for e in self.rows.values())
            self._dirty = False
        index = self._by_updated
        start = 0 if lo is None else bisect.bisect_left(index, (lo, -1))
        stop = len(index) if hi is None else bisect.bisect_right(index, (hi, 1 << 62))
        window = index[start:stop]
        if descending:
            window.reverse()
        return [entity_id for _, entity_id in window]


@dataclass
class Account:
    id: int
    name: str
    subdomain: str
    created_at: int
    timezone: str = "America/Lima"
    timezone_offset: str = "-05:00"


@dataclass
class State:
    """Everything the simulated Kommo account holds."""

    account: Account
    users: list[User]
    pipelines: list[Pipeline]
    lead_fields: list[CustomField]
    contact_fields: list[CustomField]
    lead_tags: dict[int, Tag] = field(default_factory=dict)
    contact_tags: dict[int, Tag] = field(default_factory=dict)
    leads: Table[Lead] = field(default_factory=Table)
    contacts: Table[Contact] = field(default_factory=Table)
    next_ids: dict[str, int] = field(default_factory=dict)

    def new_id(self, kind: str) -> int:
        value = self.next_ids[kind]
        self.next_ids[kind] = value + 1
        return value

    def tags_of(self, kind: Kind) -> dict[int, Tag]:
        return self.lead_tags if kind == "leads" else self.contact_tags

    def fields_of(self, kind: Kind) -> dict[int, CustomField]:
        fields = self.lead_fields if kind == "leads" else self.contact_fields
        return {f.id: f for f in fields}

    def tag_by_name(self, kind: Kind, name: str) -> Tag:
        """The tag called ``name`` in the kind's dictionary, created if missing."""
        tags = self.tags_of(kind)
        for tag in tags.values():
            if tag.name == name:
                return tag
        tag = Tag(self.new_id(f"{kind}_tag"), name, None)
        tags[tag.id] = tag
        return tag

    def status(self, pipeline_id: int, status_id: int) -> Status:
        for pipeline in self.pipelines:
            if pipeline.id == pipeline_id:
                for status in pipeline.statuses:
                    if status.id == status_id:
                        return status
        raise ValueError(f"no status {status_id} in pipeline {pipeline_id}")

    def user_ids(self) -> list[int]:
        return [u.id for u in self.users]
