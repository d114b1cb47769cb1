"""Custom field values as Kommo sends them, typed for ``custom_field_values``.

Real responses are loose: ``custom_fields_values`` is ``null`` when an entity has none, numbers
arrive as strings (``"14012"``, sometimes with spaces or a decimal comma), dates as epoch
integers (or their strings), checkboxes as booleans (``"1"``/``"0"`` in webhooks), the legacy
``enum`` key stands where ``enum_code`` should, and a field may come with an empty ``values``.
None of that may fail a batch or lose the raw value: a value that does not parse for its type
keeps its text (``FieldValue.text``) with the typed column empty, and the entity's raw copy
keeps everything.

Typing (design.md): ``numeric``, ``price``, ``monetary`` → number; ``checkbox`` → flag;
``date``, ``date_time``, ``birthday`` → at; ``select``, ``multiselect``, ``radiobutton``,
``category`` → enum id and the option's text; ``multitext`` → text and enum code; anything else
→ text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from service.records import FieldValue

NUMBER_TYPES = frozenset({"numeric", "price", "monetary"})
DATE_TYPES = frozenset({"date", "date_time", "birthday"})
OPTION_TYPES = frozenset({"select", "multiselect", "radiobutton", "category"})
_SPACES = re.compile(r"[\s\u00a0\u202f']")


def values_of(obj: Mapping[str, Any]) -> tuple[FieldValue, ...]:
    """Every value of every custom field of an API object, typed; () when there are none."""
    out: list[FieldValue] = []
    for cf in obj.get("custom_fields_values") or []:
        if not isinstance(cf, Mapping) or _int(cf.get("field_id")) is None:
            continue
        field_id, kind = int(cf["field_id"]), str(cf.get("field_type") or "")
        values = cf.get("values") or []
        if isinstance(values, Mapping):  # one documented example sends a single object
            values = [values]
        for position, value in enumerate(values):
            out.append(_typed(field_id, kind, position, value))
    return tuple(out)


def _typed(field_id: int, kind: str, position: int, value: Any) -> FieldValue:
    item = value if isinstance(value, Mapping) else {"value": value}
    raw = item.get("value")
    text = _text(raw)
    code = item.get("enum_code") or item.get("enum")
    enum_code = str(code) if code is not None and not _is_digits(code) else None
    enum_id = _int(item.get("enum_id"))
    if enum_id is None and _is_digits(item.get("enum")):  # webhook layout: enum holds the id
        enum_id = int(item["enum"])
    if kind in NUMBER_TYPES:
        return FieldValue(field_id, position, text, number=_number(raw))
    if kind == "checkbox":
        return FieldValue(field_id, position, text, flag=_flag(raw))
    if kind in DATE_TYPES:
        return FieldValue(field_id, position, text, at=_epoch(raw))
    if kind in OPTION_TYPES:
        return FieldValue(field_id, position, text, enum_id=enum_id, enum_code=enum_code)
    if kind == "multitext":
        return FieldValue(field_id, position, text, enum_id=enum_id, enum_code=enum_code)
    return FieldValue(field_id, position, text)


def multitext(obj: Mapping[str, Any], code: str) -> list[tuple[str, str | None]]:
    """The (raw value, enum code) of every value of the field with ``field_code`` ``code``
    (PHONE, EMAIL), in Kommo's order."""
    found = []
    for cf in obj.get("custom_fields_values") or []:
        if not isinstance(cf, Mapping) or cf.get("field_code") != code:
            continue
        for v in cf.get("values") or []:
            if isinstance(v, Mapping) and v.get("value") not in (None, ""):
                enum = v.get("enum_code") or v.get("enum")
                found.append((str(v["value"]), None if enum is None else str(enum)))
    return found


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _is_digits(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        or (isinstance(value, str) and value.isascii() and value.isdigit())
    )


def _int(value: Any) -> int | None:
    return int(value) if _is_digits(value) else None


def _number(raw: Any) -> Decimal | None:
    if raw is None or isinstance(raw, bool):
        return None
    text = _SPACES.sub("", str(raw))
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    # numeric(…) in Postgres: keep absurd magnitudes as text only, never fail the batch
    return number if number.is_finite() and -30 <= number.adjusted() <= 30 else None


def _flag(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower() if raw is not None else ""
    if text in ("1", "true", "yes", "y", "on"):
        return True
    if text in ("0", "false", "no", "n", "off", ""):
        return False if raw is not None else None
    return None


def _epoch(raw: Any) -> float | None:
    if isinstance(raw, bool) or raw is None:
        return None
    if isinstance(raw, int | float):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None
