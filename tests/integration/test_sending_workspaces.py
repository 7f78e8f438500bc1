"""Sending is per workspace: a campaign reaches its own workspace's subscribers only (even when another
workspace holds the same addresses and the subscriber ids of the two interleave), every ledger row it writes
carries its workspace, the ticker starts each due campaign in its own workspace, and an archived workspace's
batches send nothing.

PostgreSQL runs these under row-level security (the suites connect as a role held to it), so a statement that
forgot its workspace fails or sees nothing there; on SQLite only the application's own filters hold.
"""

from __future__ import annotations

import email
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Segment,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import (
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignList,
    CampaignSegment,
    CampaignStatus,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID, Workspace, WorkspaceStatus
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.runtime import Runtime, campaign_sender
from emailkit.domain.sending import lifecycle, scheduler
from emailkit.domain.sending.ledger import PortableLedger, Sent
from emailkit.tasks.campaigns import send_campaign_batch
from tests.integration.test_scheduler import RecordingQueue
from tests.support.transactional import outbox_runtime

W1 = DEFAULT_WORKSPACE_ID
PEOPLE = 8
BERLIN = {"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}

LEDGERS = pytest.mark.parametrize(
    "ledger", ["chosen", pytest.param("portable", marks=pytest.mark.postgresql_only)]
)


def address(i: int) -> str:
    return f"user{i:02d}@example.com"


async def make_workspace(db: Database, slug: str, status: WorkspaceStatus = WorkspaceStatus.ACTIVE) -> int:
    with all_workspaces():
        async with db.transaction() as s:
            row = Workspace(name=slug.title(), slug=slug, status=status)
            s.add(row)
            await s.flush()
            return row.id


async def set_status(db: Database, workspace_id: int, status: WorkspaceStatus) -> None:
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(update(Workspace).where(Workspace.id == workspace_id).values(status=status))


@dataclass
class Audience:
    """One workspace's newsletter list and its subscribers by address."""

    list_id: int
    subscribers: dict[str, int]


def _suppression(workspace_id: int, addr: str) -> Suppression:
    return Suppression(
        workspace_id=workspace_id,
        email=addr,
        email_hash=email_hash(addr),
        reason=SuppressionReason.MANUAL,
        source="api",
    )


async def interleaved(db: Database, workspaces: tuple[int, int]) -> dict[int, Audience]:
    """The same PEOPLE addresses subscribed in both workspaces, created alternately (so the subscriber ids of
    the two interleave), plus one more subscriber of the first, whose id is the highest.

    What differs: user00 is suppressed and user02 blocklisted in the first only; user01 is suppressed in the
    second only."""
    first, second = workspaces
    out: dict[int, Audience] = {}
    with all_workspaces():
        async with db.transaction() as s:
            for w in workspaces:
                row = MailingList(workspace_id=w, name="News", optin=OptIn.SINGLE)
                s.add(row)
                await s.flush()
                out[w] = Audience(row.id, {})
            people = [(address(i), w) for i in range(PEOPLE) for w in workspaces] + [
                ("late@example.com", first)
            ]
            for addr, w in people:
                sub = Subscriber(
                    workspace_id=w, email=addr, name=f"W{w} {addr}", attributes={"city": "Berlin"}
                )
                if w == first and addr == address(2):
                    sub.status = SubscriberStatus.BLOCKLISTED
                s.add(sub)
                await s.flush()
                out[w].subscribers[addr] = sub.id
                s.add(
                    Subscription(
                        workspace_id=w,
                        subscriber_id=sub.id,
                        list_id=out[w].list_id,
                        status=SubscriptionStatus.CONFIRMED,
                    )
                )
            s.add_all([_suppression(first, address(0)), _suppression(second, address(1))])
    return out


async def make_campaign(db: Database, audience: Audience, target: str = "list") -> int:
    """A campaign of the workspace in scope, to its newsletter list or to a segment matching everyone."""
    async with db.transaction() as s:
        campaign = Campaign(
            name="News",
            subject="Hi {{ subscriber.name }}",
            from_email="news@example.com",
            body="<p>Hello {{ subscriber.name }}</p>",
            format=ContentFormat.HTML,
        )
        s.add(campaign)
        await s.flush()
        if target == "list":
            s.add(CampaignList(campaign_id=campaign.id, list_id=audience.list_id))
        else:
            segment = Segment(name="Berliners", filter=BERLIN)
            s.add(segment)
            await s.flush()
            s.add(CampaignSegment(campaign_id=campaign.id, segment_id=segment.id))
        return campaign.id


async def start(db: Database, campaign_id: int, batch_size: int = 3) -> list[int]:
    async with db.transaction() as s:
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=batch_size)
    return batch_ids


def sending_runtime(db: Database, outbox: Path, ledger: str) -> Runtime:
    runtime = outbox_runtime(db, outbox)
    sender = campaign_sender(runtime)
    if ledger == "portable":
        sender.ledger = PortableLedger(db, provider_name="outbox", lease_seconds=sender.config.lease_seconds)
    return runtime


async def everything(db: Database, stmt: Any) -> list[Any]:
    with all_workspaces():
        async with db.session() as s:
            return list((await s.execute(stmt)).all())


async def campaign_row(db: Database, campaign_id: int) -> Campaign:
    with all_workspaces():
        async with db.session() as s:
            row = await s.get(Campaign, campaign_id)
    assert row is not None
    return row


def mailed(outbox: Path) -> dict[str, str]:
    """Who got a message: To address by display name."""
    out = {}
    for path in outbox.rglob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        to = msg["To"].addresses[0]
        out[to.display_name] = to.addr_spec
    return out


@LEDGERS
@pytest.mark.parametrize("target", ["list", "segment"])
async def test_a_campaign_reaches_its_own_workspaces_subscribers_only(
    db: Database, tmp_path: Path, ledger: str, target: str
) -> None:
    w2 = await make_workspace(db, "second")
    audiences = await interleaved(db, (W1, w2))
    with workspace_scope(w2):
        c2 = await make_campaign(db, audiences[w2], target)
        batches2 = await start(db, c2)
    c1 = await make_campaign(db, audiences[W1], target)
    batches1 = await start(db, c1)
    assert len(batches2) == 3  # 8 recipients in batches of 3

    runtime = sending_runtime(db, tmp_path / "outbox", ledger)
    # The jobs of both workspaces' batches alternate on one worker (its pooled connections change scope).
    for i in range(max(len(batches1), len(batches2))):
        for batch_id in (*batches2[i : i + 1], *batches1[i : i + 1]):
            await send_campaign_batch(runtime, batch_id=batch_id)

    ours = audiences[w2].subscribers
    rows = await everything(
        db,
        select(Delivery.subscriber_id, Delivery.workspace_id, Delivery.status, Delivery.skip_reason).where(
            Delivery.campaign_id == c2
        ),
    )
    assert sorted(r.subscriber_id for r in rows) == sorted(ours.values())
    assert {r.workspace_id for r in rows} == {w2}
    by_id = {sid: addr for addr, sid in ours.items()}
    skipped = {by_id[r.subscriber_id]: r.skip_reason for r in rows if r.status is DeliveryStatus.SKIPPED}
    # Suppressed here; user00 (suppressed) and user02 (blocklisted) in the other workspace are mailed here.
    assert skipped == {address(1): "suppressed"}
    batch_rows = await everything(
        db, select(CampaignBatch.workspace_id, CampaignBatch.status).where(CampaignBatch.campaign_id == c2)
    )
    assert [tuple(r) for r in batch_rows] == [(w2, BatchStatus.DONE)] * 3

    row = await campaign_row(db, c2)
    assert row.status is CampaignStatus.FINISHED
    assert (row.recipients_count, row.sent_count, row.skipped_count) == (PEOPLE, PEOPLE - 1, 1)
    assert row.audience_max_id == max(ours.values())

    to = mailed(tmp_path / "outbox")
    expected2 = {f"W{w2} {address(i)}": address(i) for i in range(PEOPLE) if i != 1}
    expected1 = {
        f"W{W1} {a}": a for a in [address(i) for i in range(1, PEOPLE) if i != 2] + ["late@example.com"]
    }
    assert to == expected2 | expected1
    first = await everything(
        db, select(Delivery.workspace_id, Delivery.subscriber_id).where(Delivery.campaign_id == c1)
    )
    assert {r.workspace_id for r in first} == {W1}
    assert sorted(r.subscriber_id for r in first) == sorted(audiences[W1].subscribers.values())
    assert runtime.sending is not None
    await runtime.sending.close()


@LEDGERS
async def test_a_batch_of_an_archived_workspace_pauses_its_campaign_and_sends_nothing(
    db: Database, tmp_path: Path, ledger: str
) -> None:
    w2 = await make_workspace(db, "second")
    audiences = await interleaved(db, (W1, w2))
    with workspace_scope(w2):
        c2 = await make_campaign(db, audiences[w2])
        [first, *rest] = await start(db, c2)
    c1 = await make_campaign(db, audiences[W1])
    batches1 = await start(db, c1, batch_size=100)
    await set_status(db, w2, WorkspaceStatus.ARCHIVED)

    runtime = sending_runtime(db, tmp_path / "outbox", ledger)
    await send_campaign_batch(runtime, batch_id=first)
    row = await campaign_row(db, c2)
    assert (row.status, row.status_reason) == (CampaignStatus.PAUSED, "workspace archived")
    assert row.sent_count == row.skipped_count == 0
    assert await everything(db, select(Delivery.id).where(Delivery.campaign_id == c2)) == []
    batches = await everything(
        db, select(CampaignBatch.status, CampaignBatch.lease_until).where(CampaignBatch.id == first)
    )
    assert [tuple(b) for b in batches] == [(BatchStatus.PENDING, None)]
    # The other batches find the campaign paused and are not claimed.
    for batch_id in rest:
        await send_campaign_batch(runtime, batch_id=batch_id)
    assert list((tmp_path / "outbox").rglob("*.eml")) == []

    # Other workspaces send on.
    await send_campaign_batch(runtime, batch_id=batches1[0])
    assert (await campaign_row(db, c1)).status is CampaignStatus.FINISHED
    # Its PEOPLE and late@, less user00 (suppressed) and user02 (blocklisted).
    assert len(list((tmp_path / "outbox").rglob("*.eml"))) == PEOPLE - 1

    # Back in service, the campaign resumes where it stopped.
    await set_status(db, w2, WorkspaceStatus.ACTIVE)
    with workspace_scope(w2):
        async with db.transaction() as s:
            _, again = await lifecycle.resume_campaign(s, c2)
    for batch_id in again:
        await send_campaign_batch(runtime, batch_id=batch_id)
    row = await campaign_row(db, c2)
    assert (row.status, row.sent_count, row.skipped_count) == (CampaignStatus.FINISHED, PEOPLE - 1, 1)
    assert runtime.sending is not None
    await runtime.sending.close()


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


async def test_the_ticker_starts_each_due_campaign_in_its_own_workspace(db: Database) -> None:
    w2 = await make_workspace(db, "second")
    w3 = await make_workspace(db, "third")
    audiences = await interleaved(db, (W1, w2))
    with all_workspaces():
        async with db.transaction() as s:
            other = MailingList(workspace_id=w3, name="News")
            s.add(other)
            await s.flush()
            sub = Subscriber(workspace_id=w3, email=address(0))
            s.add(sub)
            await s.flush()
            s.add(Subscription(workspace_id=w3, subscriber_id=sub.id, list_id=other.id))
    campaigns = {}
    for w, audience in ((W1, audiences[W1]), (w2, audiences[w2]), (w3, Audience(other.id, {}))):
        with workspace_scope(w):
            campaigns[w] = await make_campaign(db, audience)
            async with db.transaction() as s:
                await lifecycle.schedule_campaign(s, campaigns[w], NOW + timedelta(seconds=30), now=NOW)
    await set_status(db, w3, WorkspaceStatus.ARCHIVED)

    queue = RecordingQueue()
    runtime = Runtime(db=db, secret_key="ticker-test-secret-0123456789", public_url="http://t", jobs=queue)
    await scheduler.tick(runtime, NOW + timedelta(seconds=31))

    statuses = {w: (await campaign_row(db, c)).status for w, c in campaigns.items()}
    # An archived workspace's scheduled campaign waits.
    assert statuses == {W1: CampaignStatus.RUNNING, w2: CampaignStatus.RUNNING, w3: CampaignStatus.SCHEDULED}
    batches = await everything(
        db, select(CampaignBatch.id, CampaignBatch.campaign_id, CampaignBatch.workspace_id)
    )
    assert {(c, w) for _, c, w in batches} == {(campaigns[W1], W1), (campaigns[w2], w2)}
    assert queue.batch_ids() == sorted(b for b, _, _ in batches)
    c2 = await campaign_row(db, campaigns[w2])
    assert (c2.recipients_count, c2.audience_max_id) == (PEOPLE, max(audiences[w2].subscribers.values()))

    # Lost queue messages of both workspaces are enqueued again by one ticker spanning them.
    queue.jobs.clear()
    await scheduler.tick(runtime, NOW + timedelta(hours=1))
    assert queue.batch_ids() == sorted(b for b, _, _ in batches)


@pytest.mark.postgresql_only
async def test_the_fast_paths_raw_statements_name_their_workspace(db: Database, tmp_path: Path) -> None:
    """PostgreSQL's per-chunk statements go straight to the driver; run for all workspaces (where the
    policies let everything through) they still touch nothing outside their batch's workspace."""
    w2 = await make_workspace(db, "second")
    audiences = await interleaved(db, (W1, w2))
    [b1] = await start(db, await make_campaign(db, audiences[W1]), batch_size=100)
    with workspace_scope(w2):
        c2 = await make_campaign(db, audiences[w2])
        [b2] = await start(db, c2, batch_size=100)
    sender = campaign_sender(outbox_runtime(db, tmp_path))
    first = await sender.ledger.claim(b1)
    assert first is not None
    async with db.transaction() as s:
        await sender.ledger.materialise(s, first)
    theirs = [r.id for r in await everything(db, select(Delivery.id).where(Delivery.workspace_id == W1))]
    with workspace_scope(w2):
        batch = await sender.ledger.claim(b2)
    assert batch is not None and batch.workspace_id == w2

    async def statuses() -> set[DeliveryStatus]:
        rows = await everything(db, select(Delivery.status).where(Delivery.id.in_(theirs)))
        return {r.status for r in rows}

    with all_workspaces():
        async with sender.ledger.lend_connection(batch):
            await sender.ledger.mark_sending(batch, [str(i) for i in theirs])
        assert await statuses() == {DeliveryStatus.QUEUED, DeliveryStatus.SKIPPED}
        # A batch that named another workspace's campaign would read neither it nor its deliveries.
        forged = CampaignBatch(
            id=batch.id,
            workspace_id=w2,
            campaign_id=first.campaign_id,
            lo_id=first.lo_id,
            hi_id=first.hi_id,
            attempts=batch.attempts,
        )
        async with sender.ledger.lend_connection(forged):
            assert await sender.ledger.next_chunk(forged, 0, 100) == (None, [])
        async with db.transaction() as s:
            await s.execute(
                update(Delivery)
                .where(Delivery.id.in_(theirs), Delivery.status == DeliveryStatus.QUEUED)
                .values(status=DeliveryStatus.SENDING)
            )
        sent = [Sent(i, "pid", 1) for i in theirs]
        async with sender.ledger.lend_connection(batch):
            recorded = await sender.ledger.record(batch, sent, [], with_campaign=True)
        assert recorded.sent == 0 and recorded.campaign is not None and recorded.campaign.id == c2
        # The statement on the table that records sends outside a lent connection names it too.
        recorded = await sender.ledger.record(batch, sent, [], with_campaign=False)
        assert recorded.sent == 0
    assert await statuses() == {DeliveryStatus.SENDING, DeliveryStatus.SKIPPED}


@LEDGERS
async def test_the_daily_quota_holds_the_rest_until_the_next_day(
    db: Database, tmp_path: Path, ledger: str
) -> None:
    """A workspace may send 5 campaign emails a day: the sixth and later wait QUEUED, the campaign keeps
    RUNNING and says why; once the day has turned they go, and the note is gone."""
    capped = await make_workspace(db, "capped")
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(update(Workspace).where(Workspace.id == capped).values(quota_emails_per_day=5))
    audience = (await interleaved(db, (capped, W1)))[capped]
    runtime = sending_runtime(db, tmp_path / "outbox", ledger)
    with workspace_scope(capped):
        campaign_id = await make_campaign(db, audience)
        batches = await start(db, campaign_id, batch_size=100)
        outcome = await campaign_sender(runtime).run_batch(batches[0])
    assert outcome.sent == 5
    # Sent again after midnight UTC: the batch is due then, not sooner.
    assert outcome.retry_after is not None and 0 < outcome.retry_after <= 24 * 3600
    waiting = await campaign_row(db, campaign_id)
    assert waiting.status is CampaignStatus.RUNNING
    assert (waiting.status_reason or "").startswith("The workspace's quota of 5 campaign emails per day")
    queued = await everything(
        db,
        select(Delivery.id).where(
            Delivery.campaign_id == campaign_id, Delivery.status == DeliveryStatus.QUEUED
        ),
    )
    assert len(queued) == waiting.recipients_count - waiting.skipped_count - 5 > 0

    # The next day: yesterday's count no longer applies.
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(
                update(Workspace)
                .where(Workspace.id == capped)
                .values(usage_day=datetime.now(UTC).date() - timedelta(days=1))
            )
    with workspace_scope(capped):
        await campaign_sender(runtime).run_batch(batches[0])
    done = await campaign_row(db, campaign_id)
    assert (done.status, done.status_reason) == (CampaignStatus.FINISHED, None)
    assert done.sent_count == done.recipients_count - done.skipped_count


async def test_mail_links_follow_the_workspace_public_url(db: Database, tmp_path: Path) -> None:
    """A workspace with a public URL of its own gets its tracking, unsubscribe and web view links there; the
    others keep the instance's."""
    branded = await make_workspace(db, "branded")
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(
                update(Workspace)
                .where(Workspace.id == branded)
                .values(public_url="https://news.brand-b.example/")
            )
    audience = (await interleaved(db, (branded, W1)))[branded]
    runtime = sending_runtime(db, tmp_path / "outbox", "chosen")
    with workspace_scope(branded):
        campaign_id = await make_campaign(db, audience)
        async with db.transaction() as s:
            await s.execute(
                update(Campaign)
                .where(Campaign.id == campaign_id)
                .values(body='<p>Hi <a href="https://example.com/x">x</a> {{ webview_url }}</p>')
            )
        for batch_id in await start(db, campaign_id, batch_size=100):
            await campaign_sender(runtime).run_batch(batch_id)
    messages = [p.read_bytes().decode() for p in (tmp_path / "outbox").rglob("*.eml")]
    assert messages
    for raw in messages:
        msg = email.message_from_string(raw, policy=email.policy.default)
        assert msg["List-Unsubscribe"].startswith("<https://news.brand-b.example/u/")
        html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        assert "https://news.brand-b.example/t/c/" in html and "https://news.brand-b.example/t/o/" in html
        assert "https://news.brand-b.example/v/" in html and "http://testserver" not in html
