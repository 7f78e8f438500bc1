"""Tables of access: API keys."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    ForeignKey,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, _enum
from emailkit.db.types import BigInt, BigIntPK, UTCDateTime, utcnow


class Role(enum.StrEnum):
    # An instance key: manages workspaces, and acts inside one when the request names it.
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    EDITOR = "EDITOR"
    VIEWER = "VIEWER"


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # None only for OWNER (instance) keys; every other key sees its own workspace and nothing else.
    workspace_id: Mapped[int | None] = mapped_column(
        BigInt, ForeignKey("workspaces.id", ondelete="RESTRICT"), nullable=True, index=True
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[Role] = mapped_column(_enum(Role), nullable=False)
    # First characters of the key, shown in listings so people can tell keys apart.
    prefix: Mapped[str] = mapped_column(String(16), nullable=False)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (UniqueConstraint("key_hash"), AUTOINCREMENT)
