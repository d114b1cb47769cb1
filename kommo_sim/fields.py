"""Custom fields as data: the seeded definitions per entity kind, and values by field type.

A value is stored as ``{"value": …}`` or, for a field with options, ``{"enum_id": …}``
(multitext: both); :func:`api_value` renders it the way Kommo's API answers it (API.md §1.1,
§8) and :func:`webhook_value_pairs` the way a webhook carries it (§7.2).

| type | API ``value`` | webhook |
|---|---|---|
| text, textarea, url, tracking_data | string | ``[values][j][value]`` |
| numeric, price, monetary | string (``"14012"``) | ``[values][j][value]`` |
| checkbox | bool | ``[values][j][value]`` = ``"1"``/``"0"`` |
| date, birthday | int, local midnight (account time zone) | bare ``[values][j]`` = ts |
| date_time | int | bare ``[values][j]`` = ts |
| select, multiselect, radiobutton, category | text, enum_id, enum_code | ``[value]``, ``[enum]`` |
| multitext (PHONE, EMAIL) | text, enum_id, enum_code (or enum) | ``[value]``, ``[enum]`` |

``enum_code`` is often null for options; ``[enum]`` in webhooks holds the option's id; the
legacy ``enum`` key (the contacts doc example) replaces ``enum_code`` for some contacts.
"""

from __future__ import annotations

import random
from typing import Any

from kommo_sim.state import Account, CustomField, Kind, Option, Value

DAY = 86400
OPTION_TYPES = frozenset({"select", "multiselect", "radiobutton", "category", "multitext"})
NUMBER_TYPES = frozenset({"numeric", "price", "monetary"})
DATE_TYPES = frozenset({"date", "birthday"})
TIMESTAMP_TYPES = DATE_TYPES | {"date_time"}
TYPES = frozenset(
    {"text", "textarea", "url", "tracking_data", "checkbox", "date_time"}
    | OPTION_TYPES
    | NUMBER_TYPES
    | DATE_TYPES
)
# ``field_type`` numbers in custom_field_value_changed events: 1-10 [A events doc examples];
# 11-19 from amoCRM's v2 constants [3P]; price, monetary and tracking_data have no known
# number and are sent as 0.
FIELD_TYPE_IDS = {
    "text": 1,
    "numeric": 2,
    "checkbox": 3,
    "select": 4,
    "multiselect": 5,
    "date": 6,
    "url": 7,
    "multitext": 8,
    "textarea": 9,
    "radiobutton": 10,
    "birthday": 14,
    "category": 18,
    "date_time": 19,
}

LEAD_SOURCE, LEAD_COMMENT, LEAD_MEETING, LEAD_PAID, LEAD_BUDGET = (
    752009,
    752011,
    752013,
    752015,
    752017,
)
CONTACT_POSITION, CONTACT_PHONE, CONTACT_EMAIL = 735647, 735649, 735651
COMPANY_PHONE, COMPANY_EMAIL = 736001, 736003
PHONE_CODES = ("WORK", "WORKDD", "MOB", "FAX", "HOME", "OTHER")
EMAIL_CODES = ("WORK", "PRIV", "OTHER")

# (id, name, type, code, option texts or codes) per kind; ids of options count up from a base.
_Spec = tuple[int, str, str, str | None, tuple[str, ...]]
_LEADS: tuple[_Spec, ...] = (
    (
        LEAD_SOURCE,
        "Source",
        "select",
        None,
        ("Google", "Facebook", "Instagram", "Referral", "Website"),
    ),
    (LEAD_COMMENT, "Comment", "text", None, ()),
    (LEAD_MEETING, "Meeting date", "date", None, ()),
    (LEAD_PAID, "Paid", "checkbox", None, ()),
    (LEAD_BUDGET, "Budget (numeric)", "numeric", None, ()),
    (752019, "Products", "multiselect", None, ("Hardware", "Software", "Support", "Training")),
    (752021, "Priority", "radiobutton", None, ("Low", "Medium", "High")),
    (752023, "Follow-up at", "date_time", None, ()),
    (752025, "Client birthday", "birthday", None, ()),
    (752027, "Landing page", "url", None, ()),
    (752029, "Notes", "textarea", None, ()),
    (752031, "Unit price", "price", None, ()),
    (752033, "Deal value", "monetary", None, ()),
    (752035, "Segment", "category", None, ("Retail", "Wholesale", "Government")),
    (316923, "utm_source", "tracking_data", "UTM_SOURCE", ()),
)
_CONTACTS: tuple[_Spec, ...] = (
    (CONTACT_POSITION, "Position", "text", "POSITION", ()),
    (CONTACT_PHONE, "Phone", "multitext", "PHONE", PHONE_CODES),
    (CONTACT_EMAIL, "Email", "multitext", "EMAIL", EMAIL_CODES),
    (735653, "Birthday", "birthday", None, ()),
    (735655, "Preferred channel", "radiobutton", None, ("WhatsApp", "Call", "E-mail")),
    (735657, "Newsletter", "checkbox", None, ()),
    (735659, "Interests", "multiselect", None, ("Sports", "Travel", "Tech", "Food")),
    (735661, "Customer since", "date", None, ()),
    (735663, "Website", "url", None, ()),
    (735665, "Address", "textarea", None, ()),
    (735667, "Loyalty points", "numeric", None, ()),
    (735669, "Last call", "date_time", None, ()),
    (735671, "Client type", "select", None, ("New", "Regular", "VIP")),
    (735673, "Segment", "category", None, ("B2C", "B2B")),
    (735675, "Lifetime value", "monetary", None, ()),
    (735677, "Discount", "price", None, ()),
)
_COMPANIES: tuple[_Spec, ...] = (
    (COMPANY_PHONE, "Phone", "multitext", "PHONE", PHONE_CODES),
    (COMPANY_EMAIL, "Email", "multitext", "EMAIL", EMAIL_CODES),
    (736005, "Web", "url", "WEB", ()),
    (736007, "Address", "textarea", "ADDRESS", ()),
    (736009, "Employees", "numeric", None, ()),
    (736011, "Industry", "select", None, ("Retail", "Mining", "Software", "Farming")),
    (736013, "Founded", "date", None, ()),
    (736015, "Verified", "checkbox", None, ()),
    (736017, "Services", "multiselect", None, ("Delivery", "Installation", "Consulting")),
    (736019, "Size", "radiobutton", None, ("Small", "Medium", "Large")),
    (736021, "Annual revenue", "monetary", None, ()),
    (736023, "Last audit", "date_time", None, ()),
    (736025, "Tier", "category", None, ("Gold", "Silver", "Bronze")),
    (736027, "Credit limit", "price", None, ()),
    (736029, "Tax ID", "text", None, ()),
    (736031, "Owner birthday", "birthday", None, ()),
)
_OPTION_BASES = {CONTACT_PHONE: 718321, CONTACT_EMAIL: 718333, LEAD_SOURCE: 932073}
_CHANNEL_CODES = {"WhatsApp": "WHATSAPP", "Call": "CALL", "E-mail": "EMAIL"}  # non-null codes
WORDS = ("Call after 5 pm", "Wants a discount", "Asked for catalogue", "Sin comentarios", "CTO")


def definitions(kind: Kind, currency: str) -> dict[int, CustomField]:
    """The seeded definitions of one kind (ids and option ids fixed, as in the fixtures)."""
    specs = {"leads": _LEADS, "contacts": _CONTACTS, "companies": _COMPANIES}[kind]
    fields: dict[int, CustomField] = {}
    next_option = {"leads": 932101, "contacts": 718401, "companies": 718501}[kind]
    for sort, (field_id, name, type_, code, options) in enumerate(specs):
        enums = None
        if type_ in OPTION_TYPES:
            base = _OPTION_BASES.get(field_id, next_option)
            if field_id not in _OPTION_BASES:
                next_option += 2 * len(options)
            enums = [
                Option(base + 2 * i, text, i + 1, _option_code(type_, text))
                for i, text in enumerate(options)
            ]
        fields[field_id] = CustomField(
            field_id,
            name,
            type_,
            code,
            (510 if kind == "leads" else 4) + 2 * sort,
            kind,
            enums,
            currency=currency if type_ == "monetary" else None,
            remind="never" if type_ == "birthday" else None,
        )
    return fields


def _option_code(type_: str, text: str) -> str | None:
    if type_ == "multitext":
        return text
    return _CHANNEL_CODES.get(text)


def coerce(field: CustomField, item: Any, account: Account) -> Value:
    """One value from a mutation's argument, validated and stored in the simulator's form.

    options: the option's id, text or code; multitext: the text, or ``{"value": …,
    "enum": "WORK"}``; dates: a timestamp (date and birthday move to local midnight);
    checkbox: a bool; numbers: anything numeric (kept as a string, as Kommo answers it).
    """
    if field.type == "multitext":
        if isinstance(item, dict):
            text, key = item["value"], item.get("enum") or item.get("enum_code") or "WORK"
        else:
            text, key = item, "WORK"
        return {"value": str(text), "enum_id": field.option(key).id}
    if field.enums is not None:
        key = item if isinstance(item, int) and not isinstance(item, bool) else str(item)
        return {"enum_id": field.option(key).id}
    if field.type in NUMBER_TYPES:
        try:
            float(str(item))
        except ValueError:
            raise ValueError(f"field {field.id} takes a number, not {item!r}") from None
        return {"value": str(item)}
    if field.type == "checkbox":
        return {"value": bool(item)}
    if field.type in TIMESTAMP_TYPES:
        ts = int(item)
        return {"value": account.midnight(ts) if field.type in DATE_TYPES else ts}
    return {"value": str(item)}


def api_value(field: CustomField, value: Value, legacy_enum: bool = False) -> Value | None:
    """A stored value as the API shows it (None if its option no longer exists)."""
    if field.enums is None:
        return {"value": value["value"]}
    enum_id = value["enum_id"]
    option = next((o for o in field.enums if o.id == enum_id), None)
    if option is None:
        return None
    if field.type == "multitext":
        code_key = "enum" if legacy_enum else "enum_code"
        return {"value": value["value"], "enum_id": option.id, code_key: option.code}
    return {"value": option.value, "enum_id": option.id, "enum_code": option.code}


def webhook_value_pairs(
    field: CustomField, j: int, value: Value
) -> list[tuple[tuple[str, ...], str]]:
    """The ``[values][j]…`` pairs of one value in a webhook body (paths below the field)."""
    shown = api_value(field, value)
    if shown is None:
        return []
    raw = shown["value"]
    if field.type in TIMESTAMP_TYPES:
        return [(("values", str(j)), str(raw))]
    text = ("1" if raw else "0") if isinstance(raw, bool) else str(raw)
    pairs: list[tuple[tuple[str, ...], str]] = [(("values", str(j), "value"), text)]
    if "enum_id" in shown:
        pairs.append((("values", str(j), "enum"), str(shown["enum_id"])))
    return pairs


def event_text(field: CustomField, value: Value) -> tuple[int | None, str]:
    """``(enum_id, text)`` of a value for a custom_field_value_changed event."""
    shown = api_value(field, value) or {"value": ""}
    return shown.get("enum_id"), str(shown["value"])


def random_values(
    field: CustomField, rng: random.Random, account: Account, now: int
) -> list[Value]:
    """A plausible value list for ``field``, drawn from ``rng``."""
    type_, enums = field.type, field.enums or []
    if type_ == "multitext":
        return []  # phones and e-mails are made by the seed, with realistic mess
    if type_ == "multiselect":
        chosen = rng.sample(enums, k=rng.randint(1, min(3, len(enums))))
        return [{"enum_id": o.id} for o in sorted(chosen, key=lambda o: o.sort)]
    if enums:
        return [{"enum_id": rng.choice(enums).id}]
    if type_ == "checkbox":
        return [{"value": rng.random() < 0.5}]
    if type_ in NUMBER_TYPES:
        number = rng.randrange(1, 90000)
        text = f"{number}.{rng.randrange(100):02d}" if type_ == "monetary" else str(number)
        return [{"value": text}]
    if type_ == "birthday":
        born = rng.randrange(2 * 365, 35 * 365) * DAY  # 1972-2005: positive timestamps
        return [{"value": account.midnight(born)}]
    if type_ == "date":
        return [{"value": account.midnight(now + rng.randrange(-300, 60) * DAY)}]
    if type_ == "date_time":
        return [{"value": now - rng.randrange(0, 200 * DAY)}]
    if type_ == "url":
        return [{"value": f"https://example.com/p/{rng.randrange(1000)}?utm=sim"}]
    if type_ == "textarea":
        return [{"value": f"{rng.choice(WORDS)}\n{rng.choice(WORDS)}"}]
    if type_ == "tracking_data":
        return [{"value": rng.choice(("google", "facebook", "newsletter"))}]
    return [{"value": rng.choice(WORDS)}]
