"""The webhook hint queue in Redis: coalescing "this id changed" signals for the workers.

A webhook only tells us *which* leads and contacts changed (see :mod:`service.webhooks`);
the worker fetches the current records by id, up to 250 a call. This queue coalesces the
hints so that N changes of the same id cost one fetch, and it never relies on arq job ids
for deduplication (arq blocks a fixed job id while its result is kept).

Redis layout (every key through ``settings.key``)::

    hints:seq                   INCR counter; one value per push (and per promotion)
    hints:leads                 ZSET  lead id -> seq of its latest hint (claim order: oldest first)
    hints:leads:lm              HASH  lead id -> max last_modified seen in webhooks (0 if none)
    hints:contacts(:lm)         the same for contacts
    hints:lead_deletes          ZSET  lead id -> seq of its latest delete hint
    hints:lead_deletes:at       HASH  lead id -> unix time the delete webhook was received
    hints:contact_deletes(:at)  the same for contacts
    hints:lead_restores         SET   lead ids restored in Kommo (the fetch may clear a tombstone)
    hints:contact_restores      SET   the same for contacts
    hints:delayed               ZSET  "<kind>:<id>" -> due unix time (lagging-read retries)
    hints:scheduled             flag, SET NX PX 5000: a ``process_hints`` job is on its way
    hints:lock                  the single drainer's lock (random token, PX 10000)

Because a re-hint always gets a larger seq, :func:`done` removes only the members whose seq
is unchanged since :func:`claim`: an id that changed again while it was being fetched stays
queued and is fetched again. (A consequence: an id re-hinted more often than the backlog
drains moves to the back each time; with Kommo's 1,750 leads/s ceiling that only matters in a
sustained overload.)

Restores. A restore hint adds the id to the fetch ZSET *and* to the restore SET. A delete hint
removes a pending restore flag (the later delete wins); when one push carries both, the flag is
kept and the fetch decides. Suggested worker semantics: for a delete hint whose id is flagged
as restored, skip the tombstone (the fetch kind resolves it: found -> restore, not found ->
tombstone); the fetch kind consumes the flag in :func:`done`.

Who enqueues. :func:`push` writes the hints and sets ``hints:scheduled`` with NX in the same
round trip; only the caller that set the flag enqueues the arq job ``process_hints`` (no
``_job_id``), so a burst of webhooks costs one enqueue.

Drain protocol (the ``process_hints`` job)::

    token = await acquire_lock(...)          # can't? exit: the holder loops and will see our hints
    if token is None: return
    await clear_scheduled(...)               # pushes from now on enqueue a follow-up job
    while True:
        await promote_due(...)               # delayed retries whose time has come
        for kind in KINDS: claim(...) -> process -> done(...) / retry_later(...)
        (extend_lock(...) between batches; stop looping when every kind claimed nothing)
        await clear_scheduled(...)           # before releasing: see below
        await release_lock(...)
        if await pending_count(...) == 0: return
        token = await acquire_lock(...)      # a hint arrived after the last claim
        if token is None: return             # ... and another job already holds the lock

Why nothing is stranded: a push writes its ids and tries ``SET NX`` atomically. If it ran
before the drainer's final ``clear_scheduled``, the drainer's ``pending_count`` (which comes
after) sees its ids and loops; if it ran after, its ``SET NX`` succeeds and it enqueues a new
job. A crashed drainer leaves its lock to expire (10 s) and the flag to expire (5 s); the
periodic tick (reconcile) should call :func:`promote_due` and :func:`ensure_scheduled` so that
queued ids and due retries never wait for the next webhook.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import secrets
import time
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from service.settings import Settings

if TYPE_CHECKING:
    from service.resources import Resources

Kind = Literal["leads", "contacts", "lead_deletes", "contact_deletes"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
Claimed = tuple[int, int, int]
"""(id, seq, last_modified); for the delete kinds the third item is the deleted-at time."""

SCHEDULED_TTL_MS: Final = 5_000
LOCK_TTL_MS: Final = 10_000
PROCESS_JOB: Final = "process_hints"


@dataclasses.dataclass(slots=True)
class Hints:
    """What one webhook body says changed: ids and kinds only (the parser's result).

    ``lead_changes`` maps id -> max(last_modified, updated_at) from the body (0 when absent)
    and includes the restored ids; ``lead_deletes`` never shares an id with ``lead_changes``
    unless that id was also restored in the same body. Companies are counted, not queued.
    """

    account_id: int | None = None
    subdomain: str | None = None
    lead_changes: dict[int, int] = dataclasses.field(default_factory=dict)
    lead_deletes: set[int] = dataclasses.field(default_factory=set)
    lead_restores: set[int] = dataclasses.field(default_factory=set)
    contact_changes: dict[int, int] = dataclasses.field(default_factory=dict)
    contact_deletes: set[int] = dataclasses.field(default_factory=set)
    contact_restores: set[int] = dataclasses.field(default_factory=set)
    companies: int = 0
    ignored: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    def is_empty(self) -> bool:
        """True when nothing in it is queued (e.g. companies or ignored kinds only)."""
        return not (
            self.lead_changes
            or self.lead_deletes
            or self.lead_restores
            or self.contact_changes
            or self.contact_deletes
            or self.contact_restores
        )

    def queued(self) -> dict[str, int]:
        """How many distinct ids go to each queue."""
        return {
            "leads": len(self.lead_changes.keys() | self.lead_restores),
            "contacts": len(self.contact_changes.keys() | self.contact_restores),
            "lead_deletes": len(self.lead_deletes),
            "contact_deletes": len(self.contact_deletes),
            "lead_restores": len(self.lead_restores),
            "contact_restores": len(self.contact_restores),
        }


class _Script:
    """A Lua script run by EVALSHA on any client; no connection needed to create it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, redis: Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)  # type: ignore[misc]
        except NoScriptError:
            return await redis.eval(self.source, len(keys), *keys, *args)  # type: ignore[misc]


_PUSH = _Script(
    """
-- KEYS: seq, leads, leads:lm, contacts, contacts:lm, lead_deletes, lead_deletes:at,
--       contact_deletes, contact_deletes:at, lead_restores, contact_restores, scheduled
-- ARGV: now, ttl_ms, n_lead_deletes, n_contact_deletes, n_leads, n_contacts,
--       n_lead_restores, n_contact_restores, then the ids in that order ((id, lm) for changes)
local seq = redis.call('INCR', KEYS[1])
local now = ARGV[1]
local i = 9
local function deletes(zkey, hkey, rkey, n)
  for _ = 1, n do
    local id = ARGV[i]
    redis.call('ZADD', zkey, seq, id)
    redis.call('HSET', hkey, id, now)
    redis.call('SREM', rkey, id)
    i = i + 1
  end
end
local function changes(zkey, hkey, n)
  for _ = 1, n do
    local id, lm = ARGV[i], ARGV[i + 1]
    redis.call('ZADD', zkey, seq, id)
    if tonumber(lm) > tonumber(redis.call('HGET', hkey, id) or '0') then
      redis.call('HSET', hkey, id, lm)
    end
    i = i + 2
  end
end
local function restores(rkey, n)
  for _ = 1, n do
    redis.call('SADD', rkey, ARGV[i])
    i = i + 1
  end
end
deletes(KEYS[6], KEYS[7], KEYS[10], tonumber(ARGV[3]))
deletes(KEYS[8], KEYS[9], KEYS[11], tonumber(ARGV[4]))
changes(KEYS[2], KEYS[3], tonumber(ARGV[5]))
changes(KEYS[4], KEYS[5], tonumber(ARGV[6]))
restores(KEYS[10], tonumber(ARGV[7]))
restores(KEYS[11], tonumber(ARGV[8]))
if redis.call('SET', KEYS[12], '1', 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""
)

_CLAIM = _Script(
    """
-- KEYS: zset, extra hash ; ARGV: limit
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

_DONE = _Script(
    """
-- KEYS: zset, extra hash, restore set or '' ; ARGV: (id, seq) pairs
local removed = 0
for j = 1, #ARGV, 2 do
  local id = ARGV[j]
  local cur = redis.call('ZSCORE', KEYS[1], id)
  if cur and tonumber(cur) == tonumber(ARGV[j + 1]) then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    if KEYS[3] ~= '' then
      redis.call('SREM', KEYS[3], id)
    end
    removed = removed + 1
  end
end
return removed
"""
)

_RETRY = _Script(
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

_PROMOTE = _Script(
    """
-- KEYS: seq, delayed, leads, contacts, lead_deletes, contact_deletes ; ARGV: now, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due == 0 then
  return 0
end
local target = {leads = KEYS[3], contacts = KEYS[4], lead_deletes = KEYS[5],
                contact_deletes = KEYS[6]}
local seq = redis.call('INCR', KEYS[1])
for _, member in ipairs(due) do
  local kind, id = string.match(member, '^([%a_]+):(%d+)$')
  if kind and target[kind] then
    redis.call('ZADD', target[kind], seq, id)
  end
  redis.call('ZREM', KEYS[2], member)
end
return #due
"""
)

_RELEASE = _Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
)

_EXTEND = _Script(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
)


def _extra(kind: Kind) -> str:
    return f"hints:{kind}:lm" if kind in ("leads", "contacts") else f"hints:{kind}:at"


def _restore_set(kind: Kind) -> str:
    return "hints:lead_restores" if kind in ("leads", "lead_deletes") else "hints:contact_restores"


def _check(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"unknown hint kind {kind!r}")
    return kind


def _int(value: bytes | str | int | float) -> int:
    if isinstance(value, bytes):
        value = value.decode()
    return int(float(value)) if isinstance(value, str) and "." in value else int(value)


async def push(redis: Redis, settings: Settings, hints: Hints, *, now: float | None = None) -> bool:
    """Queue the hints in one round trip; True when the caller must enqueue ``process_hints``."""
    if hints.is_empty():
        return False
    k = settings.key
    lead_changes = hints.lead_changes
    if not hints.lead_restores <= lead_changes.keys():
        lead_changes = {**dict.fromkeys(hints.lead_restores, 0), **lead_changes}
    contact_changes = hints.contact_changes
    if not hints.contact_restores <= contact_changes.keys():
        contact_changes = {**dict.fromkeys(hints.contact_restores, 0), **contact_changes}
    args: list[int | str] = [
        int(now if now is not None else time.time()),
        SCHEDULED_TTL_MS,
        len(hints.lead_deletes),
        len(hints.contact_deletes),
        len(lead_changes),
        len(contact_changes),
        len(hints.lead_restores),
        len(hints.contact_restores),
    ]
    args += hints.lead_deletes
    args += hints.contact_deletes
    for changes in (lead_changes, contact_changes):
        for pair in changes.items():
            args += pair
    args += hints.lead_restores
    args += hints.contact_restores
    keys = [
        k("hints:seq"),
        k("hints:leads"),
        k("hints:leads:lm"),
        k("hints:contacts"),
        k("hints:contacts:lm"),
        k("hints:lead_deletes"),
        k("hints:lead_deletes:at"),
        k("hints:contact_deletes"),
        k("hints:contact_deletes:at"),
        k("hints:lead_restores"),
        k("hints:contact_restores"),
        k("hints:scheduled"),
    ]
    return bool(await _PUSH(redis, keys, args))


async def push_and_schedule(res: Resources, hints: Hints) -> None:
    """Queue the hints and, when this push set the scheduled flag, enqueue ``process_hints``."""
    if await push(res.redis, res.settings, hints):
        await res.arq.enqueue_job(PROCESS_JOB, _queue_name=res.queue_name)


async def ensure_scheduled(res: Resources) -> bool:
    """For the periodic tick: enqueue ``process_hints`` if ids wait and no job is on its way."""
    if await pending_count(res.redis, res.settings) == 0:
        return False
    flag = await res.redis.set(
        res.settings.key("hints:scheduled"), b"1", nx=True, px=SCHEDULED_TTL_MS
    )
    if not flag:
        return False
    await res.arq.enqueue_job(PROCESS_JOB, _queue_name=res.queue_name)
    return True


async def claim(redis: Redis, settings: Settings, kind: Kind, limit: int = 250) -> list[Claimed]:
    """Up to ``limit`` queued ids of ``kind``, oldest hint first, without removing them."""
    kind = _check(kind)
    k = settings.key
    flat = await _CLAIM(redis, [k(f"hints:{kind}"), k(_extra(kind))], [limit])
    return [(_int(flat[j]), _int(flat[j + 1]), _int(flat[j + 2])) for j in range(0, len(flat), 3)]


async def done(redis: Redis, settings: Settings, kind: Kind, items: Iterable[Claimed]) -> int:
    """Remove the claimed ids whose hint did not change since :func:`claim`; how many went.

    For ``leads``/``contacts`` this also consumes their restore flags.
    """
    kind = _check(kind)
    args: list[int] = []
    for ident, seq, _ in items:
        args += (ident, seq)
    if not args:
        return 0
    k = settings.key
    restore = k(_restore_set(kind)) if kind in ("leads", "contacts") else ""
    keys = [k(f"hints:{kind}"), k(_extra(kind)), restore]
    return int(await _DONE(redis, keys, args))


async def retry_later(
    redis: Redis,
    settings: Settings,
    kind: Kind,
    ids: Iterable[int | Claimed],
    delay_s: float,
    *,
    now: float | None = None,
) -> int:
    """Move ids from ``kind`` to ``hints:delayed`` for ``delay_s`` (a lagging read).

    Pass the claimed tuples to move only ids not re-hinted since the claim (a re-hinted id stays
    queued and is fetched again soon anyway); a bare id is moved unconditionally. The
    last_modified / deleted-at and restore entries stay, for the retry to compare against.
    """
    kind = _check(kind)
    due = (now if now is not None else time.time()) + delay_s
    args: list[int | float | str] = [due, f"{kind}:"]
    for item in ids:
        if isinstance(item, int):
            args += (item, "")
        else:
            args += (item[0], item[1])
    if len(args) == 2:
        return 0
    k = settings.key
    return int(await _RETRY(redis, [k(f"hints:{kind}"), k("hints:delayed")], args))


async def promote_due(
    redis: Redis, settings: Settings, now: float | None = None, *, limit: int = 1000
) -> int:
    """Move delayed ids that are due back to their kind's queue (with a fresh seq)."""
    k = settings.key
    keys = [k("hints:seq"), k("hints:delayed"), *(k(f"hints:{kind}") for kind in KINDS)]
    when = now if now is not None else time.time()
    return int(await _PROMOTE(redis, keys, [when, limit]))


async def pending_count(redis: Redis, settings: Settings) -> int:
    """Ids waiting in the four queues (delayed retries not yet due are not counted)."""
    async with redis.pipeline(transaction=False) as pipe:
        for kind in KINDS:
            pipe.zcard(settings.key(f"hints:{kind}"))
        counts = await pipe.execute()
    return sum(int(c) for c in counts)


async def delayed_count(redis: Redis, settings: Settings) -> int:
    return int(await redis.zcard(settings.key("hints:delayed")))


async def restores(redis: Redis, settings: Settings, kind: Kind, ids: Iterable[int]) -> set[int]:
    """Those of ``ids`` flagged as restored (``leads``/``lead_deletes`` share one flag set)."""
    kind = _check(kind)
    wanted = list(ids)
    if not wanted:
        return set()
    pending = redis.smismember(settings.key(_restore_set(kind)), wanted)
    flags = await cast("Awaitable[list[int]]", pending)
    return {ident for ident, flag in zip(wanted, flags, strict=True) if flag}


async def clear_scheduled(redis: Redis, settings: Settings) -> None:
    await redis.delete(settings.key("hints:scheduled"))


async def acquire_lock(redis: Redis, settings: Settings, ttl_ms: int = LOCK_TTL_MS) -> str | None:
    """The single drainer's lock: a token when taken, None when another drainer holds it."""
    token = secrets.token_hex(16)
    taken = await redis.set(settings.key("hints:lock"), token, nx=True, px=ttl_ms)
    return token if taken else None


async def extend_lock(
    redis: Redis, settings: Settings, token: str, ttl_ms: int = LOCK_TTL_MS
) -> bool:
    """Keep holding the lock (call between batches); False when it was lost."""
    return bool(await _EXTEND(redis, [settings.key("hints:lock")], [token, ttl_ms]))


async def release_lock(redis: Redis, settings: Settings, token: str) -> bool:
    """Release the lock if we still hold it (compare-and-delete)."""
    return bool(await _RELEASE(redis, [settings.key("hints:lock")], [token]))
