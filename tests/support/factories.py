"""Rows the tests need as a starting point, written straight through the domain (no HTTP on the way)."""

from __future__ import annotations

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import OptIn
from emailkit.domain import apikeys
from emailkit.domain.audience import lists


async def make_key(db: Database, role: Role = Role.ADMIN, name: str = "test") -> str:
    """A new API key with `role`; returns the raw key to send as a bearer token."""
    async with db.transaction() as session:
        _, raw = await apikeys.create_api_key(session, name, role)
    return raw


async def insert_list(db: Database, name: str = "Newsletter", optin: OptIn = OptIn.SINGLE) -> int:
    """A mailing list made through the domain; returns its database id."""
    async with db.transaction() as s:
        return (await lists.create_list(s, lists.ListInput(name=name, optin=optin))).id
