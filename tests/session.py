"""What identifies one test session: its run id, its secrets and where its database lives.

``conftest.py`` builds the session's database, Redis prefix and environment from these; tests
that need a secret of the session (a webhook path, a WebSocket token) import it from here.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
RUN_ID = uuid.uuid4().hex[:10]
WEBHOOK_SECRET = "s" * 8 + uuid.uuid4().hex  # 40 characters, per run
WS_TOKEN = "test-token-" + RUN_ID


def with_database(url: str, name: str) -> str:
    """``url`` pointed at the database ``name`` on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))
