"""Random realistic changes: for convergence tests and the demo mode's gentle stream."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from kommo_sim.seed import (
    LEAD_BUDGET,
    LEAD_COMMENT,
    LEAD_MEETING,
    LEAD_PAID,
    LEAD_SOURCE,
    PRODUCTS,
    TAG_WORDS,
    messy_phone,
)

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
)


def random_mutation(sim: Simulator, rng: random.Random) -> str:
    """Apply one random change and describe it, e.g. ``"status lead 24000017"``."""
    state = sim.state
    live = [lead.id for lead in state.leads if not lead.is_deleted]
    trashed = [lead.id for lead in state.leads if lead.is_deleted]
    people = [c.id for c in state.contacts if not c.is_deleted]
    gone = [c.id for c in state.contacts if c.is_deleted]
    users = state.user_ids() + [0]
    kind = rng.choice(KINDS)
    if kind == "create_lead" or not live:
        picked = rng.sample(people, k=min(len(people), rng.choice((0, 1, 1, 2))))
        created = sim.create_lead(
            name=f"{rng.choice(PRODUCTS)} {rng.randrange(1000)}",
            price=rng.randrange(0, 5000),
            contacts=picked,
            tags=rng.sample(TAG_WORDS, k=rng.choice((0, 1))),
        )
        return f"create_lead {created['id']}"
    lead_id = rng.choice(live)
    by = rng.choice(users)
    if kind == "fields":
        fields = rng.choice(
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
        sim.update_lead(lead_id, by=by, **fields)
        return f"update lead {lead_id} {sorted(fields)}"
    if kind == "status":
        pipeline = rng.choice(state.pipelines)
        status = rng.choice(pipeline.statuses)
        sim.update_lead(lead_id, by=by, pipeline_id=pipeline.id, status_id=status.id)
        return f"status lead {lead_id} -> {pipeline.id}/{status.id}"
    if kind == "responsible":
        sim.update_lead(lead_id, by=by, responsible_user_id=rng.choice(state.user_ids()))
        return f"responsible lead {lead_id}"
    if kind == "lead_tags":
        names = rng.sample(TAG_WORDS, k=rng.choice((0, 0, 1, 2, 3)))
        sim.set_lead_tags(lead_id, names, by=by)
        return f"tags lead {lead_id} {names}"
    if kind == "relink" and people:
        linked = list(state.leads.rows[lead_id].contacts)
        if linked and rng.random() < 0.4:
            contact_id = rng.choice(linked)
            if not state.contacts.rows[contact_id].is_deleted:
                sim.unlink_contact(lead_id, contact_id, by=by)
                return f"unlink lead {lead_id} contact {contact_id}"
        contact_id = rng.choice(people)
        sim.link_contact(lead_id, contact_id, is_main=rng.random() < 0.3, by=by)
        return f"link lead {lead_id} contact {contact_id}"
    if kind == "delete_lead":
        sim.delete_lead(lead_id, by=by)
        return f"delete lead {lead_id}"
    if kind == "restore_lead" and trashed:
        restored = rng.choice(trashed)
        sim.restore_lead(restored, by=by)
        return f"restore lead {restored}"
    if kind == "bulk":
        ids = rng.sample(live, k=min(len(live), rng.randrange(2, 6)))
        sim.bulk_update_leads(ids, by=0, responsible_user_id=rng.choice(state.user_ids()))
        return f"bulk update leads {ids}"
    if kind == "create_contact" or not people:
        contact = sim.create_contact(
            name=f"New client {rng.randrange(1000)}",
            phones=[messy_phone(rng)] if rng.random() < 0.8 else [],
        )
        return f"create_contact {contact['id']}"
    contact_id = rng.choice(people)
    if kind == "phones":
        raws = [messy_phone(rng) for _ in range(rng.choice((0, 1, 1, 2, 3)))]
        sim.set_contact_phones(contact_id, raws, by=by)
        return f"phones contact {contact_id} {raws}"
    if kind == "contact_tags":
        names = rng.sample(TAG_WORDS, k=rng.choice((0, 0, 1, 2)))
        sim.set_contact_tags(contact_id, names, by=by)
        return f"tags contact {contact_id} {names}"
    if kind == "delete_contact":
        sim.delete_contact(contact_id, by=by)
        return f"delete contact {contact_id}"
    if kind == "restore_contact" and gone:
        restored = rng.choice(gone)
        sim.restore_contact(restored, by=by)
        return f"restore contact {restored}"
    sim.update_contact(contact_id, by=by, name=f"Client {rng.randrange(10000)}")
    return f"rename contact {contact_id}"


async def churn(sim: Simulator, per_second: float, rng: random.Random) -> None:
    """Apply random changes at about ``per_second`` (Poisson arrivals) until cancelled."""
    while True:
        await asyncio.sleep(rng.expovariate(per_second))
        logger.info("demo change: %s", random_mutation(sim, rng))
