"""A dependency that fails a process at start: one line naming it and its host:port, never a
secret, and a documented exit code (4 unreachable, 5 credentials refused), from every command.

Real servers throughout: a port nothing listens on for "unreachable", a ``redis-server`` with
``--requirepass`` and an embedded PostgreSQL with password authentication for "refused"."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import exceptions as redis_errors

from service.cli import main
from service.resources import Unreachable, failure_of
from service.settings import Needs, Settings
from tests.children import child_env, running
from tests.servers import PasswordPostgres, free_port, password_postgres, redis_server

SECRET = "hunter2-never-in-logs"
NEEDS_REDIS = ("web", "worker", "status", "backfill", "import-history")
EVERY = ("web", "worker", "status", "migrate", "backfill", "import-history")
OPENINGS = ("web", "worker", "migrate")  # every other command opens what web opens


def service_env(env: dict[str, str], **overrides: str) -> dict[str, str]:
    """A complete environment for every command; Kommo is never reached in these tests."""
    return child_env(
        env,
        REDIS_PREFIX=env["REDIS_PREFIX"] + "deps:",
        KOMMO_BASE_URL=f"http://127.0.0.1:{free_port()}",
        KOMMO_TOKEN=SECRET,
        PORT=str(free_port()),
        **overrides,
    )


async def one_line_exit(command: str, env: dict[str, str], expected: str, code: int) -> None:
    args = ["--host", "127.0.0.1"] if command == "web" else []
    async with running(command, *args, env=env) as child:
        assert await child.exit_code(60) == code, child.output
    assert child.lines[-1] == f"kommo-sync: {expected}", child.output
    assert "Traceback" not in child.output, child.output
    assert SECRET not in child.output
    if command == "web":  # uvicorn's own lines come first; the failure is said once in the log
        assert child.count(re.escape(expected)) == 2, child.output
    else:
        assert child.lines == [f"kommo-sync: {expected}"], child.output


@pytest.mark.parametrize("command", EVERY)
async def test_unreachable_postgres_is_one_line_and_exit_4(
    env: dict[str, str], command: str
) -> None:
    port = free_port()
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres"
    expected = f"cannot reach PostgreSQL at 127.0.0.1:{port} (ConnectionRefusedError)"
    await one_line_exit(command, service_env(env, DATABASE_URL=url), expected, 4)


@pytest.mark.parametrize("command", NEEDS_REDIS)
async def test_unreachable_redis_is_one_line_and_exit_4(env: dict[str, str], command: str) -> None:
    port = free_port()
    url = f"redis://:{SECRET}@127.0.0.1:{port}/0"
    expected = f"cannot reach Redis at 127.0.0.1:{port} (ConnectionRefusedError)"
    await one_line_exit(command, service_env(env, REDIS_URL=url), expected, 4)


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[int]:
    with redis_server("--requirepass", SECRET + "-right") as port:
        yield port


@pytest.mark.parametrize(
    ("command", "password", "answer"),
    [
        ("web", SECRET, "invalid username-password pair or user is disabled."),
        ("worker", SECRET, "invalid username-password pair or user is disabled."),
        ("worker", "", "Authentication required."),
    ],
)
async def test_a_wrong_redis_password_is_one_line_and_exit_5(
    env: dict[str, str], redis_with_password: int, command: str, password: str, answer: str
) -> None:
    port = redis_with_password
    url = f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    expected = f"Redis at 127.0.0.1:{port} refused our credentials (AuthenticationError: {answer})"
    await one_line_exit(command, service_env(env, REDIS_URL=url), expected, 5)


@pytest.fixture(scope="module")
async def postgres_with_password() -> AsyncIterator[PasswordPostgres]:
    async with password_postgres() as pg:
        yield pg


@pytest.mark.parametrize("command", OPENINGS)
async def test_a_wrong_postgres_password_is_one_line_and_exit_5(
    env: dict[str, str], postgres_with_password: PasswordPostgres, command: str
) -> None:
    pg = postgres_with_password
    expected = (
        f"PostgreSQL at {pg.socket_dir} refused our credentials (InvalidPasswordError: "
        f'password authentication failed for user "{pg.user}")'
    )
    await one_line_exit(command, service_env(env, DATABASE_URL=pg.url(SECRET)), expected, 5)


async def test_an_unknown_postgres_role_is_refused_credentials(env: dict[str, str]) -> None:
    """The local server trusts 127.0.0.1, but a role must still exist."""
    url = f"postgresql://kommo_sync_no_such_role:{SECRET}@127.0.0.1:5432/postgres"
    expected = (
        "PostgreSQL at 127.0.0.1:5432 refused our credentials "
        '(InvalidAuthorizationSpecificationError: role "kommo_sync_no_such_role" does not exist)'
    )
    await one_line_exit("migrate", service_env(env, DATABASE_URL=url), expected, 5)


def test_help_documents_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code, meaning in [
        ("0", "stopped by SIGTERM or SIGINT"),
        ("2", "configuration error"),
        ("3", "Kommo refused the credential"),
        ("4", "cannot be reached"),
        ("5", "refused our credentials"),
    ]:
        assert re.search(rf"^\s+{code}\s+.*{meaning}", text, re.M), (code, text)


def test_a_connection_lost_inside_watch_is_an_outage(env: dict[str, str]) -> None:
    """arq picks up jobs under WATCH; redis-py reports a connection lost there as WatchError."""
    settings = Settings.from_env(env, Needs.DATABASE | Needs.REDIS)
    try:
        try:
            raise redis_errors.ConnectionError("Connection closed by server.")
        except redis_errors.ConnectionError:
            raise redis_errors.WatchError("A ConnectionError occurred on while watching")  # noqa: B904
    except redis_errors.WatchError as lost:
        failure = failure_of(lost, settings)
    assert isinstance(failure, Unreachable) and failure.service == "Redis"
    assert failure_of(redis_errors.WatchError("Watched variable changed."), settings) is None
