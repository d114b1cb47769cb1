"""Deterministic generation of a realistic account from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kommo_sim.state import (
    Account,
    Contact,
    CustomField,
    Lead,
    Pipeline,
    State,
    Status,
    Tag,
    User,
    Value,
)

FIRST_LEAD_ID = 24000001
FIRST_CONTACT_ID = 35000001
FIRST_COMPANY_ID = 37000001
FIRST_LEAD_TAG_ID = 482201
FIRST_CONTACT_TAG_ID = 72281
FIRST_USER_ID = 9000001
FIRST_PIPELINE_ID = 7000001
FIRST_STATUS_ID = 61000001
LOSS_REASON_IDS = (4203748, 4203750, 4203752)
WON, LOST = 142, 143

LEAD_SOURCE, LEAD_COMMENT, LEAD_MEETING, LEAD_PAID, LEAD_BUDGET = (
    752009,
    752011,
    752013,
    752015,
    752017,
)
CONTACT_POSITION, CONTACT_PHONE, CONTACT_EMAIL = 735647, 735649, 735651
TAG_PALETTE = ("DDEBB5", "EBEBEB", "D0D0D0", "F2DDF7", "247BA0", "FFC8C8", "C6E2FF", None)
TAG_WORDS = (
    "website",
    "repeat client",
    "whatsapp",
    "facebook",
    "instagram",
    "vip",
    "referral",
    "lima",
    "arequipa",
    "promo",
    "cold",
    "hot",
    "wholesale",
    "retail",
    "b2b",
    "callback",
)
FIRST_NAMES = (
    "Jane",
    "John",
    "María",
    "José",
    "Lucía",
    "Carlos",
    "Ana",
    "Luis",
    "Rosa",
    "Jorge",
    "Sofía",
    "Miguel",
    "Valeria",
    "Diego",
    "Camila",
    "Andrés",
    "Elena",
    "Pedro",
)
LAST_NAMES = (
    "Doe",
    "Quispe",
    "Flores",
    "Rodríguez",
    "García",
    "Mamani",
    "Huamán",
    "Torres",
    "Chávez",
    "Ramírez",
    "Smith",
    "Vargas",
    "Castillo",
    "Rojas",
    "Mendoza",
)
PRODUCTS = ("Website request", "Order", "Quote", "Consultation", "apple tv", "Renewal", "Demo")
STATUS_NAMES = ("Initial contact", "Negotiation", "Decision making", "Contract", "Invoice")
STATUS_COLORS = ("#99ccff", "#ffcc66", "#ffff99", "#ccff66", "#deff81", "#87f2c0")
DAY = 86400


@dataclass(frozen=True)
class SeedSpec:
    seed: int
    leads: int
    contacts: int
    tags: int
    pipelines: int
    users: int
    account_id: int
    subdomain: str
    now: int


def lead_fields() -> list[CustomField]:
    return [
        CustomField(
            LEAD_SOURCE,
            "Source",
            "select",
            None,
            510,
            "leads",
            [
                (932073, "Google", None),
                (932075, "Facebook", None),
                (932077, "Instagram", None),
                (932079, "Referral", None),
                (932081, "Website", None),
            ],
        ),
        CustomField(LEAD_COMMENT, "Comment", "text", None, 512, "leads"),
        CustomField(LEAD_MEETING, "Meeting date", "date", None, 520, "leads"),
        CustomField(LEAD_PAID, "Paid", "checkbox", None, 530, "leads"),
        CustomField(LEAD_BUDGET, "Budget (numeric)", "numeric", None, 540, "leads"),
    ]


def contact_fields() -> list[CustomField]:
    return [
        CustomField(CONTACT_POSITION, "Position", "text", "POSITION", 4, "contacts"),
        CustomField(
            CONTACT_PHONE,
            "Phone",
            "multitext",
            "PHONE",
            8,
            "contacts",
            [
                (718321, "WORK", "WORK"),
                (718323, "WORKDD", "WORKDD"),
                (718325, "MOB", "MOB"),
                (718327, "FAX", "FAX"),
                (718329, "HOME", "HOME"),
                (718331, "OTHER", "OTHER"),
            ],
        ),
        CustomField(
            CONTACT_EMAIL,
            "Email",
            "multitext",
            "EMAIL",
            10,
            "contacts",
            [
                (718333, "WORK", "WORK"),
                (718335, "PRIV", "PRIV"),
                (718337, "OTHER", "OTHER"),
            ],
        ),
    ]


def messy_phone(rng: random.Random) -> str:
    """A phone number written the way people type them into a CRM."""
    mobile = "9" + "".join(rng.choice("0123456789") for _ in range(8))
    a, b, c = mobile[:3], mobile[3:6], mobile[6:]
    shape = rng.randrange(12)
    if shape == 0:
        return f"{a} {b} {c}"
    if shape == 1:
        return f"'{mobile}"
    if shape == 2:
        return f"+51 {a} {b} {c}"
    if shape == 3:
        return f"0051{mobile}"
    if shape == 4:
        return f"51{mobile}"
    if shape == 5:
        return f"{a}-{b}-{c}"
    if shape == 6:
        return f"+1 (555) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    if shape == 7:
        return f"+44 20 {rng.randrange(1000, 9999)} {rng.randrange(1000, 9999)}"
    if shape == 8:
        return f"(01) {rng.randrange(200, 799)}-{rng.randrange(1000, 9999)}"
    if shape == 9:
        return f"+51{mobile}@s.whatsapp.net" if rng.random() < 0.3 else f"+51{mobile}"
    return mobile


def phone_values(raws: list[str], rng: random.Random) -> list[Value]:
    enums = ((718325, "MOB"), (718321, "WORK"), (718329, "HOME"), (718331, "OTHER"))
    values: list[Value] = []
    for raw in raws:
        enum_id, code = enums[0] if rng.random() < 0.6 else rng.choice(enums)
        values.append({"value": raw, "enum_id": enum_id, "enum_code": code})
    return values


def generate(spec: SeedSpec) -> State:
    rng = random.Random(spec.seed)
    users = [
        User(
            FIRST_USER_ID + i,
            "Admin User" if i == 0 else f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            f"user{i + 1}@example.com",
            i == 0,
        )
        for i in range(max(1, spec.users))
    ]
    pipelines = _pipelines(max(1, spec.pipelines))
    state = State(
        account=Account(spec.account_id, "Example Corp", spec.subdomain, spec.now - 400 * DAY),
        users=users,
        pipelines=pipelines,
        lead_fields=lead_fields(),
        contact_fields=contact_fields(),
        next_ids={
            "leads": FIRST_LEAD_ID + spec.leads,
            "contacts": FIRST_CONTACT_ID + spec.contacts,
            "leads_tag": FIRST_LEAD_TAG_ID + 2 * spec.tags,
            "contacts_tag": FIRST_CONTACT_TAG_ID + 2 * spec.tags,
            "note": 118000001,
            "webhook": 1056949,
        },
    )
    for i in range(spec.tags):
        name = TAG_WORDS[i] if i < len(TAG_WORDS) else f"tag {i + 1}"
        state.lead_tags[FIRST_LEAD_TAG_ID + 2 * i] = Tag(
            FIRST_LEAD_TAG_ID + 2 * i, name, rng.choice(TAG_PALETTE)
        )
        state.contact_tags[FIRST_CONTACT_TAG_ID + 2 * i] = Tag(
            FIRST_CONTACT_TAG_ID + 2 * i, name, None
        )
    for i in range(spec.contacts):
        state.contacts.put(_contact(FIRST_CONTACT_ID + i, state, rng, spec.now))
    contact_ids = list(state.contacts.rows)
    for i in range(spec.leads):
        lead = _lead(FIRST_LEAD_ID + i, state, rng, spec.now)
        for k in range(_choose_links(rng) if contact_ids else 0):
            contact_id = rng.choice(contact_ids)
            if contact_id not in lead.contacts:
                lead.contacts[contact_id] = k == 0
                state.contacts.rows[contact_id].leads[lead.id] = None
        state.leads.put(lead)
    return state


def _pipelines(count: int) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    status_id = FIRST_STATUS_ID
    for p in range(count):
        pipeline_id = FIRST_PIPELINE_ID + p
        statuses = [Status(status_id, "Incoming leads", 10, pipeline_id, "#c1c1c1", 1, False)]
        status_id += 1
        for s, name in enumerate(STATUS_NAMES[: 2 + p % 3]):
            statuses.append(
                Status(
                    status_id,
                    name,
                    20 + 10 * s,
                    pipeline_id,
                    STATUS_COLORS[s % len(STATUS_COLORS)],
                    0,
                    True,
                )
            )
            status_id += 1
        statuses.append(Status(WON, "Closed - won", 10000, pipeline_id, "#CCFF66", 0, False))
        statuses.append(Status(LOST, "Closed - lost", 11000, pipeline_id, "#D5D8DB", 0, False))
        name = "Sales" if p == 0 else f"Pipeline {p + 1}"
        pipelines.append(Pipeline(pipeline_id, name, p + 1, p == 0, statuses))
    return pipelines


def _choose_links(rng: random.Random) -> int:
    roll = rng.random()
    return 0 if roll < 0.15 else 1 if roll < 0.8 else 2 if roll < 0.95 else 3


def _lead(lead_id: int, state: State, rng: random.Random, now: int) -> Lead:
    pipeline = rng.choice(state.pipelines)
    status = rng.choice(pipeline.statuses)
    created = now - rng.randrange(30 * 60, 365 * DAY)
    updated = min(now - 1, created + rng.randrange(0, 30 * DAY))
    user_ids = state.user_ids()
    lead = Lead(
        id=lead_id,
        name=f"{rng.choice(PRODUCTS)} #{lead_id - FIRST_LEAD_ID + 1}"
        if rng.random() > 0.03
        else "",
        price=rng.choice((0, 0, 100, 250, 1000, 1500, rng.randrange(1, 50000))),
        responsible_user_id=rng.choice(user_ids),
        status_id=status.id,
        pipeline_id=pipeline.id,
        created_by=rng.choice(user_ids + [0]),
        updated_by=rng.choice(user_ids + [0]),
        created_at=created,
        updated_at=updated,
        closed_at=updated if status.id in (WON, LOST) else None,
        loss_reason_id=rng.choice(LOSS_REASON_IDS) if status.id == LOST else None,
        company_id=FIRST_COMPANY_ID + rng.randrange(50) if rng.random() < 0.1 else None,
    )
    if rng.random() < 0.7:
        source = rng.choice(state.lead_fields[0].enums or [])
        lead.custom_fields[LEAD_SOURCE] = [
            {"value": source[1], "enum_id": source[0], "enum_code": None}
        ]
    if rng.random() < 0.4:
        lead.custom_fields[LEAD_COMMENT] = [
            {
                "value": rng.choice(
                    (
                        "Call after 5 pm",
                        "Wants a discount",
                        "Asked for catalogue",
                        "Sin comentarios",
                    )
                )
            }
        ]
    if rng.random() < 0.3:
        midnight = (created // DAY + rng.randrange(1, 20)) * DAY + 5 * 3600
        lead.custom_fields[LEAD_MEETING] = [{"value": midnight}]
    if rng.random() < 0.3:
        lead.custom_fields[LEAD_PAID] = [{"value": rng.random() < 0.5}]
    if rng.random() < 0.3:
        lead.custom_fields[LEAD_BUDGET] = [{"value": str(rng.randrange(100, 90000))}]
    lead.tags = rng.sample(
        list(state.lead_tags), k=min(len(state.lead_tags), rng.choice((0, 0, 1, 1, 2, 3)))
    )
    return lead


def _contact(contact_id: int, state: State, rng: random.Random, now: int) -> Contact:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if rng.random() < 0.05:
        first, last = "", ""
    created = now - rng.randrange(30 * 60, 365 * DAY)
    user_ids = state.user_ids()
    contact = Contact(
        id=contact_id,
        name=f"{first} {last}".strip() or str(rng.randrange(1, 99)),
        first_name=first,
        last_name=last,
        responsible_user_id=rng.choice(user_ids),
        created_by=rng.choice(user_ids),
        updated_by=rng.choice(user_ids + [0]),
        created_at=created,
        updated_at=min(now - 1, created + rng.randrange(0, 30 * DAY)),
    )
    count = rng.choices((0, 1, 2, 3), weights=(15, 60, 20, 5))[0]
    if count:
        contact.custom_fields[CONTACT_PHONE] = phone_values(
            [messy_phone(rng) for _ in range(count)], rng
        )
    if rng.random() < 0.5:
        email = f"{(first or 'client').lower()}.{contact_id % 10000}@example.com"
        contact.custom_fields[CONTACT_EMAIL] = [
            {"value": email, "enum_id": 718333, "enum_code": "WORK"}
        ]
    if rng.random() < 0.1:
        contact.custom_fields[CONTACT_POSITION] = [{"value": rng.choice(("CTO", "Owner"))}]
    contact.tags = rng.sample(
        list(state.contact_tags), k=min(len(state.contact_tags), rng.choice((0, 0, 0, 1, 2)))
    )
    return contact
