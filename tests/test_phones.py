import pytest

from service.phones import normalize_phone

CASES = [
    # the seed system's two examples
    ("987654321", "51987654321"),
    ("51987654321", "51987654321"),
    # separators
    ("987 654 321", "51987654321"),
    ("987-654-321", "51987654321"),
    ("(987) 654.321", "51987654321"),
    ("  987654321  ", "51987654321"),
    # spreadsheet marker, plus, 00
    ("'987654321", "51987654321"),
    ("'+51 987 654 321", "51987654321"),
    ("+51987654321", "51987654321"),
    ("+51 987-654-321", "51987654321"),
    ("0051987654321", "51987654321"),
    ("00 51 987 654 321", "51987654321"),
    # WhatsApp suffixes
    ("51987654321@s.whatsapp.net", "51987654321"),
    ("987654321@s.whatsapp.net", "51987654321"),
    ("15550001111@c.us", "15550001111"),
    # other countries keep their code
    ("+1 (555) 000-1111", "15550001111"),
    ("+15550001111", "15550001111"),
    ("+44 20 7946 0958", "442079460958"),
    ("0044 20 7946 0958", "442079460958"),
    ("+34 612 34 56 78", "34612345678"),
    ("+7 495 123-45-67", "74951234567"),
    ("+55 11 91234-5678", "5511912345678"),
    ("+57 300 1234567", "573001234567"),
    # national numbers of the default region get its code
    ("01 4567890", "5114567890"),
    ("(01) 456-7890", "5114567890"),
    ("014567890", "5114567890"),
    # junk and empty input
    ("", None),
    ("   ", None),
    ("+", None),
    ("abc", None),
    ("12", None),
    ("call me", None),
    ("999999999999999999", None),
    ("@s.whatsapp.net", None),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalize_phone(raw: str, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


def test_other_default_region() -> None:
    assert normalize_phone("020 7946 0958", region="GB") == "442079460958"
    assert normalize_phone("(555) 000-1111", region="US") == "15550001111"


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30
