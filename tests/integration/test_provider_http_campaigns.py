"""A small campaign through the real send pipeline with EMAILKIT_PROVIDER set to mailgun, postmark, resend or
brevo, against that provider's local fake API; then the provider's delivered events for what it accepted go
through our webhook parser and the feedback recorder, which must tie each one to its delivery."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Campaign, CampaignStatus, Delivery, DeliveryStatus
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.feedback import record_events
from emailkit.domain.ports.provider import DELIVERY_HEADER
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.registry import build_provider
from emailkit.settings import Settings
from tests.support.audience import seed_campaign
from tests.support.environment import TEST_SECRET
from tests.support.provider_apis.kits import KITS, Kit, api, environment

RECIPIENTS = 23


@pytest.fixture(params=KITS, ids=[k.name for k in KITS])
def kit(request: pytest.FixtureRequest) -> Kit:
    chosen: Kit = request.param
    return chosen


async def test_a_campaign_goes_out_and_the_providers_events_find_their_deliveries(
    db: Database, kit: Kit
) -> None:
    campaign_id, emails = await seed_campaign(db, RECIPIENTS)
    async with db.transaction() as s:
        # The fake Postmark account's confirmed sender signature.
        await s.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(from_email="news@news.example.com")
        )
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=10)
    async with api(kit) as (url, state):
        provider = build_provider(Settings(**environment(kit, url)))
        urls = TrackingUrls("https://mail.example.com", TokenSigner(TEST_SECRET))
        sender = CampaignSender(db, provider, kit.name, urls)
        try:
            for batch_id in batch_ids:
                assert (await sender.run_batch(batch_id)).done
        finally:
            await provider.close()

    async with db.session() as s:
        campaign = await s.get(Campaign, campaign_id)
        deliveries = (
            (await s.execute(select(Delivery).where(Delivery.campaign_id == campaign_id))).scalars().all()
        )
    assert campaign is not None and campaign.status is CampaignStatus.FINISHED
    assert campaign.sent_count == RECIPIENTS
    assert sorted(a.to for a in state.accepted) == sorted(emails)
    accepted = {a.to: a for a in state.accepted}
    for delivery in deliveries:
        got = accepted[delivery.email]
        assert delivery.status is DeliveryStatus.SENT
        assert delivery.provider_message_id is not None
        assert got.headers[DELIVERY_HEADER] == str(delivery.id)
        assert got.headers["List-Unsubscribe"].startswith("<https://mail.example.com/")
        assert got.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "List-Id" in got.headers

    parser = kit.parser()
    events = []
    for got in state.accepted:
        headers, body = kit.webhook(got)
        events += parser.parse(headers, body)
    summary = await record_events(db, events)
    assert (summary.stored, summary.uncorrelated) == (RECIPIENTS, 0)
    async with db.session() as s:
        recorded = (await s.execute(select(Event.delivery_id, Event.email, Event.type))).all()
    assert sorted(recorded) == sorted((d.id, d.email, EventType.DELIVERED) for d in deliveries)
