"""The events log behind ``GET /api/v4/events`` (API.md §6)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ENTITY_PATH = {"lead": "leads", "contact": "contacts", "company": "companies"}


@dataclass(frozen=True)
class Event:
    seq: int
    id: str
    type: str
    entity_id: int
    entity_type: str
    created_by: int
    created_at: int
    value_after: list[dict[str, Any]]
    value_before: list[dict[str, Any]]

    def to_json(self, account_id: int, base: str) -> dict[str, Any]:
        entity_href = f"{base}/api/v4/{ENTITY_PATH[self.entity_type]}/{self.entity_id}"
        return {
            "id": self.id,
            "type": self.type,
            "entity_id": self.entity_id,
            "entity_type": self.entity_type,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "value_after": self.value_after,
            "value_before": self.value_before,
            "account_id": account_id,
            "_links": {"self": {"href": f"{base}/api/v4/events/{self.id}"}},
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
    ascending: bool = False


def _event_id(seq: int, created_at: int) -> str:
    """A 26-character ULID-like id: time first, then the sequence number."""
    number = (created_at * 1000) << 80 | seq
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[number & 31])
        number >>= 5
    return "".join(reversed(chars))


class EventLog:
    def __init__(self) -> None:
        self.events: list[Event] = []

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
            _event_id(seq, created_at),
            type_,
            entity_id,
            entity_type,
            created_by,
            created_at,
            after or [],
            before or [],
        )
        self.events.append(event)
        return event

    def query(self, q: EventQuery) -> list[Event]:
        """Matching events, newest first unless ``q.ascending``."""
        found: Iterable[Event] = self.events
        if q.types is not None:
            types = q.types
            found = (e for e in found if e.type in types or _field_type(e, types))
        if q.entities is not None:
            entities = q.entities
            found = (e for e in found if e.entity_type in entities)
        if q.entity_ids is not None:
            ids = q.entity_ids
            found = (e for e in found if e.entity_id in ids)
        if q.created_from is not None:
            lo = q.created_from
            found = (e for e in found if e.created_at >= lo)
        if q.created_to is not None:
            hi = q.created_to
            found = (e for e in found if e.created_at <= hi)
        result = sorted(found, key=lambda e: (e.created_at, e.seq), reverse=not q.ascending)
        return result


def _field_type(event: Event, types: frozenset[str]) -> bool:
    """``custom_field_<ID>_value_changed`` selects value changes of one field."""
    if event.type != "custom_field_value_changed" or not event.value_after:
        return False
    field_id = event.value_after[0]["custom_field_value"]["field_id"]
    return f"custom_field_{field_id}_value_changed" in types
