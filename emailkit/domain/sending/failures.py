"""Why sends failed, in a form an operator can read: grouped per batch, and summed up for a failed campaign.

A provider that is down fails every recipient with the same reason, and an address-specific rejection
(``550 5.1.1 <bob@example.com>: user unknown``) differs only by the address. One log line per recipient would
bury the reason under thousands of copies; one line per distinct reason (addresses masked for the grouping),
with a count and one full sample, says what happened in a few lines.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.domain.ports.provider import SendResult

# Distinct reasons logged per batch; the rest are summed up in one more line.
MAX_REASONS_LOGGED = 10
# Failed deliveries read to find a failed campaign's commonest reason.
REASON_SAMPLE = 1000

_ADDRESS = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")
_NUMBER = re.compile(r"\d{5,}")


class _Recipient(Protocol):
    @property
    def email(self) -> str: ...


def reason_key(reason: str) -> str:
    """The reason with what varies per recipient (addresses, long numbers such as queue ids) masked."""
    return _NUMBER.sub("#", _ADDRESS.sub("<address>", reason)).strip()


RETRIED, FAILED, GAVE_UP = 0, 1, 2
_OUTCOME_TEXT = {FAILED: "failed", GAVE_UP: "failed (no attempts left)"}


@dataclass
class _Group:
    outcome: int
    count: int
    sample_reason: str
    sample_recipient: str


@dataclass
class FailureLog:
    """Failed and retried send attempts of one batch run, grouped by reason."""

    groups: dict[tuple[int, str], _Group] = field(default_factory=dict)

    def add(
        self, results: list[SendResult], recipients: Mapping[int, _Recipient], retried: Collection[int]
    ) -> None:
        """Record the failures among `results`; `retried` holds the delivery ids that stay queued."""
        retry = set(retried)
        for r in results:
            if r.ok:
                continue
            did = int(r.delivery_id)
            outcome = RETRIED if did in retry else GAVE_UP if r.transient else FAILED
            reason = r.error or "unknown error"
            key = (outcome, reason_key(reason))
            group = self.groups.get(key)
            if group is None:
                recipient = recipients.get(did)
                self.groups[key] = _Group(outcome, 1, reason, recipient.email if recipient else "?")
            else:
                group.count += 1

    def __bool__(self) -> bool:
        return bool(self.groups)

    def lines(self, batch_id: int, retry_after: float | None = None) -> list[str]:
        ordered = sorted(self.groups.values(), key=lambda g: (-g.outcome, -g.count))
        out = []
        for g in ordered[:MAX_REASONS_LOGGED]:
            if g.outcome == RETRIED:
                what = "will be retried" + (f" in {retry_after:.1f}s" if retry_after is not None else "")
            else:
                what = _OUTCOME_TEXT[g.outcome]
            people = "recipient" if g.count == 1 else "recipients"
            out.append(
                f"batch {batch_id}: {g.count} {people} {what}: {g.sample_reason} (e.g. {g.sample_recipient})"
            )
        rest = ordered[MAX_REASONS_LOGGED:]
        if rest:
            out.append(
                f"batch {batch_id}: {sum(g.count for g in rest)} more failed or retried attempts "
                f"with {len(rest)} other reasons"
            )
        return out

    def log(self, logger: logging.Logger, batch_id: int, retry_after: float | None = None) -> None:
        for line in self.lines(batch_id, retry_after):
            logger.warning("%s", line)


async def commonest_failure(session: AsyncSession, campaign_id: int) -> str | None:
    """The commonest reason among the campaign's failed deliveries (the first of them read), as
    "<reason>" or "(k of the first n) <reason>"; None when nobody failed."""
    stmt = (
        select(Delivery.last_error)
        .where(Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.FAILED)
        .order_by(Delivery.id)
        .limit(REASON_SAMPLE)
    )
    counts: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for (error,) in await session.execute(stmt):
        key = reason_key(error or "unknown error")
        counts[key] += 1
        samples.setdefault(key, error or "unknown error")
    if not counts:
        return None
    key, count = counts.most_common(1)[0]
    seen = sum(counts.values())
    share = "" if count == seen else f"({count} of the first {seen}) "
    return f"{share}{samples[key]}"


async def all_failed_reason(session: AsyncSession, campaign_id: int, failed: int) -> str:
    """The status reason of a campaign none of whose attempted recipients was sent: the commonest reason."""
    people = "recipient" if failed == 1 else "recipients"
    text = f"All {failed} attempted {people} failed"
    reason = await commonest_failure(session, campaign_id)
    return text if reason is None else f"{text}; the provider said: {reason}"[:2000]
