"""Where the tests find their services, read from the environment, and the secret every test app signs with.

The database suites run on SQLite always, and on PostgreSQL too when EMAILKIT_TEST_DATABASE_URL is set
(CI sets it; an unreachable server there is an error, never a skip).
"""

from __future__ import annotations

import os

TEST_SECRET = "test-secret-key-0123456789abcdef"
PG_URL = os.environ.get("EMAILKIT_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("EMAILKIT_TEST_REDIS_URL")

BACKENDS = ["sqlite"] + (["postgresql"] if PG_URL else [])


def pg_async_url(url: str) -> str:
    """The asyncpg form of a plain postgresql:// URL (other URLs unchanged)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


# The role the application connects as in the PostgreSQL suites: neither superuser nor BYPASSRLS, owner of the
# schema, so the row-level security policies hold for every statement the tests make the application run.
APP_ROLE = "emailkit_app"


def as_role(url: str, role: str) -> str:
    """`url` with `role` as its user and no password (the test server trusts local connections)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


PG_APP_URL = as_role(PG_URL, APP_ROLE) if PG_URL else None
