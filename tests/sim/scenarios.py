"""Changes that produce each webhook fixture's body (shared by the webhook and layout tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kommo_sim import Simulator
from kommo_sim.seed import (
    CONTACT_EMAIL,
    CONTACT_POSITION,
    LEAD_BUDGET,
    LEAD_COMMENT,
    LEAD_MEETING,
    LEAD_PAID,
    LEAD_SOURCE,
)


async def drain(sim: Simulator) -> None:
    await asyncio.wait_for(sim.webhooks.drain(), timeout=10)


def plain_lead(sim: Simulator) -> int:
    return int(sim.create_lead(name="Website request #1", price=0)["id"])


def lead_add(sim: Simulator) -> None:
    plain_lead(sim)


def lead_update(sim: Simulator) -> None:
    lead_id = int(sim.create_lead(name="Website request #1", tags=["website"])["id"])
    sim.update_lead(
        lead_id,
        custom_fields={
            LEAD_SOURCE: "Google",
            LEAD_COMMENT: "Call after 5 pm",
            LEAD_MEETING: 1748293200,
            LEAD_PAID: True,
            LEAD_BUDGET: 1500,
        },
    )
    sim.webhooks.attempts.clear()
    sim.update_lead(lead_id, status_id=sim.state.pipelines[0].statuses[2].id, price=1500)


def lead_status(sim: Simulator) -> None:
    lead_id = int(
        sim.create_lead(
            name="apple tv 3",
            tags=["repeat client"],
            custom_fields={LEAD_COMMENT: "SN-1", LEAD_MEETING: 1615845600},
        )["id"]
    )
    sim.update_lead(lead_id, status_id=142)


def lead_delete(sim: Simulator) -> None:
    sim.delete_lead(plain_lead(sim))


def lead_restore(sim: Simulator) -> None:
    lead_id = plain_lead(sim)
    sim.delete_lead(lead_id)
    sim.restore_lead(lead_id)


def lead_responsible(sim: Simulator) -> None:
    sim.update_lead(
        plain_lead(sim),
        responsible_user_id=sim.state.users[-1].id,
        status_id=sim.state.pipelines[0].statuses[2].id,
    )


def contact_add(sim: Simulator) -> None:
    sim.create_contact(first_name="Jane", last_name="Doe")


def contact_update(sim: Simulator) -> None:
    contact_id = int(
        sim.create_contact(
            first_name="Jane", last_name="Doe", phones=["+15550001111"], tags=["website"]
        )["id"]
    )
    for lead_id in list(sim.state.leads.rows)[:2]:
        sim.link_contact(lead_id, contact_id)
    sim.update_contact(
        contact_id, custom_fields={CONTACT_POSITION: "CTO", CONTACT_EMAIL: "jane@example.com"}
    )


def contact_delete(sim: Simulator) -> None:
    sim.delete_contact(int(sim.create_contact(name="Jane Doe")["id"]))


def two_leads(sim: Simulator) -> None:
    ids = [plain_lead(sim), plain_lead(sim)]
    sim.bulk_update_leads(ids, by=0, price=10)


def company_add(sim: Simulator) -> None:
    sim.create_company(name="Acme Inc", leads=[plain_lead(sim)])


def company_delete(sim: Simulator) -> None:
    sim.delete_company(int(sim.create_company(name="Acme Inc")["id"]))


KINDS: dict[str, tuple[Callable[[Simulator], None], str]] = {
    "lead_add": (lead_add, "add_lead"),
    "lead_update": (lead_update, "update_lead"),
    "lead_status": (lead_status, "status_lead"),
    "lead_delete": (lead_delete, "delete_lead"),
    "lead_restore": (lead_restore, "restore_lead"),
    "lead_responsible": (lead_responsible, "responsible_lead"),
    "contact_add": (contact_add, "add_contact"),
    "contact_update": (contact_update, "update_contact"),
    "contact_delete": (contact_delete, "delete_contact"),
    "company_add": (company_add, "add_company"),
    "company_delete": (company_delete, "delete_company"),
    "SYNTHETIC_two_leads_one_body": (two_leads, "update_lead"),
}
NOT_SIMULATED = {"dp_lead_add", "dp_lead_status"}  # Digital Pipeline bodies: not account hooks
