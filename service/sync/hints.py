"""The webhook hint queue in Redis: coalescing "this id changed" signals for the workers.

A webhook only tells us *which* entities changed (:mod:`service.web.webform` parses it into
:class:`Hints`); a worker fetches the current records by id, up to 250 a call
(:mod:`service.sync.drain`). This queue coalesces the hints so that N changes of the same id
cost one fetch, and it never relies on arq job ids for deduplication (arq blocks a fixed job id
while its result is kept).

Each entity kind K (:mod:`service.kinds`) has two queues, named as in
:meth:`Hints.queued`: ``K.name`` for changes and ``K.deletes_queue`` for deletes. Redis layout
(names in :mod:`service.keys`)::

    hints:seq                 INCR counter; one value per push (and per promotion)
    hints:leads               ZSET  lead id -> seq of its latest hint (claim order: oldest first)
    hints:leads:lm            HASH  lead id -> max last_modified seen in webhooks (0 if none)
    hints:lead_deletes        ZSET  lead id -> seq of its latest delete hint
    hints:lead_deletes:at     HASH  lead id -> unix time the delete webhook was received
    hints:lead_restores       SET   lead ids restored in Kommo (the fetch may clear a tombstone)
    (the same for contacts: hints:contacts, hints:contact_deletes, …)
    hints:delayed             ZSET  "<queue>:<id>" -> due unix time (lagging-read retries)
    hints:scheduled           flag, SET NX PX 5000: a ``process_hints`` job is on its way
    hints:overflow            flag, PX 60000 renewed by each drop: a burst over the cap is on
    hints:lock                the single drainer's lock

Because a re-hint always gets a larger seq, :func:`done` removes only the members whose seq
is unchanged since :func:`claim`: an id that changed again while it was being fetched stays
queued and is fetched again. (An id re-hinted more often than the backlog drains moves to the
back each time; with Kommo's 1,750 leads/s ceiling that only matters in a sustained overload.)

Restores. A restore hint adds the id to the changes queue *and* to the restore set. A delete
hint removes a pending restore flag (the later delete wins); when one push carries both, the
flag is kept and the fetch decides. The changes queue consumes the flag in :func:`done`.

Who enqueues. :func:`push` writes the hints and sets ``hints:scheduled`` with NX in the same
round trip; only the caller that set the flag enqueues the arq job ``process_hints``, so a
burst of webhooks costs one enqueue.

A bounded queue. At most ``cap`` ids (``HINT_QUEUE_MAX``) wait, counted over every queue and
the delayed retries: the push script adds an id not queued yet only while fewer wait, and
reports how many it left out (:class:`Pushed`); a re-hint of a queued id is always taken. The
reconcile reads what was left out, by ``updated_at`` (the figures: :mod:`service.settings`).
"""

from __future__ import annotations

import collections
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Iterable
from typing import Final, cast

from arq.connections import ArqRedis
from redis.asyncio import Redis

from service.keys import Keys
from service.kinds import ENTITY_KINDS, EntityKind
from service.scripts import Script
from service.settings import DEFAULT_HINT_QUEUE_MAX as CAP
from service.sync import locks

Claimed = tuple[int, int, int]
"""(id, seq, last_modified); for a deletes queue the third item is the deleted-at time."""

SCHEDULED_TTL_MS: Final = 5_000
OVERFLOW_TTL_MS: Final = 60_000
LOCK_TTL_MS: Final = 10_000
PROCESS_JOB: Final = "process_hints"
QUEUES: Final = (*(k.name for k in ENTITY_KINDS), *(k.deletes_queue for k in ENTITY_KINDS))


@dataclasses.dataclass(slots=True)
class Hints:
    """What one webhook body says changed: ids and kinds only (the parser's result).

    Per entity kind name: ``changes`` maps id -> max(last_modified, updated_at) from the body (0
    when absent) and includes the restored ids; ``deletes`` never shares an id with ``changes``
    unless that id was also restored in the same body. ``account_ids``: every account id the
    body names (``account[id]``, each record's ``account_id``); ``subdomain``: lower case, no
    host suffix (both empty in old bodies); ``unsorted``: incoming-lead records.
    """

    account_ids: set[int] = dataclasses.field(default_factory=set)
    subdomain: str | None = None
    changes: dict[str, dict[int, int]] = dataclasses.field(default_factory=dict)
    deletes: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    restores: dict[str, set[int]] = dataclasses.field(default_factory=dict)
    unsorted: int = 0
    ignored: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def __post_init__(self) -> None:  # every kind has its entries; one left out queues nothing
        for k in ENTITY_KINDS:
            self.changes.setdefault(k.name, {})
            self.deletes.setdefault(k.name, set())
            self.restores.setdefault(k.name, set())

    def is_empty(self) -> bool:
        """True when nothing in it is queued (e.g. ignored kinds only)."""
        return not any((*self.changes.values(), *self.deletes.values(), *self.restores.values()))

    def queued(self) -> dict[str, int]:
        """How many distinct ids go to each queue (and how many carry a restore flag)."""
        kinds = ENTITY_KINDS
        out = {k.name: len(self.changes[k.name].keys() | self.restores[k.name]) for k in kinds}
        out.update({k.deletes_queue: len(self.deletes[k.name]) for k in kinds})
        out.update({f"{k.singular}_restores": len(self.restores[k.name]) for k in kinds})
        return out


def kind_of(queue: str) -> EntityKind:
    """The entity kind a queue belongs to."""
    for k in ENTITY_KINDS:
        if queue in (k.name, k.deletes_queue):
            return k
    raise ValueError(f"unknown hint queue {queue!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Pushed:
    """What :func:`push` did."""

    scheduled: bool  # this push set the scheduled flag: the caller enqueues ``process_hints``
    dropped: int = 0  # ids not queued because ``cap`` ids were waiting
    first_drop: bool = False  # the first drop of a burst (none in the last minute): log it


_PUSH = Script(
    """
-- KEYS: seq, scheduled, overflow, delayed, every queue's zset (ARGV[4] of them), then per group
--   zset, hash, restore set.  ARGV: now, ttl_ms, cap, number of queues, overflow_ttl_ms, then
--   per group type, count, items: d ids (a delete), c (id, lm) pairs (a change), r ids (flags)
local seq = redis.call('INCR', KEYS[1])
local now, cap, nq = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local waiting = redis.call('ZCARD', KEYS[4])
for q = 1, nq do waiting = waiting + redis.call('ZCARD', KEYS[4 + q]) end
local dropped, i, g, base = 0, 6, 0, 4 + nq
while i <= #ARGV do
  local kind, n = ARGV[i], tonumber(ARGV[i + 1])
  local z, h, r = KEYS[base + 1 + g * 3], KEYS[base + 2 + g * 3], KEYS[base + 3 + g * 3]
  i = i + 2
  for _ = 1, n do
    local id = ARGV[i]
    local queued = redis.call('ZSCORE', z, id)
    if kind == 'r' then  -- no flag for a change the cap left out
      if queued then redis.call('SADD', r, id) end
    elseif not queued and waiting >= cap then
      dropped = dropped + 1
    else
      if not queued then waiting = waiting + 1 end
      redis.call('ZADD', z, seq, id)
      if kind == 'd' then
        redis.call('HSET', h, id, now)
        redis.call('SREM', r, id)
      elseif tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', h, id) or '0') then
        redis.call('HSET', h, id, ARGV[i + 1])
      end
    end
    i = i + (kind == 'c' and 2 or 1)
  end
  g = g + 1
end
local first = 0
if dropped > 0 then  -- a burst lasts while drops come less than a minute apart
  first = redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) and 1 or 0
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
local scheduled = redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) and 1 or 0
return {scheduled, dropped, first}
"""
)

_CLAIM = Script(
    """
-- KEYS: zset, stamps hash ; ARGV: limit
local items = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for j = 1, #items, 2 do
  out[#out + 1] = items[j]
  out[#out + 1] = items[j + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], items[j]) or '0'
end
return out
"""
)

_DONE = Script(
    """
-- KEYS: zset, stamps hash, restore set or '' ; ARGV: (id, seq) pairs
local removed = 0
for j = 1, #ARGV, 2 do
  local id = ARGV[j]
  local cur = redis.call('ZSCORE', KEYS[1], id)
  if cur and tonumber(cur) == tonumber(ARGV[j + 1]) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    if KEYS[3] ~= '' then redis.call('SREM', KEYS[3], id) end
    removed = removed + 1
  end
end
return removed
"""
)

_RETRY = Script(
    """
-- KEYS: zset, delayed ; ARGV: due, member prefix, then (id, seq or '') pairs
local moved = 0
for j = 3, #ARGV, 2 do
  local id, seq = ARGV[j], ARGV[j + 1]
  local cur = redis.call('ZSCORE', KEYS[1], id)
  if seq == '' or (cur and tonumber(cur) == tonumber(seq)) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2] .. id)
    moved = moved + 1
  end
end
return moved
"""
)

_PROMOTE = Script(
    """
-- KEYS: seq, delayed, then one zset per queue ; ARGV: now, limit, then the queue names
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due == 0 then return 0 end
local target = {}
for q = 3, #ARGV do target[ARGV[q]] = KEYS[q] end
local seq = redis.call('INCR', KEYS[1])
for _, member in ipairs(due) do
  local queue, id = string.match(member, '^([%a_]+):(%d+)$')
  if queue and target[queue] then redis.call('ZADD', target[queue], seq, id) end
  redis.call('ZREM', KEYS[2], member)
end
return #due
"""
)


def _int(value: bytes | str | int | float) -> int:
    if isinstance(value, bytes):
        value = value.decode()
    return int(float(value)) if isinstance(value, str) and "." in value else int(value)


async def push(
    redis: Redis, keys: Keys, hints: Hints, *, cap: int = CAP, now: float | None = None
) -> Pushed:
    """Queue the hints in one round trip, at most ``cap`` ids waiting in all (see the module)."""
    if hints.is_empty():
        return Pushed(scheduled=False)
    script_keys = [keys.hints_seq, keys.hints_scheduled, keys.hints_overflow, keys.hints_delayed]
    script_keys.extend(keys.hints_queue(q) for q in QUEUES)
    when = int(now if now is not None else time.time())
    args: list[int | str] = [when, SCHEDULED_TTL_MS, cap, len(QUEUES), OVERFLOW_TTL_MS]

    def group(queue: str, restore_of: EntityKind, kind: str, items: list[int]) -> None:
        restore = keys.hints_restores(restore_of.singular)
        script_keys.extend((keys.hints_queue(queue), keys.hints_stamps(queue), restore))
        args.extend((kind, len(items) // 2 if kind == "c" else len(items), *items))

    for k in ENTITY_KINDS:  # deletes first: a restore in the same push keeps its flag
        if hints.deletes[k.name]:
            group(k.deletes_queue, k, "d", sorted(hints.deletes[k.name]))
    for k in ENTITY_KINDS:
        changes = {**dict.fromkeys(hints.restores[k.name], 0), **hints.changes[k.name]}
        if changes:
            group(k.name, k, "c", [x for pair in sorted(changes.items()) for x in pair])
    for k in ENTITY_KINDS:
        if hints.restores[k.name]:
            group(k.name, k, "r", sorted(hints.restores[k.name]))
    scheduled, dropped, first = await _PUSH(redis, script_keys, args)
    return Pushed(bool(scheduled), int(dropped), bool(first))


async def enqueue_drain(arq: ArqRedis, keys: Keys) -> None:
    """Enqueue a ``process_hints`` job (ids under the prefix; each enqueue is a new job)."""
    await arq.enqueue_job(
        PROCESS_JOB, _queue_name=keys.queue, _job_id=keys.job_id(PROCESS_JOB, uuid.uuid4().hex)
    )


async def push_and_schedule(
    redis: Redis, arq: ArqRedis, keys: Keys, hints: Hints, *, cap: int = CAP
) -> Pushed:
    """Queue the hints and, when this push set the scheduled flag, enqueue ``process_hints``."""
    pushed = await push(redis, keys, hints, cap=cap)
    if pushed.scheduled:
        await enqueue_drain(arq, keys)
    return pushed


async def ensure_scheduled(redis: Redis, arq: ArqRedis, keys: Keys) -> bool:
    """For the periodic tick: enqueue ``process_hints`` if ids wait and no job is on its way."""
    if await pending_count(redis, keys) == 0:
        return False
    if not await redis.set(keys.hints_scheduled, b"1", nx=True, px=SCHEDULED_TTL_MS):
        return False
    await enqueue_drain(arq, keys)
    return True


async def claim(redis: Redis, keys: Keys, queue: str, limit: int = 250) -> list[Claimed]:
    """Up to ``limit`` queued ids of ``queue``, oldest hint first, without removing them."""
    kind_of(queue)  # a ValueError for an unknown queue
    flat = await _CLAIM(redis, [keys.hints_queue(queue), keys.hints_stamps(queue)], [limit])
    return [(_int(flat[j]), _int(flat[j + 1]), _int(flat[j + 2])) for j in range(0, len(flat), 3)]


async def done(redis: Redis, keys: Keys, queue: str, items: Iterable[Claimed]) -> int:
    """Remove the claimed ids whose hint did not change since :func:`claim`; how many went.

    For a changes queue this also consumes their restore flags.
    """
    kind_of(queue)  # a ValueError for an unknown queue
    args = [x for ident, seq, _ in items for x in (ident, seq)]
    if not args:
        return 0
    kind = kind_of(queue)
    restore = keys.hints_restores(kind.singular) if queue == kind.name else ""
    script_keys = [keys.hints_queue(queue), keys.hints_stamps(queue), restore]
    return int(await _DONE(redis, script_keys, args))


async def retry_later(
    redis: Redis,
    keys: Keys,
    queue: str,
    ids: Iterable[int | Claimed],
    delay_s: float,
    *,
    now: float | None = None,
) -> int:
    """Move ids from ``queue`` to ``hints:delayed`` for ``delay_s`` (a lagging read).

    Pass the claimed tuples to move only ids not re-hinted since the claim (a re-hinted id stays
    queued and is fetched again soon anyway); a bare id is moved unconditionally. The stamps
    and restore entries stay, for the retry to compare against.
    """
    kind_of(queue)  # a ValueError for an unknown queue
    due = (now if now is not None else time.time()) + delay_s
    args: list[int | float | str] = [due, f"{queue}:"]
    for item in ids:
        args += (item, "") if isinstance(item, int) else (item[0], item[1])
    if len(args) == 2:
        return 0
    return int(await _RETRY(redis, [keys.hints_queue(queue), keys.hints_delayed], args))


async def promote_due(
    redis: Redis, keys: Keys, now: float | None = None, *, limit: int = 1000
) -> int:
    """Move delayed ids that are due back to their queue (with a fresh seq)."""
    script_keys = [keys.hints_seq, keys.hints_delayed, *(keys.hints_queue(q) for q in QUEUES)]
    when = now if now is not None else time.time()
    return int(await _PROMOTE(redis, script_keys, [when, limit, *QUEUES]))


async def pending_count(redis: Redis, keys: Keys) -> int:
    """Ids waiting in the queues (delayed retries not yet due are not counted)."""
    async with redis.pipeline(transaction=False) as pipe:
        for queue in QUEUES:
            pipe.zcard(keys.hints_queue(queue))
        counts = await pipe.execute()
    return sum(int(c) for c in counts)


async def delayed_count(redis: Redis, keys: Keys) -> int:
    return int(await redis.zcard(keys.hints_delayed))


async def restores(redis: Redis, keys: Keys, queue: str, ids: Iterable[int]) -> set[int]:
    """Those of ``ids`` flagged as restored (a kind's two queues share one flag set)."""
    kind = kind_of(queue)
    wanted = list(ids)
    if not wanted:
        return set()
    pending = redis.smismember(keys.hints_restores(kind.singular), wanted)
    flags = await cast("Awaitable[list[int]]", pending)
    return {ident for ident, flag in zip(wanted, flags, strict=True) if flag}


async def clear_scheduled(redis: Redis, keys: Keys) -> None:
    await redis.delete(keys.hints_scheduled)


async def acquire_lock(redis: Redis, keys: Keys, ttl_ms: int = LOCK_TTL_MS) -> str | None:
    """The single drainer's lock: a token when taken, None when another drainer holds it."""
    return await locks.acquire(redis, keys.hints_lock, ttl_ms)


async def extend_lock(redis: Redis, keys: Keys, token: str, ttl_ms: int = LOCK_TTL_MS) -> bool:
    """Keep holding the lock (call between batches); False when it was lost."""
    return await locks.extend(redis, keys.hints_lock, token, ttl_ms)


async def release_lock(redis: Redis, keys: Keys, token: str) -> bool:
    """Release the lock if we still hold it (compare-and-delete)."""
    return await locks.release(redis, keys.hints_lock, token)
