"""Query-string parsing for list endpoints: paging, ``with``, filters and ordering (API.md §2)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from kommo_sim.state import Table

_ID_KEY = re.compile(r"^filter\[id\](\[\d*\])?$")
_RANGE_KEY = re.compile(r"^filter\[(updated_at|created_at)\](?:\[(from|to)\])?$")
_ORDER_KEY = re.compile(r"^order\[(\w+)\]$")
_LIST_KEY = re.compile(r"^filter\[(type|entity|entity_id|created_by)\](\[\d*\])?$")


class BadRequest(ValueError):
    """A malformed query parameter; answered with 400 problem+json."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(detail)
        self.path = path
        self.detail = detail


@dataclass
class ListQuery:
    page: int
    limit: int
    with_: frozenset[str]
    ids: frozenset[int] | None
    updated: tuple[int | None, int | None]
    created: tuple[int | None, int | None]
    order: tuple[str, bool] | None  # (field, descending)
    lists: dict[str, list[str]]  # filter[type] / filter[entity] / filter[entity_id] values
    rest: list[tuple[str, str]]  # every parameter except page and limit, in order

    def query_string(self, page: int | None = None) -> str:
        return urlencode(self.rest + [("page", str(page or self.page)), ("limit", str(self.limit))])


def _int(path: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(path, "This value should be of type int.") from None


def parse(
    params: Sequence[tuple[str, str]],
    max_limit: int,
    order_fields: Collection[str] = ("updated_at", "id", "created_at"),
    default_limit: int = 50,
) -> ListQuery:
    page, limit = 1, default_limit
    with_: set[str] = set()
    ids: set[int] | None = None
    ranges: dict[str, list[int | None]] = {"updated_at": [None, None], "created_at": [None, None]}
    order: tuple[str, bool] | None = None
    lists: dict[str, list[str]] = {}
    rest: list[tuple[str, str]] = []
    for key, value in params:
        if key == "page":
            page = _int(key, value)
            if page < 1:
                raise BadRequest(key, "This value should be greater than 0.")
            continue
        if key == "limit":
            limit = _int(key, value)
            if limit < 1:
                raise BadRequest(key, "This value should be greater than 0.")
            limit = min(limit, max_limit)
            continue
        rest.append((key, value))
        if key == "with":
            with_.update(v.strip() for v in value.split(",") if v.strip())
        elif _ID_KEY.match(key):
            ids = ids or set()
            ids.update(_int(key, v) for v in value.split(",") if v.strip())
        elif m := _RANGE_KEY.match(key):
            bounds = ranges[m[1]]
            if m[2] in ("from", None):
                bounds[0] = _int(key, value)
            if m[2] == "to":
                bounds[1] = _int(key, value)
        elif m := _ORDER_KEY.match(key):
            if m[1] not in order_fields or value not in ("asc", "desc"):
                raise BadRequest(key, "Invalid sort field or direction.")
            order = (m[1], value == "desc")
        elif m := _LIST_KEY.match(key):
            lists.setdefault(m[1], []).extend(v for v in value.split(",") if v)
    return ListQuery(
        page,
        limit,
        frozenset(with_),
        None if ids is None else frozenset(ids),
        (ranges["updated_at"][0], ranges["updated_at"][1]),
        (ranges["created_at"][0], ranges["created_at"][1]),
        order,
        lists,
        rest,
    )


def select(table: Table[Any], q: ListQuery, deleted: bool = False) -> list[int]:
    """Ids matching the query's filters, in its order (id ascending by default)."""
    rows = table.rows
    lo, hi = q.updated
    field, descending = q.order or ("id", False)
    if field == "updated_at":
        ids = table.by_updated(lo, hi, descending)
    elif q.ids is not None:
        ids = sorted((i for i in q.ids if i in rows), reverse=descending)
    else:
        ids = list(reversed(rows)) if descending else list(rows)
    if q.ids is not None and field == "updated_at":
        wanted = q.ids
        ids = [i for i in ids if i in wanted]
    chosen = [i for i in ids if i in rows and rows[i].is_deleted == deleted]
    if field != "updated_at" and (lo is not None or hi is not None):
        chosen = [
            i
            for i in chosen
            if (lo is None or rows[i].updated_at >= lo) and (hi is None or rows[i].updated_at <= hi)
        ]
    clo, chi = q.created
    if clo is not None or chi is not None:
        chosen = [
            i
            for i in chosen
            if (clo is None or rows[i].created_at >= clo)
            and (chi is None or rows[i].created_at <= chi)
        ]
    if field == "created_at":
        chosen.sort(key=lambda i: (rows[i].created_at, i), reverse=descending)
    return chosen
