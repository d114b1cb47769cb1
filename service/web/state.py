"""What the web app's handlers share: the process's resources, yielded by the lifespan.

Starlette hands the lifespan's state to every request and socket (``conn.state``); this module
is the one typed way to read it.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from service.resources import Resources


def resources(conn: HTTPConnection) -> Resources:
    """The resources the lifespan opened (Postgres, Redis, arq, key names)."""
    res = conn.state.resources
    if not isinstance(res, Resources):
        raise RuntimeError("resources are not open (outside the app's lifespan)")
    return res
