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


# Local numbers in accounts of other regions: the Peru rule must not apply (a 9-digit number
# starting with 9 is a local mobile in CL, PT, ES, UZ, EC), and the region's own plan decides.
REGIONS = [
    ("UZ", "90 123 45 67", "998901234567"),
    ("UZ", "901234567", "998901234567"),
    ("UZ", "+998 90 123 45 67", "998901234567"),
    ("CL", "9 1234 5678", "56912345678"),
    ("CL", "912345678", "56912345678"),
    ("CL", "2 2123 4567", "56221234567"),
    ("EC", "099 123 4567", "593991234567"),
    ("EC", "991234567", "593991234567"),
    ("EC", "02 212 3456", "59322123456"),
    ("PT", "912 345 678", "351912345678"),
    ("PT", "21 123 4567", "351211234567"),
    ("ES", "612 34 56 78", "34612345678"),
    ("ES", "912345678", "34912345678"),
    ("MX", "55 1234 5678", "525512345678"),
    ("BR", "(11) 98765-4321", "5511987654321"),
    ("CO", "300 1234567", "573001234567"),
    # a number with its own country code keeps it, whatever the region
    ("CL", "+51 987 654 321", "51987654321"),
    ("ES", "51987654321", "51987654321"),
    # and a Peruvian account keeps the seed's rule
    ("PE", "912345678", "51912345678"),
]


@pytest.mark.parametrize(("region", "raw", "expected"), REGIONS)
def test_local_numbers_of_other_regions(region: str, raw: str, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


def test_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({region for region, _, _ in REGIONS}) >= 6
