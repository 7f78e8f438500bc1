"""What the bounce server needs to know about a delivery a VERP address names."""

from __future__ import annotations

from sqlalchemy import select

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.sending import Delivery


async def delivery_address(db: Database, delivery_id: int) -> str | None:
    """The address the delivery went to, in whichever workspace it belongs (the signed token is the
    credential); None when it no longer exists (deleted with its campaign, or erased)."""
    with all_workspaces():
        async with db.session() as session:
            found = await session.execute(select(Delivery.email).where(Delivery.id == delivery_id))
            return found.scalar_one_or_none()
