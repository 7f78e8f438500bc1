"""IN_DOUBT deliveries over the API: shown apart in progress and the ledger, never counted as sent, and sent
again only when the operator asks `retryFailedDeliveries` to include them."""

from __future__ import annotations

from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.ledger import IN_DOUBT_NOTE
from emailkit.schema.relay import to_global_id
from tests.support.audience import seed_campaign
from tests.support.graphql import GQL, data

STATE = """query($id: ID!) { campaign(id: $id) {
    status
    progress { sent failed skipped inDoubt recipients }
    stats { sent }
    deliveries(first: 10, status: IN_DOUBT) { totalCount edges { node { email status lastError sentAt } } }
} }"""

RETRY = """mutation($input: RetryFailedDeliveriesInput!) { retryFailedDeliveries(input: $input) {
    retried campaign { status statusReason } userErrors { code message } } }"""


async def finished_campaign(db: Database) -> tuple[int, list[str]]:
    """A FINISHED campaign of six: three SENT, two IN_DOUBT (a worker died handing them over), one FAILED."""
    campaign_id, emails = await seed_campaign(db, 6)
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=1000)
        campaign = await s.get(Campaign, campaign_id)
        assert campaign is not None
        outcome = [DeliveryStatus.SENT] * 3 + [DeliveryStatus.IN_DOUBT] * 2 + [DeliveryStatus.FAILED]
        subscribers = (await s.execute(select(Subscriber.id, Subscriber.email).order_by(Subscriber.id))).all()
        for (sid, email), status in zip(subscribers, outcome, strict=True):
            s.add(
                Delivery(
                    campaign_id=campaign_id,
                    subscriber_id=sid,
                    email=email,
                    status=status,
                    attempts=1,
                    last_error={
                        DeliveryStatus.IN_DOUBT: IN_DOUBT_NOTE,
                        DeliveryStatus.FAILED: "550 no such user",
                    }.get(status),
                )
            )
        await s.execute(
            update(CampaignBatch).where(CampaignBatch.id.in_(batch_ids)).values(status=BatchStatus.DONE)
        )
        campaign.status = CampaignStatus.FINISHED
        campaign.sent_count, campaign.in_doubt_count, campaign.failed_count = 3, 2, 1
    return campaign_id, emails


async def test_in_doubt_is_shown_apart_and_retried_only_when_asked(gql: GQL, db: Database) -> None:
    campaign_id, emails = await finished_campaign(db)
    cid = to_global_id("Campaign", campaign_id)

    state = data(await gql(STATE, {"id": cid}))["campaign"]
    assert state["progress"] == {"sent": 3, "failed": 1, "skipped": 0, "inDoubt": 2, "recipients": 6}
    assert state["stats"]["sent"] == 3
    doubtful = state["deliveries"]
    assert doubtful["totalCount"] == 2
    assert {e["node"]["email"] for e in doubtful["edges"]} == set(emails[3:5])
    assert all(
        e["node"]["status"] == "IN_DOUBT"
        and e["node"]["lastError"] == IN_DOUBT_NOTE
        and e["node"]["sentAt"] is None
        for e in doubtful["edges"]
    )

    # By default only the failure goes back to the queue.
    out = data(await gql(RETRY, {"input": {"campaignId": cid}}))["retryFailedDeliveries"]
    assert out == {
        "retried": 1,
        "campaign": {"status": "RUNNING", "statusReason": "Retrying 1 failed deliveries"},
        "userErrors": [],
    }
    state = data(await gql(STATE, {"id": cid}))["campaign"]
    assert state["progress"]["inDoubt"] == 2 and state["deliveries"]["totalCount"] == 2

    # The operator's explicit choice queues the in-doubt ones too.
    out = data(await gql(RETRY, {"input": {"campaignId": cid, "includeInDoubt": True}}))[
        "retryFailedDeliveries"
    ]
    assert out["retried"] == 2 and out["userErrors"] == []
    state = data(await gql(STATE, {"id": cid}))["campaign"]
    assert state["progress"]["inDoubt"] == 0 and state["deliveries"]["totalCount"] == 0
    async with db.session() as s:
        queued = set(
            (
                await s.execute(
                    select(Delivery.email).where(
                        Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED
                    )
                )
            ).scalars()
        )
        batches = set((await s.execute(select(CampaignBatch.status))).scalars())
    assert queued == set(emails[3:])
    assert batches == {BatchStatus.PENDING}
