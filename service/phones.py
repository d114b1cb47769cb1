"""Phone normalisation: every phone the service stores or matches goes through here.

``normalize_phone`` returns digits only, E.164 without the ``+``, or ``None`` when the input holds
no possible number. The seed system's Peru rule comes first (a 9-digit number starting with 9 is a
Peruvian mobile: ``51`` + the number); everything else is Google's libphonenumber.
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
    # The seed's rule: a bare 9-digit number that starts with 9 is a Peruvian mobile.
    if not cleaned.startswith("+") and len(digits) == 9 and digits.startswith("9"):
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
