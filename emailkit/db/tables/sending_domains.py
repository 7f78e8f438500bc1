"""Sending domains: the domains a workspace sends From, with their DKIM keys and the state of their DNS records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigIntPK, JSONDoc, UTCDateTime


class SendingDomain(InWorkspace, TimestampMixin, Base):
    """A domain a workspace sends mail From: its DKIM key pairs (RSA, and Ed25519 as a second signature where
    configured) and what the last DNS check found.

    Private keys are sealed with a key derived from EMAILKIT_SECRET_KEY (``domain.sealing``): a copy of the
    database alone cannot sign mail as the domain. Public keys are stored plainly: they are published in DNS.
    """

    __tablename__ = "sending_domains"
    ROOT = True

    __table_args__ = (
        UniqueConstraint("workspace_id", "domain", name="uq_sending_domains_workspace_id_domain"),
        listing_index("sending_domains"),
        AUTOINCREMENT,
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    # Lower-case ASCII (IDNA) form, no trailing dot.
    domain: Mapped[str] = mapped_column(String(253), nullable=False)
    selector: Mapped[str] = mapped_column(String(63), nullable=False)
    private_key_sealed: Mapped[str] = mapped_column(Text, nullable=False)
    # Base64 of the DER SubjectPublicKeyInfo: the p= of the DKIM record.
    public_key: Mapped[str] = mapped_column(Text, nullable=False)
    ed25519_selector: Mapped[str | None] = mapped_column(String(63), nullable=True)
    ed25519_private_key_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Base64 of the raw 32-byte key (RFC 8463).
    ed25519_public_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Every required record was found as published by the last check.
    verified: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # What the last check found, per record: [{"name", "type", "status", "seen"}].
    checks: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False, default=list)
