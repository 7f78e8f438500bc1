"""What the database role may do that matters to isolation (PostgreSQL)."""

from __future__ import annotations

from sqlalchemy import text

from emailkit.db import rls
from emailkit.db.engine import Database


async def bypasses_row_security(db: Database) -> str | None:
    """Why the connected role escapes row-level security ("is a superuser", "has BYPASSRLS"), or None."""
    if db.dialect != "postgresql":
        return None
    async with db.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            )
        ).one()
    if row[0]:
        return "is a superuser"
    if row[1]:
        return "has BYPASSRLS"
    return None


async def not_leakproof(db: Database) -> list[str]:
    """The comparison functions of db/rls.py's LEAKPROOF_FUNCTIONS not marked LEAKPROOF in this database (the
    indexes they serve go unused under row-level security); empty elsewhere than PostgreSQL."""
    if db.dialect != "postgresql":
        return []
    async with db.engine.connect() as conn:
        return [str(name) for name in (await conn.execute(text(rls.NOT_LEAKPROOF))).scalars()]
