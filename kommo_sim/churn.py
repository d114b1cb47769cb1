"""Random realistic changes: for convergence tests and the demo mode's gentle stream.

:func:`random_mutation` draws a kind from :data:`KINDS` (a weighted list: lead edits most,
then contacts, companies at a modest rate) and applies it; a kind that does not apply (no
trashed lead to restore, …) falls back to renaming a contact. Field definitions, loss reasons
and unsorted entries are never changed here: those are explicit mutations for tests.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kommo_sim.fields import random_values
from kommo_sim.seed import (
    LEAD_BUDGET,
    LEAD_COMMENT,
    LEAD_MEETING,
    LEAD_PAID,
    LEAD_SOURCE,
    ORIGINAL_FIELDS,
    PRODUCTS,
    TAG_WORDS,
    messy_phone,
)
from kommo_sim.words import COMPANY_SUFFIXES, COMPANY_WORDS

if TYPE_CHECKING:
    from kommo_sim.simulator import Simulator

logger = logging.getLogger(__name__)

KINDS = (
    "fields",
    "fields",
    "status",
    "status",
    "responsible",
    "lead_tags",
    "lead_tags",
    "contact_tags",
    "relink",
    "phones",
    "phones",
    "contact_name",
    "delete_lead",
    "restore_lead",
    "create_lead",
    "create_contact",
    "delete_contact",
    "restore_contact",
    "bulk",
    "company_edit",
    "company_link",
    "company_lifecycle",
)


@dataclass
class _Pick:
    """What one draw works on: a live lead, the acting user, and the candidate pools."""

    sim: Simulator
    rng: random.Random
    lead_id: int
    by: int
    live: list[int]
    trashed: list[int]
    people: list[int]
    gone: list[int]


Change = Callable[[_Pick], "str | None"]


def random_mutation(sim: Simulator, rng: random.Random) -> str:
    """Apply one random change and describe it, e.g. ``"status lead 24000017"``."""
    state = sim.state
    live = [lead.id for lead in state.leads if not lead.is_deleted]
    people = [c.id for c in state.contacts if not c.is_deleted]
    kind = rng.choice(KINDS)
    if kind == "create_lead" or not live:
        return _create_lead(sim, rng, people)
    pick = _Pick(
        sim,
        rng,
        rng.choice(live),
        rng.choice(state.user_ids() + [0]),
        live,
        [lead.id for lead in state.leads if lead.is_deleted],
        people,
        [c.id for c in state.contacts if c.is_deleted],
    )
    done = CHANGES[kind](pick) if kind in CHANGES else None
    if done is None and (kind == "create_contact" or not people):
        done = _create_contact(pick)
    return done or _contact_change(pick, kind)


def _create_lead(sim: Simulator, rng: random.Random, people: list[int]) -> str:
    picked = rng.sample(people, k=min(len(people), rng.choice((0, 1, 1, 2))))
    created = sim.create_lead(
        name=f"{rng.choice(PRODUCTS)} {rng.randrange(1000)}",
        price=rng.randrange(0, 5000),
        contacts=picked,
        tags=rng.sample(TAG_WORDS, k=rng.choice((0, 1))),
    )
    return f"create_lead {created['id']}"


def _fields(p: _Pick) -> str:
    rng, sim = p.rng, p.sim
    typed = [
        f for f in sim.state.fields_of("leads").values() if f.id not in ORIGINAL_FIELDS["leads"]
    ]
    fields: dict[str, Any] = rng.choice(
        (
            {"name": f"{rng.choice(PRODUCTS)} {rng.randrange(1000)}"},
            {"price": rng.randrange(0, 90000)},
            {
                "custom_fields": {
                    LEAD_SOURCE: rng.choice(("Google", "Facebook", "Referral")),
                    LEAD_COMMENT: rng.choice(("call back", None, "paid half")),
                }
            },
            {
                "custom_fields": {
                    LEAD_MEETING: sim.clock.now_s() // 86400 * 86400 + 18000,
                    LEAD_PAID: rng.random() < 0.5,
                }
            },
            {"custom_fields": {LEAD_BUDGET: rng.choice((None, rng.randrange(10, 9999)))}},
        )
    )
    if typed and rng.random() < 0.3:
        field = rng.choice(typed)
        values = random_values(field, rng, sim.state.account, sim.clock.now_s())
        fields = {"custom_fields": {field.id: _as_input(values)}}
    sim.update_lead(p.lead_id, by=p.by, **fields)
    return f"update lead {p.lead_id} {sorted(fields)}"


def _as_input(values: list[dict[str, object]]) -> list[object]:
    """Stored values back into what ``custom_fields`` takes (option ids or plain values)."""
    return [v["enum_id"] if "enum_id" in v else v["value"] for v in values]


def _status(p: _Pick) -> str:
    pipeline = p.rng.choice(p.sim.state.pipelines)
    status = p.rng.choice([s for s in pipeline.statuses if s.type == 0])
    p.sim.update_lead(p.lead_id, by=p.by, pipeline_id=pipeline.id, status_id=status.id)
    return f"status lead {p.lead_id} -> {pipeline.id}/{status.id}"


def _responsible(p: _Pick) -> str:
    p.sim.update_lead(p.lead_id, by=p.by, responsible_user_id=p.rng.choice(p.sim.state.user_ids()))
    return f"responsible lead {p.lead_id}"


def _lead_tags(p: _Pick) -> str:
    names = p.rng.sample(TAG_WORDS, k=p.rng.choice((0, 0, 1, 2, 3)))
    p.sim.set_lead_tags(p.lead_id, names, by=p.by)
    return f"tags lead {p.lead_id} {names}"


def _relink(p: _Pick) -> str | None:
    if not p.people:
        return None
    sim, rng = p.sim, p.rng
    linked = list(sim.state.leads.rows[p.lead_id].contacts)
    if linked and rng.random() < 0.4:
        contact_id = rng.choice(linked)
        if not sim.state.contacts.rows[contact_id].is_deleted:
            sim.unlink_contact(p.lead_id, contact_id, by=p.by)
            return f"unlink lead {p.lead_id} contact {contact_id}"
    contact_id = rng.choice(p.people)
    sim.link_contact(p.lead_id, contact_id, is_main=rng.random() < 0.3, by=p.by)
    return f"link lead {p.lead_id} contact {contact_id}"


def _delete_lead(p: _Pick) -> str:
    p.sim.delete_lead(p.lead_id, by=p.by)
    return f"delete lead {p.lead_id}"


def _restore_lead(p: _Pick) -> str | None:
    if not p.trashed:
        return None
    restored = p.rng.choice(p.trashed)
    p.sim.restore_lead(restored, by=p.by)
    return f"restore lead {restored}"


def _bulk(p: _Pick) -> str:
    ids = p.rng.sample(p.live, k=min(len(p.live), p.rng.randrange(2, 6)))
    p.sim.bulk_update_leads(ids, by=0, responsible_user_id=p.rng.choice(p.sim.state.user_ids()))
    return f"bulk update leads {ids}"


def _create_contact(p: _Pick) -> str:
    rng = p.rng
    contact = p.sim.create_contact(
        name=f"New client {rng.randrange(1000)}",
        phones=[messy_phone(rng)] if rng.random() < 0.8 else [],
    )
    return f"create_contact {contact['id']}"


def _contact_change(p: _Pick, kind: str) -> str:
    """The contact kinds; anything else lands on renaming a contact."""
    sim, rng = p.sim, p.rng
    contact_id = rng.choice(p.people)
    if kind == "phones":
        raws = [messy_phone(rng) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
        sim.set_contact_phones(contact_id, raws, by=p.by)
        return f"phones contact {contact_id} {raws}"
    if kind == "contact_tags":
        names = rng.sample(TAG_WORDS, k=rng.choice((0, 0, 1, 2)))
        sim.set_contact_tags(contact_id, names, by=p.by)
        return f"tags contact {contact_id} {names}"
    if kind == "delete_contact":
        sim.delete_contact(contact_id, by=p.by)
        return f"delete contact {contact_id}"
    if kind == "restore_contact" and p.gone:
        restored = rng.choice(p.gone)
        sim.restore_contact(restored, by=p.by)
        return f"restore contact {restored}"
    sim.update_contact(contact_id, by=p.by, name=f"Client {rng.randrange(10000)}")
    return f"rename contact {contact_id}"


def _companies(p: _Pick, alive: bool = True) -> list[int]:
    return [c.id for c in p.sim.state.companies if c.is_deleted != alive]


def _company_edit(p: _Pick) -> str | None:
    companies = _companies(p)
    if not companies:
        return None
    sim, rng = p.sim, p.rng
    company_id = rng.choice(companies)
    roll = rng.random()
    if roll < 0.3:
        sim.update_company(
            company_id, by=p.by, name=f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)}"
        )
    elif roll < 0.6:
        sim.set_company_phones(
            company_id, [messy_phone(rng) for _ in range(rng.choice((0, 1, 2)))], by=p.by
        )
    elif roll < 0.8:
        sim.set_company_tags(company_id, rng.sample(TAG_WORDS, k=rng.choice((0, 1, 2))), by=p.by)
    else:
        fields = [f for f in sim.state.fields_of("companies").values() if f.type != "multitext"]
        field = rng.choice(fields)
        values = random_values(field, rng, sim.state.account, sim.clock.now_s())
        sim.set_custom_fields("companies", company_id, {field.id: _as_input(values)}, by=p.by)
    return f"edit company {company_id}"


def _company_link(p: _Pick) -> str | None:
    companies = _companies(p)
    if not companies:
        return None
    sim, rng = p.sim, p.rng
    lead = sim.state.leads.rows[p.lead_id]
    if rng.random() < 0.6:
        if lead.company_id is not None and rng.random() < 0.3:
            sim.unlink_company(p.lead_id, by=p.by)
            return f"unlink lead {p.lead_id} company"
        company_id = rng.choice(companies)
        sim.link_company(p.lead_id, company_id, by=p.by)
        return f"link lead {p.lead_id} company {company_id}"
    if not p.people:
        return None
    contact_id = rng.choice(p.people)
    if sim.state.contacts.rows[contact_id].company_id is not None and rng.random() < 0.3:
        sim.unlink_contact_company(contact_id, by=p.by)
        return f"unlink contact {contact_id} company"
    company_id = rng.choice(companies)
    sim.link_contact_company(contact_id, company_id, by=p.by)
    return f"link contact {contact_id} company {company_id}"


def _company_lifecycle(p: _Pick) -> str:
    sim, rng = p.sim, p.rng
    roll, alive, trashed = rng.random(), _companies(p), _companies(p, alive=False)
    if roll < 0.25 and trashed:
        restored = rng.choice(trashed)
        sim.restore_company(restored, by=p.by)
        return f"restore company {restored}"
    if roll < 0.5 and alive:
        deleted = rng.choice(alive)
        sim.delete_company(deleted, by=p.by)
        return f"delete company {deleted}"
    name = f"{rng.choice(COMPANY_WORDS)} {rng.choice(COMPANY_SUFFIXES)} {rng.randrange(100)}"
    created = sim.create_company(name=name, phones=[messy_phone(rng)], leads=[p.lead_id], by=p.by)
    return f"create_company {created['id']}"


CHANGES: dict[str, Change] = {
    "fields": _fields,
    "status": _status,
    "responsible": _responsible,
    "lead_tags": _lead_tags,
    "relink": _relink,
    "delete_lead": _delete_lead,
    "restore_lead": _restore_lead,
    "bulk": _bulk,
    "company_edit": _company_edit,
    "company_link": _company_link,
    "company_lifecycle": _company_lifecycle,
}


async def churn(sim: Simulator, per_second: float, rng: random.Random) -> None:
    """Apply random changes at about ``per_second`` (Poisson arrivals) until cancelled."""
    while True:
        await asyncio.sleep(rng.expovariate(per_second))
        logger.info("demo change: %s", random_mutation(sim, rng))
