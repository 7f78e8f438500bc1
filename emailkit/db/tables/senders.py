"""Senders: a workspace's named provider configurations (migration 0017).

A campaign, a list (as a default for its campaigns), a flow's SEND step and a transactional message may name
one; a delivery records the one that handed it over (``deliveries.sender_id``). None anywhere means the
instance's default sender: the provider configured by ``EMAILKIT_PROVIDER`` and its variables.
"""

from __future__ import annotations

import enum
from datetime import date
from typing import Any

from sqlalchemy import Date, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigIntPK, JSONDoc


class SenderType(enum.StrEnum):
    SMTP = "SMTP"
    SES = "SES"
    SENDGRID = "SENDGRID"
    MAILGUN = "MAILGUN"
    POSTMARK = "POSTMARK"
    RESEND = "RESEND"
    BREVO = "BREVO"
    OUTBOX = "OUTBOX"


class Sender(InWorkspace, TimestampMixin, Base):
    __tablename__ = "senders"
    ROOT = True

    __table_args__ = (
        UniqueConstraint("workspace_id", "name"),
        listing_index("senders"),
        AUTOINCREMENT,
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    type: Mapped[SenderType] = mapped_column(_enum(SenderType), nullable=False)
    # The provider's non-secret settings, camelCase keys as the API takes them (e.g. {"url": ...}).
    settings: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    # The credentials as one JSON object sealed with a key derived from EMAILKIT_SECRET_KEY
    # (emailkit.domain.sealing): a database dump alone reveals none of them. NULL: no credentials.
    credentials_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The last 4 characters of the most secret credential, the only part the API ever shows.
    credentials_last4: Mapped[str | None] = mapped_column(String(4), nullable=True)
    # Messages per second over all workers (None: no limit of its own) and connections/requests at once.
    rate_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    pool_size: Mapped[int] = mapped_column(Integer, nullable=False, default=5)
    # A warm-up plan (migration 0020; all four set, or none): at most start * (1 + growth%)^days messages a
    # UTC day, days counted from starts_on, never more than the ceiling (emailkit.domain.senders.warmup).
    warmup_start_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    warmup_growth_percent: Mapped[float | None] = mapped_column(Float, nullable=True)
    warmup_ceiling_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    warmup_starts_on: Mapped[date | None] = mapped_column(Date, nullable=True)
    # What the sender handed over on warmup_day, counted under the row's lock by every worker.
    warmup_day: Mapped[date | None] = mapped_column(Date, nullable=True)
    warmup_sent: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
