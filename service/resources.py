"""Every long-lived resource of a process, opened and closed in one place, and its failures named.

The web lifespan opens :func:`open_resources` (Postgres, Redis, the arq pool); workers and the
commands that call Kommo open :func:`open_sync_resources`, which adds the Kommo client. Both
hand them around as one immutable object.

When a dependency fails us, :func:`failure_of` says so for people: which service, where
(``host:port``, never a user or a password) and whether trying again can help::

    DependencyError        "cannot reach Redis at 127.0.0.1:6390 (ConnectionRefusedError)"
     ├── Unreachable       refused, timed out, dropped, shutting down: retry later   (exit 4)
     └── CredentialRefused a wrong password or user: retrying will not help          (exit 5)

Opening a resource raises these already; :func:`failure_of` also names the drivers' own
exceptions met later (a lost connection in a job or a request). :class:`Outages` logs one line
when a dependency goes and one when it is back, however many attempts fail in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from service.keys import Keys
from service.kommo.client import KommoClient, kommo_client
from service.kommo.errors import KommoError, KommoUnavailable
from service.settings import Settings

POSTGRES, REDIS, KOMMO = "PostgreSQL", "Redis", "Kommo"
CONNECT_TIMEOUT_S = 10.0  # a host that never answers is reported, not waited on for a minute
CLOSE_TIMEOUT_S = 3.0  # then the pool's connections are dropped instead of closed politely
PROBE_TIMEOUT_S = 2.0


class DependencyError(Exception):
    """A service this process depends on failed it; the message is one line for an operator."""

    exit_code = 1

    def __init__(self, service: str, address: str, cause: BaseException) -> None:
        self.service, self.address, self.cause = service, address, cause
        super().__init__(self.describe())

    def describe(self) -> str:
        raise NotImplementedError


class Unreachable(DependencyError):
    """Refused, timed out, dropped or shutting down: the same call may work later."""

    exit_code = 4

    def describe(self) -> str:
        return f"cannot reach {self.service} at {self.address} ({_why(self.cause)})"


class CredentialRefused(DependencyError):
    """The service refused our user or password (as set in the URL): retrying will not help."""

    exit_code = 5

    def describe(self) -> str:
        return (
            f"{self.service} at {self.address} refused our credentials "
            f"({type(self.cause).__name__}: {_first_line(self.cause)})"
        )


Errors = tuple[type[BaseException], ...]

# asyncpg raises the socket's own OSError (refused, timed out, no such host); redis-py and httpx
# wrap theirs, so a bare OSError met in our code is PostgreSQL's.
POSTGRES_DOWN: Errors = (
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    OSError,
)
POSTGRES_REFUSED: Errors = (asyncpg.InvalidAuthorizationSpecificationError,)  # + InvalidPassword
REDIS_DOWN: Errors = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
)
REDIS_REFUSED: Errors = (  # WRONGPASS, NOAUTH, "invalid password", AUTH without a password set
    redis_errors.AuthenticationError,
    redis_errors.AuthorizationError,
    redis_errors.AuthenticationWrongNumberOfArgsError,
)


def failure_of(exc: BaseException, settings: Settings) -> DependencyError | None:
    """``exc`` named as a dependency failure, or None when it is something else (a bug)."""
    if isinstance(exc, DependencyError):
        return exc
    if isinstance(exc, REDIS_REFUSED):
        return CredentialRefused(REDIS, redis_address(settings), exc)
    if isinstance(exc, REDIS_DOWN):
        return Unreachable(REDIS, redis_address(settings), exc)
    if isinstance(exc, POSTGRES_REFUSED):
        return CredentialRefused(POSTGRES, postgres_address(settings), exc)
    if isinstance(exc, POSTGRES_DOWN):
        return Unreachable(POSTGRES, postgres_address(settings), exc)
    if isinstance(exc, KommoUnavailable):
        return Unreachable(KOMMO, kommo_address(settings), exc)
    lost = exc.__cause__ or exc.__context__
    if isinstance(exc, redis_errors.WatchError) and lost is not None:
        # redis-py turns a connection lost inside WATCH (arq's job pickup) into a WatchError
        # raised while handling the ConnectionError
        return failure_of(lost, settings)
    return None


def address(url: str | None, default_port: int) -> str:
    """``host:port`` of a DSN (its socket path for a unix socket), never its user or password."""
    parts = urlsplit(url or "")
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        return parse_qs(parts.query).get("host", [parts.path or "localhost"])[0]
    if "," not in hosts and (hosts.endswith("]") or ":" not in hosts):
        hosts += f":{default_port}"
    return hosts


def postgres_address(settings: Settings) -> str:
    return address(settings.database_url.value if settings.database_url else None, 5432)


def redis_address(settings: Settings) -> str:
    return address(settings.redis_url.value if settings.redis_url else None, 6379)


def kommo_address(settings: Settings) -> str:
    base = settings.kommo_base_url or ""
    return address(base, 443 if base.startswith("https:") else 80)


def _why(exc: BaseException) -> str:
    """What went wrong, in a word or a few: the socket error a redis-py error wraps
    (``ConnectionRefusedError``), the type otherwise, with its text when the type alone says
    little (``gaierror: Name or service not known``); a Kommo error's own message (it names the
    call and the status, never a token)."""
    if isinstance(exc, KommoError):
        return str(exc)
    wrapped = exc.__cause__ or exc.__context__
    if isinstance(exc, redis_errors.RedisError) and isinstance(wrapped, OSError):
        exc = wrapped
    name = type(exc).__name__
    if type(exc) in (OSError, redis_errors.ConnectionError) or name == "gaierror":
        return f"{name}: {_first_line(exc)}"
    return name


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "strerror", None) or exc).strip().splitlines()
    return text[0][:200] if text else "no message"


_OPENING: dict[str, tuple[Errors, Errors]] = {
    POSTGRES: (POSTGRES_REFUSED, POSTGRES_DOWN),
    REDIS: (REDIS_REFUSED, (*REDIS_DOWN, OSError)),
}
_PROBE_FAILED: Errors = (*POSTGRES_DOWN, *POSTGRES_REFUSED, redis_errors.RedisError)


@contextlib.contextmanager
def _named(service: str, where: str) -> Iterator[None]:
    """Opening ``service``: its connection errors become :class:`DependencyError`."""
    refused, down = _OPENING[service]
    try:
        yield
    except refused as exc:
        raise CredentialRefused(service, where, exc) from exc
    except down as exc:
        raise Unreachable(service, where, exc) from exc


class Outages:
    """The dependencies this process finds down, logged once per change of state: an hour's
    outage costs two lines ("cannot reach …; jobs will retry", "… reachable again"), not one
    per attempt."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._down: dict[str, DependencyError] = {}

    @property
    def down(self) -> list[str]:
        return list(self._down)

    def lost(self, failure: DependencyError, consequence: str) -> None:
        if failure.service not in self._down:
            self._log.warning("%s; %s", failure, consequence)
        self._down[failure.service] = failure

    def back(self, service: str) -> None:
        failure = self._down.pop(service, None)
        if failure is not None:
            self._log.info("%s at %s reachable again", service, failure.address)

    def all_back(self) -> None:
        for service in self.down:
            self.back(service)


@dataclasses.dataclass(frozen=True)
class Resources:
    settings: Settings
    keys: Keys
    pool: asyncpg.Pool
    redis: Redis
    arq: ArqRedis

    async def reachable(self, service: str) -> bool:
        """Does ``service`` (:data:`POSTGRES` or :data:`REDIS`) answer a trivial request now?"""
        if service not in (POSTGRES, REDIS):
            return False
        probe = self.pool.fetchval("SELECT 1") if service == POSTGRES else self.redis.ping()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                await probe
        except _PROBE_FAILED:
            return False
        return True


@dataclasses.dataclass(frozen=True)
class SyncResources(Resources):
    """What the sync engine needs: the resources and a Kommo client that is always there."""

    kommo: KommoClient


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """arq's connection settings; no retries of its own (callers decide, and say so once)."""
    return dataclasses.replace(RedisSettings.from_dsn(settings.redis_dsn), conn_retries=0)


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Postgres, then Redis; either failing raises a :class:`DependencyError` naming it."""
    async with contextlib.AsyncExitStack() as stack:
        keys = Keys.of(settings)
        with _named(POSTGRES, postgres_address(settings)):
            pool = await asyncpg.create_pool(
                settings.database_dsn,
                min_size=1,
                max_size=10,
                command_timeout=60,
                timeout=CONNECT_TIMEOUT_S,
            )
        stack.push_async_callback(_close_pool, pool)
        redis: Redis = Redis.from_url(settings.redis_dsn, decode_responses=False)
        stack.push_async_callback(redis.aclose)
        with _named(REDIS, redis_address(settings)):
            arq = await create_pool(arq_redis_settings(settings), default_queue_name=keys.queue)
        stack.push_async_callback(arq.aclose)
        yield Resources(settings, keys, pool, redis, arq)


async def _close_pool(pool: asyncpg.Pool) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await pool.close()
    except TimeoutError:
        pool.terminate()


@contextlib.asynccontextmanager
async def open_sync_resources(
    settings: Settings, *, kommo_transport: httpx.AsyncBaseTransport | None = None
) -> AsyncIterator[SyncResources]:
    """Also the Kommo client; ``kommo_transport`` lets tests route its calls to the simulator."""
    async with (
        open_resources(settings) as res,
        kommo_client(settings, res.redis, res.pool, transport=kommo_transport) as kommo,
    ):
        yield SyncResources(res.settings, res.keys, res.pool, res.redis, res.arq, kommo)
