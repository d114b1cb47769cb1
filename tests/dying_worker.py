"""``python -m tests.dying_worker``: a worker that dies with SIGKILL right after its first commit
that produced lead changes, before it publishes them (the convergence run's "committed but
never published" fault). Everything else is the real ``kommo-sync worker``."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from service import cli
from service.sync import outbox


async def _die(*args: Any, **kwargs: Any) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    outbox.publish = _die
    sys.exit(cli.main(["worker"]))
