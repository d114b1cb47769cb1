"""Every example query in docs/schema.md, run against a mirrored simulator account and compared
with what the simulator itself says."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from kommo_sim import RateLimitConfig, SimConfig, Simulator
from service.kommo.parse import phones_of
from service.phones import normalize_phone
from service.settings import Settings
from tests.engine import SIM_TOKEN, kommo_settings_for, run_worker_burst

SCHEMA_MD = Path(__file__).resolve().parent.parent / "docs" / "schema.md"
WON, LOST = 142, 143
Rows = list[tuple[Any, ...]]


def example_queries() -> dict[str, str]:
    """``### title`` -> the SQL block under it."""
    found = re.findall(r"^### (.+?)\n+```sql\n(.*?)```", SCHEMA_MD.read_text(), re.M | re.S)
    assert found, f"no example queries in {SCHEMA_MD}"
    return dict(found)


class Truth:
    """The simulator's answers to the same questions, from its own state."""

    def __init__(self, sim: Simulator, month_start: int) -> None:
        dump = sim.dump()
        self.sim, self.month_start = sim, month_start
        self.leads = [lead for lead in sim.leads.values() if not lead["is_deleted"]]
        self.pipelines = {p["id"]: p["name"] for p in dump["pipelines"]}
        self.stages = {
            (s["pipeline_id"], s["id"]): s["name"]
            for p in dump["pipelines"]
            for s in p["_embedded"]["statuses"]
        }
        self.users = {u["id"]: u["name"] for u in dump["users"]}
        alive = {c["id"]: c for c in sim.companies.values() if not c["is_deleted"]}
        self.company_of = {
            lead["id"]: next(
                (
                    alive[c["id"]]["name"]
                    for c in lead["_embedded"]["companies"]
                    if c["id"] in alive
                ),
                "(no company)",
            )
            for lead in self.leads
        }

    def negotiation(self, pipeline_id: int, status_id: int) -> bool:
        return self.stages.get((pipeline_id, status_id)) == "Negotiation"

    def leads_per_stage_with_their_company(self) -> Rows:
        counts = collections.Counter(
            (
                self.pipelines[lead["pipeline_id"]],
                self.stages[(lead["pipeline_id"], lead["status_id"])],
                self.company_of[lead["id"]],
            )
            for lead in self.leads
        )
        return [(*key, n) for key, n in counts.items()]

    def average_days_in_negotiation(self) -> Rows:
        moves: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        for change in self.sim.status_changes:
            moves[change["lead_id"]].append(change)
        stays = []
        for timeline in moves.values():
            timeline.sort(key=lambda c: (c["changed_at"], c["event_id"]))
            for entered, left in zip(timeline, timeline[1:], strict=False):
                if self.negotiation(entered["pipeline_id"], entered["status_id"]):
                    stays.append(left["changed_at"] - entered["changed_at"])
        assert stays, "the simulator's history should have stays in Negotiation"
        average = (Decimal(sum(stays)) / len(stays) / Decimal(86400)).quantize(Decimal("0.01"))
        return [(average, len(stays))]

    def leads_whose_source_is_instagram(self) -> Rows:
        return [
            (lead["id"], lead["name"])
            for lead in self.leads
            if any(
                cf["field_name"] == "Source" and v["value"] == "Instagram"
                for cf in lead["custom_fields_values"] or []
                for v in cf["values"]
            )
        ]

    def why_leads_were_lost_this_month(self) -> Rows:
        reasons = {r["id"]: r["name"] for r in self.sim.loss_reasons.values()}
        counts = collections.Counter(
            reasons.get(lead["loss_reason_id"], "(no reason)")
            for lead in self.leads
            if lead["status_id"] == LOST and lead["closed_at"] >= self.month_start
        )
        return [(reason, n) for reason, n in counts.items()]

    def open_leads_per_responsible_user_with_their_value(self) -> Rows:
        count: collections.Counter[str] = collections.Counter()
        value: collections.Counter[str] = collections.Counter()
        for lead in self.leads:
            if lead["status_id"] not in (WON, LOST):
                user = self.users.get(lead["responsible_user_id"], "(unknown user)")
                count[user] += 1
                value[user] += lead["price"] or 0
        return [(user, count[user], value[user]) for user in count]

    def a_contact_by_phone_number_with_its_leads(self, phone: str) -> Rows:
        rows = []
        for contact in self.sim.contacts.values():
            numbers = {normalize_phone(raw) for raw, _ in phones_of(contact)}
            if contact["is_deleted"] or phone not in numbers:
                continue
            links = [
                (lead["id"], main["is_main"])
                for lead in self.leads
                for main in lead["_embedded"]["contacts"]
                if main["id"] == contact["id"]
            ]
            rows += [(contact["id"], contact["name"], *link) for link in sorted(links)]
            if not links:
                rows.append((contact["id"], contact["name"], None, None))
        return rows

    def leads_that_went_through_negotiation_and_were_won(self) -> Rows:
        through = {
            c["lead_id"]
            for c in self.sim.status_changes
            if self.negotiation(c["pipeline_id"], c["status_id"])
        }
        won = {lead["id"] for lead in self.leads if lead["status_id"] == WON}
        return [(len(through & won),)]


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


@pytest.fixture
def sim() -> Simulator:
    config = SimConfig(
        seed=21,
        leads=600,
        contacts=300,
        companies=60,
        token=SIM_TOKEN,
        rate_limit=RateLimitConfig(rate=0),
    )
    simulator = Simulator(config)
    # lose a few leads today (this month, whatever the date), each with a reason or none
    reasons = sorted(simulator.loss_reasons)
    open_leads = [lead for lead in simulator.leads.values() if lead["status_id"] not in (WON, LOST)]
    for i, lead in enumerate(open_leads[:7]):
        reason = reasons[i % len(reasons)] if i < 6 else None
        simulator.update_lead(lead["id"], status_id=LOST, loss_reason_id=reason)
    return simulator


@pytest.fixture
def kommo_settings(env: dict[str, str]) -> Settings:
    return kommo_settings_for(env)


def test_every_example_has_its_truth() -> None:
    assert {slug(t) for t in example_queries()} == {
        name for name, value in vars(Truth).items() if not name.startswith("_") and callable(value)
    } - {"negotiation"}


async def test_each_example_query_returns_what_the_simulator_says(
    kommo_settings: Settings, sim: Simulator, pool: asyncpg.Pool
) -> None:
    await run_worker_burst(kommo_settings, sim)
    phone = next(
        normalize_phone(raw)
        for c in sim.contacts.values()
        if not c["is_deleted"]
        for raw, _ in phones_of(c)
        if normalize_phone(raw)
    )
    async with pool.acquire() as conn:
        month_start = await conn.fetchval("SELECT extract(epoch FROM date_trunc('month', now()))")
        truth = Truth(sim, int(month_start))
        for title, sql in example_queries().items():
            answer: Callable[..., Rows] = getattr(truth, slug(title))
            arguments = (phone,) if ":'phone'" in sql else ()
            got = [tuple(r) for r in await conn.fetch(sql.replace(":'phone'", "$1"), *arguments)]
            want = answer(*arguments)
            assert want and want != [(0,)], f"{title}: the simulator's answer is empty"
            assert sorted(got, key=repr) == sorted(want, key=repr), title
