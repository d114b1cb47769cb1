"""Stage history: every status move is a ``lead_status_changed`` event plus an exact record.

:func:`record_move` is the one place a move is written, for live changes and for the seeded
past alike, so ``state.status_changes`` (what tests compare a mirrored history with) and the
events API always agree. :func:`seed_history` gives every seeded lead a few moves back in time,
ending in the stage it is in now, so an import from the events API has something to import.
"""

from __future__ import annotations

import random

from kommo_sim.events import Event, EventLog
from kommo_sim.state import Lead, Pipeline, State, StatusChange

WON, LOST = 142, 143


def record_move(
    state: State,
    events: EventLog,
    lead_id: int,
    before: tuple[int, int],
    after: tuple[int, int],
    by: int,
    at: int,
) -> Event:
    """Write one move from ``before`` to ``after`` (each ``(pipeline_id, status_id)``)."""
    event = events.add(
        "lead_status_changed",
        "lead",
        lead_id,
        by,
        at,
        [{"lead_status": {"id": before[1], "pipeline_id": before[0]}}],
        [{"lead_status": {"id": after[1], "pipeline_id": after[0]}}],
    )
    state.status_changes.append(
        StatusChange(event.seq, lead_id, at, by, before[0], before[1], after[0], after[1])
    )
    return event


def seed_history(state: State, events: EventLog, seed: int) -> None:
    """One to four past moves per seeded lead that has left the Incoming stage."""
    rng = random.Random(f"{seed}:history")
    stages = {p.id: _Stages(p) for p in state.pipelines}
    for lead in state.leads:
        here = stages[lead.pipeline_id]
        if lead.status_id == here.incoming:
            continue  # still unsorted: never moved
        path = _path(lead, here, list(stages.values()), rng)
        start, end = lead.created_at, max(lead.updated_at, lead.created_at)
        span = end - start
        times = sorted(start + int(rng.random() * span) for _ in range(len(path) - 2))
        times.append(end)  # the last move is the lead's last change (and closed_at, if closed)
        users = (lead.responsible_user_id, lead.responsible_user_id, 0)
        for k, at in enumerate(times):
            record_move(state, events, lead.id, path[k], path[k + 1], rng.choice(users), at)


class _Stages:
    """A pipeline's stage ids: Incoming leads, the first normal one, all open ones."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.id = pipeline.id
        self.incoming = pipeline.incoming().id
        self.first_open = pipeline.first_open().id
        self.open = [s.id for s in pipeline.statuses if s.type == 0 and s.id not in (WON, LOST)]


def _path(
    lead: Lead, here: _Stages, pipelines: list[_Stages], rng: random.Random
) -> list[tuple[int, int]]:
    """Stages from where the lead started to where it is, no stage twice in a row."""
    path = [(here.id, here.incoming if rng.random() < 0.3 else here.first_open)]
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        other = rng.choice(pipelines) if rng.random() < 0.1 else here
        stage = (other.id, rng.choice(other.open))
        if stage != path[-1]:
            path.append(stage)
    current = (lead.pipeline_id, lead.status_id)
    if current == path[-1]:
        path.append((here.id, rng.choice([s for s in here.open if s != lead.status_id])))
    path.append(current)
    return path
