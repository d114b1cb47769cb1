"""Custom field values typed as real Kommo responses send them; nothing fails, nothing is lost."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from service.emails import normalize_email
from service.kinds import CONTACTS, LEADS
from service.kommo import fields, parse
from service.records import FieldValue


def field(field_type: str, *values: Any, field_id: int = 7, code: str | None = None) -> Any:
    return {
        "field_id": field_id,
        "field_name": "F",
        "field_code": code,
        "field_type": field_type,
        "values": list(values),
    }


CASES: list[tuple[Any, list[FieldValue]]] = [
    (field("numeric", {"value": "14012"}), [FieldValue(7, 0, "14012", number=Decimal("14012"))]),
    (
        field("price", {"value": "1 500,50"}),
        [FieldValue(7, 0, "1 500,50", number=Decimal("1500.50"))],
    ),
    (field("monetary", {"value": 99.5}), [FieldValue(7, 0, "99.5", number=Decimal("99.5"))]),
    (field("numeric", {"value": "about ten"}), [FieldValue(7, 0, "about ten")]),  # text kept
    (field("numeric", {"value": "1e999"}), [FieldValue(7, 0, "1e999")]),  # too big: text only
    (field("checkbox", {"value": True}), [FieldValue(7, 0, "true", flag=True)]),
    (field("checkbox", {"value": "0"}), [FieldValue(7, 0, "0", flag=False)]),
    (field("date", {"value": 1642626000}), [FieldValue(7, 0, "1642626000", at=1642626000.0)]),
    (
        field("date_time", {"value": "1748268812"}),
        [FieldValue(7, 0, "1748268812", at=1748268812.0)],
    ),
    (field("birthday", {"value": "not a date"}), [FieldValue(7, 0, "not a date")]),
    (
        field("select", {"value": "Google", "enum_id": 932073, "enum_code": None}),
        [FieldValue(7, 0, "Google", enum_id=932073)],
    ),
    (
        field("multiselect", {"value": "A", "enum_id": 1}, {"value": "B", "enum_id": 2}),
        [FieldValue(7, 0, "A", enum_id=1), FieldValue(7, 1, "B", enum_id=2)],
    ),
    (
        field("multitext", {"value": "+1555", "enum_id": 3, "enum_code": "WORK"}, code="PHONE"),
        [FieldValue(7, 0, "+1555", enum_id=3, enum_code="WORK")],
    ),
    (
        field("multitext", {"value": "a@b.co", "enum": "PRIV"}, code="EMAIL"),  # the legacy key
        [FieldValue(7, 0, "a@b.co", enum_code="PRIV")],
    ),
    (field("text"), []),  # a field with an empty values list
    (field("textarea", {"value": "hello"}), [FieldValue(7, 0, "hello")]),
    (
        field("smart_address", {"value": "Main st", "subtype": "address_line_1"}),
        [FieldValue(7, 0, "Main st")],
    ),
    (
        {"field_id": 7, "field_type": "radiobutton", "values": {"value": "x", "enum": "55"}},
        [FieldValue(7, 0, "x", enum_id=55)],
    ),  # one documented example sends a single object
]


@pytest.mark.parametrize(("cf", "expected"), CASES)
def test_values_are_typed_by_the_field_type(cf: Any, expected: list[FieldValue]) -> None:
    assert list(fields.values_of({"custom_fields_values": [cf]})) == expected


def test_null_and_broken_fields_give_no_values() -> None:
    assert fields.values_of({"custom_fields_values": None}) == ()
    assert fields.values_of({}) == ()
    assert fields.values_of({"custom_fields_values": [None, "x", {"field_id": None}]}) == ()


def test_a_contact_record_carries_phones_emails_and_values() -> None:
    contact = {
        "id": 1,
        "updated_at": 5,
        "name": "N",
        "custom_fields_values": [
            field("multitext", {"value": "+1 555 000 1111", "enum_code": "WORK"}, code="PHONE"),
            field(
                "multitext",
                {"value": " Jane@Example.COM ", "enum": "WORK"},
                code="EMAIL",
                field_id=8,
            ),
        ],
        "_embedded": {"tags": [], "companies": [{"id": 77}]},
    }
    record = parse.record(CONTACTS, contact)
    assert record.phones == (("+1 555 000 1111", "WORK"),)
    assert record.emails == ((" Jane@Example.COM ", "WORK"),)
    assert [v.field_id for v in record.values] == [7, 8]
    assert record.linked("companies") == (77,)
    assert normalize_email(record.emails[0][0]) == "jane@example.com"


def test_a_lead_without_embedded_lists_keeps_its_links_unknown() -> None:
    lead = parse.record(LEADS, {"id": 1, "updated_at": 5, "custom_fields_values": None})
    assert lead.links == {} and lead.values == () and lead.loss_reason is None
    lost = parse.record(
        LEADS,
        {
            "id": 2,
            "updated_at": 5,
            "loss_reason_id": 4,
            "_embedded": {"loss_reason": [{"id": 4, "name": "Price", "sort": 1}]},
        },
    )
    assert lost.loss_reason is not None and lost.loss_reason.name == "Price"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Jane@Example.COM ", "jane@example.com"),
        ("mailto:a@b.co", "a@b.co"),
        ("not an email", None),
        ("a@b", None),
        ("a b@c.com", None),
        ("", None),
    ],
)
def test_emails_are_normalised(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected
