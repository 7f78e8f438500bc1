"""The declarative base every table shares: naming convention, SQLite autoincrement, enum columns, timestamps."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Enum,
    MetaData,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from emailkit.db.types import UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# SQLite otherwise reuses the id of a deleted last row; global IDs and keyset cursors must never repeat.
AUTOINCREMENT = {"sqlite_autoincrement": True}
AUTOINCREMENT_ONLY = (AUTOINCREMENT,)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR (no native PG enum) so adding a value never needs an ALTER TYPE migration.
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=24,
        values_callable=lambda members: [m.value for m in members],
    )


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )
