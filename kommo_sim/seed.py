"""Deterministic generation of a realistic account from a seed.

The leads' and contacts' original fields draw from the seed's main random stream, exactly as
before companies and typed custom fields existed; everything added since (companies, the other
custom fields, empty value lists, the legacy ``enum`` key, unsorted entries) draws from a second
stream, so adding it left the older data of a seed as it was.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from kommo_sim.fields import (
    COMPANY_EMAIL,
    COMPANY_PHONE,
    CONTACT_EMAIL,
    CONTACT_PHONE,
    CONTACT_POSITION,
    LEAD_BUDGET,
    LEAD_COMMENT,
    LEAD_MEETING,
    LEAD_PAID,
    LEAD_SOURCE,
    definitions,
    random_values,
)
from kommo_sim.phones import messy_phone, phone_values
from kommo_sim.state import (
    KINDS,
    Account,
    Company,
    Contact,
    CustomField,
    Incoming,
    Kind,
    Lead,
    LossReason,
    Pipeline,
    State,
    Status,
    Tag,
    User,
    Value,
)
from kommo_sim.words import (
    COMPANY_SUFFIXES,
    COMPANY_WORDS,
    FIRST_NAMES,
    INCOMING_SOURCES,
    LAST_NAMES,
    LOSS_REASONS,
    PRODUCTS,
    STATUS_COLORS,
    STATUS_NAMES,
    TAG_PALETTE,
    TAG_WORDS,
)

__all__ = [  # the names tests and churn import from here
    "CONTACT_EMAIL",
    "CONTACT_PHONE",
    "CONTACT_POSITION",
    "LEAD_BUDGET",
    "LEAD_COMMENT",
    "LEAD_MEETING",
    "LEAD_PAID",
    "LEAD_SOURCE",
    "PRODUCTS",
    "TAG_WORDS",
    "SeedSpec",
    "generate",
    "messy_phone",
    "phone_values",
]

FIRST_LEAD_ID = 24000001
FIRST_CONTACT_ID = 35000001
FIRST_COMPANY_ID = 37000001
FIRST_LEAD_TAG_ID = 482201
FIRST_CONTACT_TAG_ID = 72281
FIRST_COMPANY_TAG_ID = 60281
FIRST_USER_ID = 9000001
FIRST_PIPELINE_ID = 7000001
FIRST_STATUS_ID = 61000001
LOSS_REASON_IDS = (4203748, 4203750, 4203752)
WON, LOST = 142, 143
DAY = 86400
ORIGINAL_FIELDS = {
    "leads": {LEAD_SOURCE, LEAD_COMMENT, LEAD_MEETING, LEAD_PAID, LEAD_BUDGET},
    "contacts": {CONTACT_POSITION, CONTACT_PHONE, CONTACT_EMAIL},
    "companies": {COMPANY_PHONE, COMPANY_EMAIL},
}


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
    companies: int = 20
    timezone: str = "America/Lima"
    currency: str = "PEN"


def generate(spec: SeedSpec) -> State:
    rng = random.Random(spec.seed)
    extra = random.Random(f"{spec.seed}:extra")
    users = [
        User(
            FIRST_USER_ID + i,
            "Admin User" if i == 0 else f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            f"user{i + 1}@example.com",
            i == 0,
        )
        for i in range(max(1, spec.users))
    ]
    account = Account(
        spec.account_id, "Example Corp", spec.subdomain, spec.now - 400 * DAY, spec.timezone
    )
    state = State(
        account=account,
        users=users,
        pipelines=_pipelines(max(1, spec.pipelines)),
        fields={kind: definitions(kind, spec.currency) for kind in KINDS},
        next_ids={
            "leads": FIRST_LEAD_ID + spec.leads,
            "contacts": FIRST_CONTACT_ID + spec.contacts,
            "companies": FIRST_COMPANY_ID + spec.companies,
            "leads_tag": FIRST_LEAD_TAG_ID + 2 * spec.tags,
            "contacts_tag": FIRST_CONTACT_TAG_ID + 2 * spec.tags,
            "companies_tag": FIRST_COMPANY_TAG_ID + 2 * spec.tags,
            "custom_field": 760001,
            "enum": 950001,
            "loss_reason": 4203760,
            "note": 118000001,
            "webhook": 1056949,
        },
    )
    for i, (reason_id, name) in enumerate(zip(LOSS_REASON_IDS, LOSS_REASONS, strict=True)):
        state.loss_reasons[reason_id] = LossReason(
            reason_id, name, i + 1, account.created_at, account.created_at
        )
    _tags(state, spec.tags, rng)
    for i in range(spec.contacts):
        state.contacts.put(_contact(FIRST_CONTACT_ID + i, state, rng, spec.now))
    contact_ids = list(state.contacts.rows)
    for i in range(spec.leads):
        lead = _lead(FIRST_LEAD_ID + i, state, rng, spec.now, spec.companies)
        for k in range(_choose_links(rng) if contact_ids else 0):
            contact_id = rng.choice(contact_ids)
            if contact_id not in lead.contacts:
                lead.contacts[contact_id] = k == 0
                state.contacts.rows[contact_id].leads[lead.id] = None
        state.leads.put(lead)
    _extras(state, spec, extra)
    return state


def _tags(state: State, count: int, rng: random.Random) -> None:
    for i in range(count):
        name = TAG_WORDS[i] if i < len(TAG_WORDS) else f"tag {i + 1}"
        lead_tag, contact_tag = FIRST_LEAD_TAG_ID + 2 * i, FIRST_CONTACT_TAG_ID + 2 * i
        state.lead_tags[lead_tag] = Tag(lead_tag, name, rng.choice(TAG_PALETTE))
        state.contact_tags[contact_tag] = Tag(contact_tag, name, None)
        company_tag = FIRST_COMPANY_TAG_ID + 2 * i
        state.company_tags[company_tag] = Tag(company_tag, name, None)


def _pipelines(count: int) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    status_id = FIRST_STATUS_ID
    for p in range(count):
        pipeline_id = FIRST_PIPELINE_ID + p
        statuses = [Status(status_id, "Incoming leads", 10, pipeline_id, "#c1c1c1", 1, False)]
        status_id += 1
        for s, name in enumerate(STATUS_NAMES[: 2 + p % 3]):
            color = STATUS_COLORS[s % len(STATUS_COLORS)]
            statuses.append(Status(status_id, name, 20 + 10 * s, pipeline_id, color, 0, True))
            status_id += 1
        statuses.append(Status(WON, "Closed - won", 10000, pipeline_id, "#CCFF66", 0, False))
        statuses.append(Status(LOST, "Closed - lost", 11000, pipeline_id, "#D5D8DB", 0, False))
        name = "Sales" if p == 0 else f"Pipeline {p + 1}"
        pipelines.append(Pipeline(pipeline_id, name, p + 1, p == 0, statuses))
    return pipelines


def _choose_links(rng: random.Random) -> int:
    roll = rng.random()
    return 0 if roll < 0.15 else 1 if roll < 0.8 else 2 if roll < 0.95 else 3


def _lead(lead_id: int, state: State, rng: random.Random, now: int, companies: int) -> Lead:
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
    )
    if rng.random() < 0.1:
        pick = rng.randrange(50)
        lead.company_id = FIRST_COMPANY_ID + pick % companies if companies else None
    if rng.random() < 0.7:
        source = rng.choice(state.fields["leads"][LEAD_SOURCE].enums or [])
        lead.custom_fields[LEAD_SOURCE] = [{"enum_id": source.id}]
    if rng.random() < 0.4:
        comments = ("Call after 5 pm", "Wants a discount", "Asked for catalogue", "Sin comentarios")
        lead.custom_fields[LEAD_COMMENT] = [{"value": rng.choice(comments)}]
    if rng.random() < 0.3:
        noon = (created // DAY + rng.randrange(1, 20)) * DAY + 12 * 3600
        lead.custom_fields[LEAD_MEETING] = [{"value": state.account.midnight(noon)}]
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
        contact.custom_fields[CONTACT_EMAIL] = [{"value": email, "enum_id": 718333}]
    if rng.random() < 0.1:
        contact.custom_fields[CONTACT_POSITION] = [{"value": rng.choice(("CTO", "Owner"))}]
    contact.tags = rng.sample(
        list(state.contact_tags), k=min(len(state.contact_tags), rng.choice((0, 0, 0, 1, 2)))
    )
    return contact


def _company(company_id: int, state: State, rng: random.Random, now: int) -> Company:
    created = now - rng.randrange(3600, 365 * DAY)
    user_ids = state.user_ids()
    company = Company(
        id=company_id,
        name=f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}",
        responsible_user_id=rng.choice(user_ids),
        created_by=rng.choice(user_ids),
        updated_by=rng.choice(user_ids + [0]),
        created_at=created,
        updated_at=min(now - 1, created + rng.randrange(0, 30 * DAY)),
        legacy_enum=rng.random() < 0.15,
    )
    fields = state.fields["companies"]
    if rng.random() < 0.7:
        raws = [messy_phone(rng) for _ in range(rng.choice((1, 1, 2)))]
        company.custom_fields[COMPANY_PHONE] = phone_values(raws, rng, fields[COMPANY_PHONE])
    if rng.random() < 0.4:
        email = f"info{company_id % 1000}@example.com"
        work = fields[COMPANY_EMAIL].option("WORK").id
        company.custom_fields[COMPANY_EMAIL] = [{"value": email, "enum_id": work}]
    company.tags = rng.sample(
        list(state.company_tags), k=min(len(state.company_tags), rng.choice((0, 0, 1)))
    )
    return company


def _extras(state: State, spec: SeedSpec, rng: random.Random) -> None:
    """Companies and their links, the other custom fields, and the quirks of real answers."""
    for i in range(spec.companies):
        state.companies.put(_company(FIRST_COMPANY_ID + i, state, rng, spec.now))
    company_ids = list(state.companies.rows)
    others = {kind: _others(state, kind) for kind in KINDS}
    incoming = {(s.pipeline_id, s.id) for p in state.pipelines for s in p.statuses if s.type == 1}
    for lead in state.leads:
        if lead.company_id is not None:
            state.companies.rows[lead.company_id].leads[lead.id] = None
        _more_values(state, "leads", lead.custom_fields, rng, 0.2, spec.now, others["leads"])
        if (lead.pipeline_id, lead.status_id) in incoming:
            lead.incoming = Incoming(
                f"{rng.getrandbits(240):060x}",
                rng.choice(("forms", "forms", "sip")),
                rng.choice(INCOMING_SOURCES),
                lead.created_at,
            )
    for contact in state.contacts:
        contact.legacy_enum = rng.random() < 0.15
        if company_ids and rng.random() < 0.3:
            contact.company_id = rng.choice(company_ids)
            state.companies.rows[contact.company_id].contacts[contact.id] = None
        _more_values(
            state, "contacts", contact.custom_fields, rng, 0.15, spec.now, others["contacts"]
        )
    for company in state.companies:
        _more_values(
            state, "companies", company.custom_fields, rng, 0.3, spec.now, others["companies"]
        )


def _others(state: State, kind: Kind) -> list[CustomField]:
    return [f for f in state.fields[kind].values() if f.id not in ORIGINAL_FIELDS[kind]]


def _more_values(
    state: State,
    kind: Kind,
    values: dict[int, list[Value]],
    rng: random.Random,
    rate: float,
    now: int,
    others: list[CustomField],
) -> None:
    """Values for about ``rate`` of the kind's other fields, and now and then an empty one."""
    fields = state.fields[kind]
    count = min(len(others), int(rng.expovariate(1 / (rate * len(others) + 1e-9))))
    for field in rng.sample(others, count):
        values[field.id] = random_values(field, rng, state.account, now)
    unfilled = [f for f in fields if f not in values]
    if rng.random() < 0.04 and unfilled:  # real answers now and then show a field, no values
        values[rng.choice(unfilled)] = []
