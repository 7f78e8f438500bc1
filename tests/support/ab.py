"""A/B-tested campaigns for the tests: an audience, a campaign with variants made through the domain, a provider
that keeps what it was given, and readers of the ledger and the test's state."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import insert, select

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList, OptIn, Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import (
    AbMetric,
    Campaign,
    CampaignAbTest,
    CampaignVariant,
    Delivery,
    DeliveryStatus,
)
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.ports.provider import CommitHook, OutgoingMessage, ResultHook, SendResult
from emailkit.domain.sending import campaigns, lifecycle
from emailkit.domain.sending.ab.definition import AbTestInput, VariantInput
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner

BODY = '<p>Hello {{ subscriber.name }}, <a href="https://example.com/offer">the offer</a></p>'
SUBJECTS = ("A: news for {{ subscriber.name }}", "B: the offer inside", "C: last chance")


def address(i: int) -> str:
    return f"reader{i:04d}@ab.test"


async def seed_audience(db: Database, n: int) -> tuple[int, list[int]]:
    """n confirmed subscribers on one list (in the workspace in scope); returns the list and their ids."""
    async with db.transaction() as s:
        lst = MailingList(name="Readers", optin=OptIn.SINGLE)
        s.add(lst)
        await s.flush()
        rows = [
            {"email": address(i), "name": f"Reader {i}", "attributes": {"city": "Berlin"}} for i in range(n)
        ]
        ids = list((await s.execute(insert(Subscriber).returning(Subscriber.id), rows)).scalars())
        await s.execute(
            insert(Subscription),
            [
                {"subscriber_id": sid, "list_id": lst.id, "status": SubscriptionStatus.CONFIRMED}
                for sid in ids
            ],
        )
        return lst.id, sorted(ids)


async def make_ab_campaign(
    db: Database,
    list_id: int | None,
    *,
    variants: int = 2,
    share: float = 0.5,
    metric: AbMetric = AbMetric.OPENS,
    wait: int = 3600,
    segment_ids: Sequence[int] = (),
) -> int:
    """A campaign through the domain's createCampaign, whose variants differ by subject."""
    data = campaigns.CampaignInput(
        name="Spring",
        subject="Spring news",
        from_email="news@ab-mail.example.com",
        from_name="News",
        body=BODY,
        format=ContentFormat.HTML,
        list_ids=[list_id] if list_id is not None else [],
        segment_ids=list(segment_ids),
        variants=[VariantInput(subject=SUBJECTS[i]) for i in range(variants)],
        ab_test=AbTestInput(test_share=share, metric=metric, wait_seconds=wait),
    )
    async with db.transaction() as s:
        return (await campaigns.create_campaign(s, data)).id


@dataclass
class KeepingProvider:
    """Hands every message over at once (after its SENDING commit) and keeps it, to see who got what."""

    max_batch_size: int = 1000
    messages: list[OutgoingMessage] = field(default_factory=list)

    async def send_batch(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_commit: CommitHook | None = None,
        on_result: ResultHook | None = None,
    ) -> list[SendResult]:
        if on_commit is not None:
            await on_commit([m.delivery_id for m in messages])
        self.messages.extend(messages)
        return [SendResult.sent(m.delivery_id, f"pid-{m.delivery_id}") for m in messages]

    async def close(self) -> None:
        return None

    def subjects_by_recipient(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.messages:
            out.setdefault(m.recipient, []).append(m.subject)
        return out


def make_sender(db: Database, provider: KeepingProvider, **config: object) -> CampaignSender:
    urls = TrackingUrls("https://mail.ab.test", TokenSigner("ab-test-secret-0123456789abcdef"))
    return CampaignSender(db, provider, "keeping", urls, config=SendingConfig(**config))  # type: ignore[arg-type]


async def start(
    db: Database, campaign_id: int, *, batch_size: int = 50, now: datetime | None = None
) -> list[int]:
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=batch_size, now=now)
    return batch_ids


async def run_all(sender: CampaignSender, batch_ids: Sequence[int]) -> None:
    for batch_id in batch_ids:
        outcome = await sender.run_batch(batch_id)
        assert outcome.claimed and outcome.done, outcome


async def ledger(db: Database, campaign_id: int) -> dict[int, tuple[int | None, DeliveryStatus]]:
    """{subscriber id: (variant id, status)} of the campaign's deliveries."""
    async with db.session() as s:
        rows = await s.execute(
            select(Delivery.subscriber_id, Delivery.variant_id, Delivery.status).where(
                Delivery.campaign_id == campaign_id
            )
        )
        return {sid: (vid, status) for sid, vid, status in rows}


async def variant_ids(db: Database, campaign_id: int) -> list[int]:
    async with db.session() as s:
        stmt = (
            select(CampaignVariant.id)
            .where(CampaignVariant.campaign_id == campaign_id)
            .order_by(CampaignVariant.position)
        )
        return list((await s.execute(stmt)).scalars())


async def ab_state(db: Database, campaign_id: int) -> CampaignAbTest:
    async with db.session() as s:
        row = await s.get(CampaignAbTest, campaign_id)
        assert row is not None
        return row


async def campaign_row(db: Database, campaign_id: int) -> Campaign:
    async with db.session() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        return row
