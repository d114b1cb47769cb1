"""The environment of a running ``make run`` stack, as a file a POSIX shell can source.

The first run in a checkout writes ``.local/dev.env``; a run started while another one lives
writes ``.local/dev-<PORT>.env``. The file holds every setting the stack's processes were given
(the database URL, the Kommo token, the WebSocket tokens: it is mode 0600), is written once the
stack is ready and removed when it stops, so the ``kommo-sync`` commands reach that stack::

    set -a; . .local/dev.env; set +a; .venv/bin/kommo-sync status
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

# Every variable service.settings reads (tests/test_devenv_runs.py checks none is missing).
NAMES = (
    "DATABASE_URL",
    "REDIS_URL",
    "REDIS_PREFIX",
    "KOMMO_SUBDOMAIN",
    "KOMMO_BASE_URL",
    "KOMMO_TOKEN",
    "KOMMO_CLIENT_ID",
    "KOMMO_CLIENT_SECRET",
    "KOMMO_REDIRECT_URI",
    "KOMMO_AUTH_CODE",
    "KOMMO_REFRESH_TOKEN",
    "KOMMO_ACCOUNT_ID",
    "KOMMO_WEBHOOK_SECRET",
    "KOMMO_RATE_LIMIT",
    "WS_TOKENS",
    "WS_MAX_CONNECTIONS_PER_TOKEN",
    "PORT",
    "PUBLIC_URL",
    "WORKER_METRICS_PORT",
    "RECONCILE_INTERVAL",
    "PHONE_DEFAULT_REGION",
    "WEBHOOK_MAX_BYTES",
    "HINT_QUEUE_MAX",
    "PURGE_DELETED_AFTER_DAYS",
    "SECRETS_KEY",
    "KOMMO_OAUTH_HOSTS",
    "LOG_FORMAT",
    "LOG_LEVEL",
)


def path_for(folder: Path, port: int, taken: set[str]) -> Path:
    """``dev.env`` unless a live run has it, else ``dev-<port>.env`` (ports are unique too)."""
    first = folder / "dev.env"
    return first if str(first) not in taken else folder / f"dev-{port}.env"


def render(env: Mapping[str, str], header: str) -> str:
    lines = [f"# {header}"]
    lines += [f"{name}={shlex.quote(env[name])}" for name in NAMES if env.get(name)]
    return "\n".join(lines) + "\n"


def write(path: Path, env: Mapping[str, str], header: str) -> None:
    """Write the file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, render(env, header).encode())
    finally:
        os.close(fd)
    os.replace(temporary, path)


def remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def usage(path: Path, command: str = "status") -> str:
    """The shell line that runs ``kommo-sync COMMAND`` against the stack of ``path``."""
    cli = Path(sys.executable).with_name("kommo-sync")
    program = shown(cli) if cli.exists() else "kommo-sync"
    return f"set -a; . {shlex.quote(shown(path, dot=True))}; set +a; {program} {command}"


def shown(path: Path, *, dot: bool = False) -> str:
    """``path`` relative to the working directory when under it (``./x`` for ``.`` if asked)."""
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
    return shown if not dot or "/" in shown else "./" + shown
