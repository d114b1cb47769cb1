"""Every Redis key and channel name the service uses, in one place, under ``REDIS_PREFIX``.

Several deployments may share one Redis server: each sets its own ``REDIS_PREFIX``, and every
name below starts with it (arq's own fixed ``arq:`` key prefixes aside: there the queue name
and every job id carry the prefix, see :mod:`workers.main`). Pub/sub ignores the logical
database, so the channel also carries the database number of ``REDIS_URL`` (when it is not 0):
deployments that differ only by database never hear each other. Nothing else in the code
spells a key literal.

=========================================  ===================================================
``lead_update[:db<N>]``                     pub/sub channel of the ``lead_update`` envelope
``arq:queue``, ``arq:health-check``        arq's queue (a ZSET of job ids) and health key
``job:<name>:<id>``                        arq job ids of our own (every enqueue names one)
``hints:*``                                the webhook hint queue (:mod:`service.sync.hints`)
``kommo:budget:*``                         the shared request budget (:mod:`service.kommo.budget`)
``reconcile:*``                            tick claims, the running lock, last tick, tick count
``backfill:lock``                          the one backfill at a time
``sync:stopped``                           set when Kommo refused the credential
``webhook:checked``                        the subscription check ran recently
``oauth:state:<nonce>``                    an OAuth install ``state`` already used (single use)
``stats``, ``stats:freshness``, ``stats:errors``  deployment-wide counters and samples
=========================================  ===================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from service.settings import Settings


@dataclass(frozen=True)
class Keys:
    """The deployment's key names; build one from ``Settings.redis_prefix``."""

    prefix: str = ""
    db: int = 0  # the logical database of REDIS_URL

    @classmethod
    def of(cls, settings: Settings) -> Keys:
        return cls(settings.redis_prefix, redis_db(settings.redis_dsn))

    def _k(self, name: str) -> str:
        return self.prefix + name

    def matching(self) -> str:
        """A SCAN pattern for every key of this deployment (tests, cleanup)."""
        return self.prefix + "*"

    # --- pub/sub and arq -------------------------------------------------------------------
    @property
    def lead_update(self) -> str:
        return self._k("lead_update" if self.db == 0 else f"lead_update:db{self.db}")

    @property
    def queue(self) -> str:
        return self._k("arq:queue")

    @property
    def health_check(self) -> str:
        return self._k("arq:health-check")

    def job_id(self, name: str, unique: str) -> str:
        """An arq job id under the prefix: ``unique`` dedupes enqueues of the same work."""
        return self._k(f"job:{name}:{unique}")

    def cron_name(self, name: str) -> str:
        """The name arq builds cron job ids from (``cron:<name>:<time>``)."""
        return self._k(name)

    # --- sync state ------------------------------------------------------------------------
    @property
    def stopped(self) -> str:
        return self._k("sync:stopped")

    @property
    def webhook_checked(self) -> str:
        return self._k("webhook:checked")

    @property
    def backfill_lock(self) -> str:
        return self._k("backfill:lock")

    def reconcile_tick(self, number: int) -> str:
        return self._k(f"reconcile:tick:{number}")

    @property
    def reconcile_running(self) -> str:
        return self._k("reconcile:running")

    @property
    def reconcile_last(self) -> str:
        return self._k("reconcile:last")

    @property
    def reconcile_runs(self) -> str:
        return self._k("reconcile:runs")

    def oauth_state(self, nonce: str) -> str:
        """Set (NX, with the state's lifetime) when an install's ``state`` is first used."""
        return self._k(f"oauth:state:{nonce}")

    # --- the webhook hint queue (see service.sync.hints) -------------------------------------
    @property
    def hints_seq(self) -> str:
        return self._k("hints:seq")

    def hints_queue(self, queue: str) -> str:
        """A hint queue's ZSET: ``leads``, ``contacts``, ``lead_deletes``, ``contact_deletes``."""
        return self._k(f"hints:{queue}")

    def hints_stamps(self, queue: str) -> str:
        """Per id: the newest ``last_modified`` (changes) or the time a delete was received."""
        suffix = "at" if queue.endswith("_deletes") else "lm"
        return self._k(f"hints:{queue}:{suffix}")

    def hints_restores(self, singular: str) -> str:
        """The ids of one entity kind flagged as restored (``lead``, ``contact``)."""
        return self._k(f"hints:{singular}_restores")

    def hints_lag_tries(self, queue: str) -> str:
        return self._k(f"hints:lag_tries:{queue}")

    @property
    def hints_delayed(self) -> str:
        return self._k("hints:delayed")

    @property
    def hints_scheduled(self) -> str:
        return self._k("hints:scheduled")

    @property
    def hints_overflow(self) -> str:
        """Set while a burst of hints overflows ``HINT_QUEUE_MAX`` (its first drop is logged)."""
        return self._k("hints:overflow")

    @property
    def hints_lock(self) -> str:
        return self._k("hints:lock")

    @property
    def dictionaries_stale(self) -> str:
        """SET of dictionaries a write found incomplete: pipelines, users, loss_reasons,
        custom_fields:<kind>."""
        return self._k("dictionaries:stale")

    # --- the Kommo request budget ----------------------------------------------------------
    @property
    def budget_calls(self) -> str:
        return self._k("kommo:budget:calls")

    @property
    def budget_state(self) -> str:
        return self._k("kommo:budget:state")

    @property
    def budget_breaker(self) -> str:
        return self._k("kommo:budget:breaker")

    def budget_waiting(self, priority: int) -> str:
        return self._k(f"kommo:budget:waiting:{priority}")

    @property
    def budget_total_calls(self) -> str:
        """The log of every budget's calls, for KOMMO_RATE_LIMIT_TOTAL."""
        return self._k("kommo:budget:total:calls")

    # --- deployment-wide statistics (service.sync.status) ----------------------------------
    @property
    def stats(self) -> str:
        return self._k("stats")

    @property
    def stats_freshness(self) -> str:
        return self._k("stats:freshness")

    @property
    def stats_errors(self) -> str:
        return self._k("stats:errors")


def redis_db(url: str) -> int:
    """The logical database a Redis URL selects (``redis://host/3``, ``?db=3``), 0 by default."""
    parts = urlsplit(url)
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name == "db" and value.isdigit():
            return int(value)
    path = parts.path.strip("/")
    return int(path) if path.isdigit() else 0
