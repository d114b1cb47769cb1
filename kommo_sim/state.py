"""The simulated account's data: plain dataclasses kept in dicts by id.

Custom-field values are stored per field id as small dicts close to the API shape
(``{"value": …}``, plus ``"enum_id"`` for fields with options); what depends on the field's
definition (its name, an option's text or code) is filled in when rendering, so renaming a
field or an option shows on every entity at once. Lists ordered by ``(updated_at, id)`` use a
sorted index that is rebuilt lazily after a change.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Generic, Literal, TypeVar

from kommo_sim.events import event_id

Kind = Literal["leads", "contacts", "companies"]
KINDS: tuple[Kind, ...] = ("leads", "contacts", "companies")
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
    type: int  # 1 = Incoming leads (unsorted), 0 = normal
    is_editable: bool


@dataclass
class Pipeline:
    id: int
    name: str
    sort: int
    is_main: bool
    statuses: list[Status]

    def first_open(self) -> Status:
        """The first normal stage (where a lead created without a status lands)."""
        return next((s for s in self.statuses if s.type == 0), self.statuses[0])

    def incoming(self) -> Status:
        return next((s for s in self.statuses if s.type == 1), self.statuses[0])


@dataclass
class Tag:
    id: int
    name: str
    color: str | None


@dataclass
class Option:
    """One option (enum) of a select, multiselect, radiobutton, category or multitext field."""

    id: int
    value: str
    sort: int
    code: str | None = None  # what values show as ``enum_code`` (multitext: the value itself)


@dataclass
class CustomField:
    id: int
    name: str
    type: str
    code: str | None
    sort: int
    entity_type: Kind
    enums: list[Option] | None = None
    currency: str | None = None  # monetary fields
    remind: str | None = None  # birthday fields

    def option(self, key: int | str) -> Option:
        """The option with this id, or with this text or code."""
        for option in self.enums or []:
            if option.id == key or option.value == key or (option.code and option.code == key):
                return option
        raise ValueError(f"field {self.id} has no option {key!r}")


@dataclass(frozen=True)
class Incoming:
    """What makes a lead in an Incoming-leads stage an unsorted entry (API.md §7.2 unsorted)."""

    uid: str
    category: str  # forms | sip | mail | chats
    source: str
    created_at: int


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
    incoming: Incoming | None = None

    def clone(self) -> Lead:
        return replace(
            self,
            custom_fields=_copy_values(self.custom_fields),
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
    company_id: int | None = None
    is_deleted: bool = False
    legacy_enum: bool = False  # multitext values carry the doc example's "enum" key
    is_unsorted: bool = False  # came with an incoming lead not yet accepted

    def clone(self) -> Contact:
        return replace(
            self,
            custom_fields=_copy_values(self.custom_fields),
            tags=list(self.tags),
            leads=dict(self.leads),
        )


@dataclass
class Company:
    id: int
    name: str
    responsible_user_id: int
    created_by: int
    updated_by: int
    created_at: int
    updated_at: int
    group_id: int = 0
    custom_fields: dict[int, list[Value]] = field(default_factory=dict)
    tags: list[int] = field(default_factory=list)
    leads: dict[int, None] = field(default_factory=dict)
    contacts: dict[int, None] = field(default_factory=dict)
    is_deleted: bool = False
    legacy_enum: bool = False

    def clone(self) -> Company:
        return replace(
            self,
            custom_fields=_copy_values(self.custom_fields),
            tags=list(self.tags),
            leads=dict(self.leads),
            contacts=dict(self.contacts),
        )


Entity = Lead | Contact | Company
E = TypeVar("E", Lead, Contact, Company)


def _copy_values(values: dict[int, list[Value]]) -> dict[int, list[Value]]:
    return {k: [dict(v) for v in vs] for k, vs in values.items()}


@dataclass
class LossReason:
    id: int
    name: str
    sort: int
    created_at: int
    updated_at: int


@dataclass(frozen=True)
class StatusChange:
    """One stage move, exactly as its ``lead_status_changed`` event tells it."""

    event_seq: int  # the event's sequence number: its id is derived from it and changed_at
    lead_id: int
    changed_at: int
    changed_by: int
    pipeline_id_before: int
    status_id_before: int
    pipeline_id: int
    status_id: int

    @property
    def event_id(self) -> str:
        return event_id(self.event_seq, self.changed_at)

    def as_dict(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["event_seq"]
        return {"event_id": self.event_id, **fields}


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


# The simulator's account time zones have had no daylight saving time for years, so a fixed
# offset is exact (and needs no tz database on the machine).
TIMEZONES = {
    "America/Lima": -5 * 3600,
    "America/Bogota": -5 * 3600,
    "America/Mexico_City": -6 * 3600,
    "America/Sao_Paulo": -3 * 3600,
    "Europe/Moscow": 3 * 3600,
    "Asia/Kolkata": 5 * 3600 + 1800,
    "UTC": 0,
}


@dataclass
class Account:
    id: int
    name: str
    subdomain: str
    created_at: int
    timezone: str = "America/Lima"

    @property
    def utc_offset(self) -> int:
        return TIMEZONES[self.timezone]

    @property
    def timezone_offset(self) -> str:
        minutes = abs(self.utc_offset) // 60
        sign = "-" if self.utc_offset < 0 else "+"
        return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def midnight(self, timestamp: int) -> int:
        """The start of the account-local day holding ``timestamp`` (date-only fields)."""
        offset = self.utc_offset
        return (timestamp + offset) // 86400 * 86400 - offset


@dataclass
class State:
    """Everything the simulated Kommo account holds."""

    account: Account
    users: list[User]
    pipelines: list[Pipeline]
    fields: dict[Kind, dict[int, CustomField]]
    tags: dict[Kind, dict[int, Tag]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    leads: Table[Lead] = field(default_factory=Table)
    contacts: Table[Contact] = field(default_factory=Table)
    companies: Table[Company] = field(default_factory=Table)
    loss_reasons: dict[int, LossReason] = field(default_factory=dict)
    status_changes: list[StatusChange] = field(default_factory=list)
    next_ids: dict[str, int] = field(default_factory=dict)

    @property
    def lead_tags(self) -> dict[int, Tag]:
        return self.tags["leads"]

    @property
    def contact_tags(self) -> dict[int, Tag]:
        return self.tags["contacts"]

    @property
    def company_tags(self) -> dict[int, Tag]:
        return self.tags["companies"]

    def new_id(self, kind: str) -> int:
        value = self.next_ids[kind]
        self.next_ids[kind] = value + 1
        return value

    def tags_of(self, kind: Kind) -> dict[int, Tag]:
        return self.tags[kind]

    def fields_of(self, kind: Kind) -> dict[int, CustomField]:
        """The kind's field definitions (the live dict), in definition order."""
        return self.fields[kind]

    def table(self, kind: Kind) -> Table[Any]:
        tables: dict[str, Table[Any]] = {
            "leads": self.leads,
            "contacts": self.contacts,
            "companies": self.companies,
        }
        return tables[kind]

    def tag_by_name(self, kind: Kind, name: str) -> Tag:
        """The tag called ``name`` in the kind's dictionary, created if missing."""
        tags = self.tags_of(kind)
        for tag in tags.values():
            if tag.name == name:
                return tag
        tag = Tag(self.new_id(f"{kind}_tag"), name, None)
        tags[tag.id] = tag
        return tag

    def pipeline(self, pipeline_id: int) -> Pipeline:
        for pipeline in self.pipelines:
            if pipeline.id == pipeline_id:
                return pipeline
        raise ValueError(f"no pipeline {pipeline_id}")

    def status(self, pipeline_id: int, status_id: int) -> Status:
        for status in self.pipeline(pipeline_id).statuses:
            if status.id == status_id:
                return status
        raise ValueError(f"no status {status_id} in pipeline {pipeline_id}")

    def user_ids(self) -> list[int]:
        return [u.id for u in self.users]
