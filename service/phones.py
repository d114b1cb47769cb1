"""Phone normalisation: every phone the service stores or matches goes through here.

``normalize_phone`` returns digits only, E.164 without the ``+``, or ``None`` when the input holds
no possible number. For a Peruvian account (``region="PE"``, the default) the seed system's rule
comes first: a bare 9-digit number starting with 9 is a Peruvian mobile, ``51`` + the number. In
every other region that rule would be wrong (``912345678`` is a mobile in Chile, Portugal and
Spain, ``901234567`` in Uzbekistan): the region's own numbering plan decides. Everything past the
seed's rule is Google's libphonenumber.
"""

from __future__ import annotations

import re

import phonenumbers

_WHATSAPP_SUFFIX = re.compile(r"@(s\.whatsapp\.net|c\.us|g\.us)$", re.IGNORECASE)
_KEEP = re.compile(r"[^\d+]")


def normalize_phone(raw: str, region: str = "PE") -> str | None:
    text = _WHATSAPP_SUFFIX.sub("", raw.strip()).lstrip("'").strip()
    cleaned = _KEEP.sub("", text)
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    digits = cleaned.lstrip("+")
    if not digits.isdigit():
        return None
    # The seed's rule, for Peruvian accounts only: a bare 9-digit number starting with 9.
    if region == "PE" and not cleaned.startswith("+") and len(digits) == 9 and digits[0] == "9":
        return "51" + digits
    candidates = [cleaned] if cleaned.startswith("+") else [digits, "+" + digits]
    for candidate in candidates:
        number = _parse(candidate, region)
        if number is not None:
            return f"{number.country_code}{number.national_number}"
    return None


def _parse(text: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    return number if phonenumbers.is_possible_number(number) else None
