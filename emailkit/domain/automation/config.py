"""How flows run in this process (filled from settings by the composition roots)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

# For a flow SEND: the people who may not get marketing mail before a later instant (the frequency cap).
CapCheck = Callable[[AsyncSession, Sequence[int], datetime], Awaitable[dict[int, datetime]]]


@dataclass(frozen=True)
class FlowConfig:
    # A worker silent this long on its runs is presumed dead; renewed every third of it while it works.
    lease_seconds: float = 120.0
    # Claimed runs whose job no worker took within this long are claimed again (a lost queue message).
    hold_seconds: float = 60.0
    # Instant steps (BRANCH, UPDATE, EXIT) a run may take in one go; the definition forbids loops without a
    # WAIT, so this only bounds a long chain.
    max_rounds: int = 100
    # A WEBHOOK step is tried this often before it fails (and the run goes on).
    webhook_attempts: int = 8
    webhook_timeout_seconds: float = 15.0
    # The zone of a person with no valid `timezone` attribute (EMAILKIT_DEFAULT_TIMEZONE).
    default_timezone: str = "UTC"
    # EMAILKIT_MARKETING_CAP, as a check (None: no cap).
    cap: CapCheck | None = None
