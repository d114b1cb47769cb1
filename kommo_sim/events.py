"""The events log behind ``GET /api/v4/events`` (API.md §6)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ENTITY_PATH = {"lead": "leads", "contact": "contacts", "company": "companies"}


@dataclass(frozen=True)
class Event:
    seq: int
    type: str
    entity_id: int
    entity_type: str
    created_by: int
    created_at: int
    value_after: list[dict[str, Any]]
    value_before: list[dict[str, Any]]

    @property
    def id(self) -> str:
        """The opaque string id, derived from the time and the sequence number."""
        return event_id(self.seq, self.created_at)

    def to_json(self, account_id: int, base: str) -> dict[str, Any]:
        entity_href = f"{base}/api/v4/{ENTITY_PATH[self.entity_type]}/{self.entity_id}"
        event_id = self.id
        return {
            "id": event_id,
            "type": self.type,
            "entity_id": self.entity_id,
            "entity_type": self.entity_type,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "value_after": self.value_after,
            "value_before": self.value_before,
            "account_id": account_id,
            "_links": {"self": {"href": f"{base}/api/v4/events/{event_id}"}},
            "_embedded": {
                "entity": {"id": self.entity_id, "_links": {"self": {"href": entity_href}}}
            },
        }


@dataclass(frozen=True)
class EventQuery:
    types: frozenset[str] | None = None
    entities: frozenset[str] | None = None
    entity_ids: frozenset[int] | None = None
    created_from: int | None = None
    created_to: int | None = None
    created_by: frozenset[int] | None = None
    ascending: bool = False


_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]  # 10 bits -> two characters
_SHIFTS = tuple(range(120, -1, -10))


def event_id(seq: int, created_at: int) -> str:
    """A 26-character ULID-like id: the time in milliseconds first, then the sequence."""
    number = (created_at * 1000) << 80 | seq
    return "".join([_PAIRS[(number >> shift) & 1023] for shift in _SHIFTS])


class EventLog:
    """Every event, in the order written (``events``), plus an index by (created_at, seq)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._by_id: dict[str, Event] = {}
        self._sorted: list[Event] = []
        self._keys: list[tuple[int, int]] = []
        self._dirty = False

    def __len__(self) -> int:
        return len(self.events)

    def add(
        self,
        type_: str,
        entity_type: str,
        entity_id: int,
        created_by: int,
        created_at: int,
        before: list[dict[str, Any]] | None = None,
        after: list[dict[str, Any]] | None = None,
    ) -> Event:
        seq = len(self.events) + 1
        event = Event(
            seq,
            type_,
            entity_id,
            entity_type,
            created_by,
            created_at,
            after or [],
            before or [],
        )
        self.events.append(event)
        key = (created_at, seq)
        if not self._dirty and (not self._keys or key > self._keys[-1]):
            self._sorted.append(event)
            self._keys.append(key)
        else:
            self._dirty = True  # written out of time order (seeded history): re-sort lazily
        return event

    def get(self, event_id: str) -> Event | None:
        """The event with this id (ids are indexed on first use, not on every write)."""
        for event in self.events[len(self._by_id) :]:
            self._by_id[event.id] = event
        return self._by_id.get(event_id)

    def query(self, q: EventQuery) -> list[Event]:
        """Matching events, newest first unless ``q.ascending`` (ties: the later write first)."""
        if self._dirty:
            self._sorted = sorted(self.events, key=lambda e: (e.created_at, e.seq))
            self._keys = [(e.created_at, e.seq) for e in self._sorted]
            self._dirty = False
        lo = 0 if q.created_from is None else bisect.bisect_left(self._keys, (q.created_from, 0))
        hi = (
            len(self._keys)
            if q.created_to is None
            else bisect.bisect_right(self._keys, (q.created_to, 1 << 62))
        )
        found: Iterable[Event] = self._sorted[lo:hi]
        if q.types is not None:
            types = q.types
            found = (e for e in found if e.type in types or _field_type(e, types))
        if q.entities is not None:
            entities = q.entities
            found = (e for e in found if e.entity_type in entities)
        if q.entity_ids is not None:
            ids = q.entity_ids
            found = (e for e in found if e.entity_id in ids)
        if q.created_by is not None:
            users = q.created_by
            found = (e for e in found if e.created_by in users)
        result = list(found)
        if not q.ascending:
            result.reverse()
        return result


def _field_type(event: Event, types: frozenset[str]) -> bool:
    """``custom_field_<ID>_value_changed`` selects value changes of one field."""
    if event.type != "custom_field_value_changed" or not event.value_after:
        return False
    field_id = event.value_after[0]["custom_field_value"]["field_id"]
    return f"custom_field_{field_id}_value_changed" in types
