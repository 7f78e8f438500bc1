"""The deliveries ledger as the send loop writes it: one :class:`BatchLedger` per sender, chosen once.

``portable`` runs everywhere through SQLAlchemy; ``postgres`` keeps the same semantics with fewer statements
and round trips on the hot path (array parameters, one connection held by a running batch, raw asyncpg).
"""

from __future__ import annotations

from emailkit.db.engine import Database
from emailkit.domain.sending.ledger.portable import PortableLedger, record_sent_statement
from emailkit.domain.sending.ledger.postgres import PostgresLedger
from emailkit.domain.sending.ledger.protocol import (
    IN_DOUBT_NOTE,
    Admission,
    BatchLedger,
    Failed,
    LeaseLost,
    Pending,
    Recorded,
    Sent,
)

__all__ = [
    "IN_DOUBT_NOTE",
    "Admission",
    "BatchLedger",
    "Failed",
    "LeaseLost",
    "Pending",
    "PortableLedger",
    "PostgresLedger",
    "Recorded",
    "Sent",
    "ledger_for",
    "record_sent_statement",
]


def ledger_for(db: Database, *, provider_name: str, lease_seconds: float) -> BatchLedger:
    """The ledger of `db`'s backend; `provider_name` is written on the deliveries it hands over."""
    ledger = PostgresLedger if db.dialect == "postgresql" else PortableLedger
    return ledger(db, provider_name=provider_name, lease_seconds=lease_seconds)
