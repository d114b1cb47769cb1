"""The webhook sender: subscriptions, delivery with Kommo's retry ladder, disabling.

Each body's layout (account block first or last, ``account[id]`` or not, brackets encoded or
not, ``+`` or ``%20``; see :mod:`kommo_sim.layouts`) is drawn per body from a random stream
seeded by the simulator's seed, unless a fixed layout is configured. Unsorted (Incoming
leads) bodies go only to destinations marked ``unsorted`` (no documented setting name).

Deliveries are kept in a heap ordered by due time on the simulator clock. A background
task attempts them as they fall due; ``await drain()`` attempts everything due now and
returns once those attempts (and retries falling due meanwhile) are finished.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from kommo_sim.clock import SimClock
from kommo_sim.faults import Faults
from kommo_sim.layouts import FIXED, VARIANTS, Layout
from kommo_sim.payloads import UNSORTED, WebhookItem, encode_body
from kommo_sim.state import State

logger = logging.getLogger(__name__)

TIMEOUT = 2.0
RETRY_DELAYS = {2: 300.0, 3: 900.0, 4: 900.0, 5: 3600.0}  # attempt -> delay after previous
DISABLE_FAILURES = 100
DISABLE_WINDOW = 7200.0
# Every name amoCRM's webhooks-api page lists [A]; Kommo's pages name no others (its list of
# events mentions Incoming leads, messages and products, without setting names).
DOCUMENTED_SETTINGS = frozenset(
    f"{action}_{entity}"
    for action, entities in (
        ("add", ("lead", "contact", "company", "customer", "talk", "task")),
        ("update", ("lead", "contact", "company", "customer", "talk", "task")),
        ("delete", ("lead", "contact", "company", "customer", "task")),
        ("restore", ("lead", "contact", "company")),
        ("responsible", ("lead", "contact", "company", "customer", "task")),
        ("status", ("lead",)),
        ("note", ("lead", "contact", "company", "customer")),
    )
    for entity in entities
) | {"add_chat_template_review"}
HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "amoCRM-Webhooks/3.0",
    "Accept-Encoding": "gzip",
}


@dataclass
class Destination:
    id: int
    destination: str
    settings: list[str]
    sort: int
    created_at: int
    updated_at: int
    account_id: int
    created_by: int
    disabled: bool = False
    unsorted: bool = False  # also sent unsorted[...] bodies (a simulator switch)
    failures: deque[float] = field(default_factory=deque)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "destination": self.destination,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "account_id": self.account_id,
            "created_by": self.created_by,
            "sort": self.sort,
            "disabled": self.disabled,
            "settings": list(self.settings),
        }


@dataclass(order=True)
class Delivery:
    due: float
    seq: int
    url: str = field(compare=False)
    body: str = field(compare=False)
    attempt: int = field(compare=False, default=1)


@dataclass(frozen=True)
class Attempt:
    url: str
    attempt: int
    status: int  # 0 = timeout or no connection
    at: float
    request_id: str
    body: str


MAX_ENTITIES_PER_BODY = 100  # about 140 KB of a full lead each: well under 1 MiB


def _may_retry(attempt: int, status: int) -> bool:
    """May attempt number ``attempt`` follow a previous answer ``status``? (API.md §7.3)."""
    if attempt in (2, 3):
        return True
    return attempt in (4, 5) and (status == 499 or 500 <= status <= 599)


class WebhookSender:
    def __init__(
        self,
        state: State,
        clock: SimClock,
        faults: Faults,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        layouts: str | Layout = "vary",
        seed: int = 0,
    ) -> None:
        if isinstance(layouts, str) and layouts not in ("vary", "fixed"):
            raise ValueError(f"webhook_layouts must be 'vary', 'fixed' or a Layout: {layouts!r}")
        self._layout = FIXED if layouts == "fixed" else layouts
        self._layout_rng = random.Random(f"{seed}:layouts")
        self._state = state
        self._clock = clock
        self._faults = faults
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._queue: list[Delivery] = []
        self._seq = 0
        self._inflight: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.destinations: dict[str, Destination] = {}
        self.attempts: list[Attempt] = []
        self.stats = {
            "queued": 0,
            "delivered": 0,
            "failed": 0,
            "dropped": 0,
            "duplicated": 0,
            "delayed": 0,
            "given_up": 0,
            "disabled": 0,
        }
        clock.on_change(self.wake)

    def subscribe(
        self,
        url: str,
        settings: Sequence[str],
        sort: int = 1,
        created_by: int = 0,
        *,
        unsorted: bool | None = None,
    ) -> Destination:
        """Add a destination, or update (and re-enable) an existing one.

        Only documented setting names are accepted (ValueError otherwise); ``unsorted``
        switches unsorted bodies on or off (None: leave as it was, off for a new one).
        """
        unknown = sorted(set(settings) - DOCUMENTED_SETTINGS)
        if unknown:
            raise ValueError(f"unknown webhook settings {unknown}")
        now = self._clock.now_s()
        dest = self.destinations.get(url)
        if dest is None:
            dest = Destination(
                self._state.new_id("webhook"),
                url,
                list(settings),
                sort,
                now,
                now,
                self._state.account.id,
                created_by,
            )
            self.destinations[url] = dest
        else:
            dest.settings, dest.sort, dest.updated_at = list(settings), sort, now
            dest.disabled = False
            dest.failures.clear()
        if unsorted is not None:
            dest.unsorted = unsorted
        return dest

    def unsubscribe(self, url: str) -> bool:
        return self.destinations.pop(url, None) is not None

    def publish(self, items: Sequence[WebhookItem]) -> None:
        """Queue bodies per subscribed destination holding the items it subscribed to.

        A bulk change goes out as several bodies of at most ``MAX_ENTITIES_PER_BODY`` entities
        (Kommo groups entities per body; the exact grouping is undocumented, see API.md §7.2).
        """
        for dest in self.destinations.values():
            if dest.disabled:
                continue
            chosen = [i for i in items if i.setting in dest.settings]
            unsorted = [i for i in items if i.setting == UNSORTED and dest.unsorted]
            for group in (chosen, unsorted):  # unsorted items travel in bodies of their own
                for start in range(0, len(group), MAX_ENTITIES_PER_BODY):
                    body = group[start : start + MAX_ENTITIES_PER_BODY]
                    self._queue_body(dest, encode_body(self._state, body, self._next_layout()))
        self._ensure_running()

    def _next_layout(self) -> Layout:
        if isinstance(self._layout, Layout):
            return self._layout
        return self._layout_rng.choice(VARIANTS)

    def _queue_body(self, dest: Destination, body: str) -> None:
        """One body for one destination, through the drop / duplicate / delay faults."""
        if self._faults.roll(self._faults.webhook_drop):
            self.stats["dropped"] += 1
            return
        copies = 1
        if self._faults.roll(self._faults.webhook_duplicate):
            copies, self.stats["duplicated"] = 2, self.stats["duplicated"] + 1
        for _ in range(copies):
            due = self._clock.now()
            if self._faults.roll(self._faults.webhook_delay):
                due += self._faults.rng.uniform(0, self._faults.webhook_delay_max)
                self.stats["delayed"] += 1
            self._push(Delivery(due, 0, dest.destination, body))

    def pending(self) -> int:
        return len(self._queue) + len(self._inflight)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def drain(self) -> None:
        """Attempt every delivery that is due now; return when none is due or in flight."""
        self._ensure_running()
        while True:
            self._pump()
            if self._inflight:
                await asyncio.gather(*list(self._inflight))
                continue
            if not self._queue or self._queue[0].due > self._clock.now():
                return

    async def start(self) -> None:
        self._ensure_running()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _push(self, delivery: Delivery) -> None:
        self._seq += 1
        delivery.seq = self._seq
        heapq.heappush(self._queue, delivery)
        self.stats["queued"] += 1
        self.wake()

    def _ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: drain() or start() will begin sending
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(), name="kommo-sim-webhooks")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            self._pump()
            timeout = None
            if self._queue:
                timeout = self._clock.real_seconds_until(self._queue[0].due)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                pass

    def _pump(self) -> None:
        now = self._clock.now()
        while self._queue and self._queue[0].due <= now:
            delivery = heapq.heappop(self._queue)
            task = asyncio.get_running_loop().create_task(self._attempt(delivery))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _attempt(self, delivery: Delivery) -> None:
        dest = self.destinations.get(delivery.url)
        if dest is None or dest.disabled:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=TIMEOUT)
        request_id = str(uuid.uuid4())
        try:
            response = await self._client.post(
                delivery.url,
                content=delivery.body.encode(),
                headers={**HEADERS, "X-Amocrm-Requestid": request_id},
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            logger.info("webhook to %s failed: %s", delivery.url, type(exc).__name__)
            status = 0
        now = self._clock.now()
        self.attempts.append(
            Attempt(delivery.url, delivery.attempt, status, now, request_id, delivery.body)
        )
        if 100 <= status <= 299:
            self.stats["delivered"] += 1
            return
        self.stats["failed"] += 1
        self._note_failure(dest, now)
        following = delivery.attempt + 1
        if dest.disabled or following not in RETRY_DELAYS or not _may_retry(following, status):
            self.stats["given_up"] += 1
            return
        self._push(
            Delivery(now + RETRY_DELAYS[following], 0, delivery.url, delivery.body, following)
        )

    def _note_failure(self, dest: Destination, now: float) -> None:
        dest.failures.append(now)
        while dest.failures and dest.failures[0] < now - DISABLE_WINDOW:
            dest.failures.popleft()
        if len(dest.failures) > DISABLE_FAILURES:
            dest.disabled = True
            self.stats["disabled"] += 1
            self._queue = [d for d in self._queue if d.url != dest.destination]
            heapq.heapify(self._queue)
            logger.warning(
                "webhook destination %s disabled after %d failures",
                dest.destination,
                len(dest.failures),
            )
