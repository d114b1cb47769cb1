"""Phone numbers the way people type them into a CRM, and PHONE field values holding them."""

from __future__ import annotations

import random

from kommo_sim.state import CustomField, Value

PHONE_ENUMS = ((718325, "MOB"), (718321, "WORK"), (718329, "HOME"), (718331, "OTHER"))


def messy_phone(rng: random.Random) -> str:
    """A phone number written the way people type them into a CRM."""
    mobile = "9" + "".join(rng.choice("0123456789") for _ in range(8))
    a, b, c = mobile[:3], mobile[3:6], mobile[6:]
    shapes = (
        f"{a} {b} {c}",
        f"'{mobile}",
        f"+51 {a} {b} {c}",
        f"0051{mobile}",
        f"51{mobile}",
        f"{a}-{b}-{c}",
    )
    shape = rng.randrange(12)
    if shape < len(shapes):
        return shapes[shape]
    if shape == 6:
        return f"+1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    if shape == 7:
        return f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    if shape == 8:
        return f"(01) {rng.randrange(200, 799)}-{rng.randrange(1000, 9999)}"
    if shape == 9:
        return f"+51{mobile}@s.whatsapp.net" if rng.random() < 0.3 else f"+51{mobile}"
    return mobile


def phone_values(
    raws: list[str], rng: random.Random, field: CustomField | None = None
) -> list[Value]:
    """PHONE values (mostly MOB); ``field`` maps the contact PHONE option to another field's."""
    values: list[Value] = []
    for raw in raws:
        enum_id, code = PHONE_ENUMS[0] if rng.random() < 0.6 else rng.choice(PHONE_ENUMS)
        if field is not None:
            enum_id = field.option(code).id
        values.append({"value": raw, "enum_id": enum_id})
    return values
