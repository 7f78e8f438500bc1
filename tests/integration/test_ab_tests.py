"""A/B tests through the send pipeline and the ticker, on both backends (and both ledgers on PostgreSQL).

The test share goes first, each recipient with the variant the split gives them, recorded on the delivery and
never changed by a rerun or a takeover; the campaign waits RUNNING; the ticker (at an injected time) or a
manual pick decides; the same batches then send the winner to everybody else, so each person gets exactly one
message of exactly one variant.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from emailkit.db.engine import Database
from emailkit.db.tables.audience import Segment, Subscriber
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.feedback import CampaignVariantStats, EventType
from emailkit.db.tables.sending import (
    AbDecision,
    AbMetric,
    CampaignAbTest,
    CampaignBatch,
    CampaignStatus,
    CampaignVariant,
    Delivery,
    DeliveryStatus,
)
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID, Workspace
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.feedback import IncomingEvent, record_events
from emailkit.domain.ports.provider import SendResult
from emailkit.domain.runtime import Runtime
from emailkit.domain.sending import campaigns, deliveries, lifecycle, scheduler, webview
from emailkit.domain.sending.ab import winner
from emailkit.domain.sending.ab.definition import AbTestInput, VariantInput
from emailkit.domain.sending.ab.split import Split, position_in_test
from emailkit.domain.sending.ledger import PortableLedger
from emailkit.domain.sending.pipeline import CampaignSender
from tests.integration.test_scheduler import RecordingQueue
from tests.support.ab import (
    KeepingProvider,
    ab_state,
    campaign_row,
    ledger,
    make_ab_campaign,
    make_sender,
    run_all,
    seed_audience,
    start,
    variant_ids,
)
from tests.support.environment import TEST_SECRET

LEDGERS = pytest.mark.parametrize(
    "ledger_kind", ["chosen", pytest.param("portable", marks=pytest.mark.postgresql_only)]
)


def sender_for(db: Database, ledger_kind: str, provider: KeepingProvider, **config: object) -> CampaignSender:
    sender = make_sender(db, provider, **config)
    if ledger_kind == "portable":
        sender.ledger = PortableLedger(db, provider_name="keeping", lease_seconds=sender.config.lease_seconds)
    return sender


def runtime_with(db: Database) -> tuple[Runtime, RecordingQueue]:
    queue = RecordingQueue()
    return Runtime(db=db, secret_key=TEST_SECRET, public_url="http://testserver", jobs=queue), queue


def expected_split(
    campaign_id: int, subscribers: list[int], variants: list[int], share: float
) -> dict[int, int]:
    out = {}
    for sid in subscribers:
        position = position_in_test(campaign_id, sid, share, len(variants))
        if position is not None:
            out[sid] = variants[position]
    return out


async def deliveries_of(db: Database, campaign_id: int, variant_id: int) -> list[int]:
    async with db.session() as s:
        stmt = select(Delivery.id).where(
            Delivery.campaign_id == campaign_id, Delivery.variant_id == variant_id
        )
        return sorted((await s.execute(stmt.order_by(Delivery.id))).scalars())


async def open_some(db: Database, delivery_ids: list[int]) -> None:
    """Each of them opened twice (only the first counts as unique)."""
    events = [IncomingEvent(type=EventType.OPEN, delivery_id=d) for d in delivery_ids for _ in range(2)]
    await record_events(db, events)


async def variant_counters(db: Database, campaign_id: int) -> dict[int, tuple[int, int, int]]:
    """{variant id: (sent, opens, unique opens)}."""
    async with db.session() as s:
        sent = dict(
            (
                await s.execute(
                    select(CampaignVariant.id, CampaignVariant.sent_count).where(
                        CampaignVariant.campaign_id == campaign_id
                    )
                )
            ).all()
        )
        stats = {
            row.variant_id: (row.opens, row.unique_opens)
            for row in (
                await s.execute(
                    select(CampaignVariantStats).where(CampaignVariantStats.campaign_id == campaign_id)
                )
            ).scalars()
        }
    return {vid: (n, *stats.get(vid, (0, 0))) for vid, n in sent.items()}


@LEDGERS
async def test_the_test_share_goes_first_then_the_automatic_winner_to_everybody_else(
    db: Database, ledger_kind: str
) -> None:
    list_id, subscribers = await seed_audience(db, 200)
    campaign_id = await make_ab_campaign(db, list_id, share=0.5, wait=3600)
    a, b = await variant_ids(db, campaign_id)
    batch_ids = await start(db, campaign_id, batch_size=50)
    assert len(batch_ids) == 4
    row = await campaign_row(db, campaign_id)
    assert row.status is CampaignStatus.RUNNING and row.recipients_count == 200
    assert row.status_reason is not None and row.status_reason.startswith("A/B test: sending the test to 50%")

    provider = KeepingProvider()
    sender = sender_for(db, ledger_kind, provider, chunk_size=20)
    await run_all(sender, batch_ids)

    # Only the test share was materialised and sent, each with the variant of the split.
    tested = expected_split(campaign_id, subscribers, [a, b], 0.5)
    assert 70 <= len(tested) <= 130
    recorded = await ledger(db, campaign_id)
    assert {sid: vid for sid, (vid, _) in recorded.items()} == tested
    assert {status for _, status in recorded.values()} == {DeliveryStatus.SENT}
    subjects = provider.subjects_by_recipient()
    assert len(subjects) == len(tested) and all(len(v) == 1 for v in subjects.values())
    by_variant = {a: "A: news for Reader", b: "B: the offer inside"}
    async with db.session() as s:
        emails = dict((await s.execute(select(Subscriber.id, Subscriber.email))).all())
    for sid, vid in tested.items():
        assert subjects[emails[sid]][0].startswith(by_variant[vid])

    # The campaign waits for the winner, still RUNNING, and says until when.
    state = await ab_state(db, campaign_id)
    assert state.test_sent_at is not None and state.decide_at == state.test_sent_at + timedelta(seconds=3600)
    row = await campaign_row(db, campaign_id)
    assert row.status is CampaignStatus.RUNNING
    assert row.status_reason == (
        f"A/B test: waiting for the winner (by unique opens) until {state.decide_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    # A redelivered queue message of a done batch sends nothing.
    assert (await sender.run_batch(batch_ids[0])).claimed is False

    # B is opened by far more of its recipients.
    a_ids, b_ids = await deliveries_of(db, campaign_id, a), await deliveries_of(db, campaign_id, b)
    await open_some(db, a_ids[: len(a_ids) // 5] + b_ids[: len(b_ids) * 3 // 5])

    runtime, queue = runtime_with(db)
    assert await scheduler.tick(runtime, state.decide_at - timedelta(seconds=1)) == []
    assert queue.jobs == []
    assert await scheduler.tick(runtime, state.decide_at + timedelta(seconds=1)) == [campaign_id]
    assert queue.batch_ids() == sorted(batch_ids)
    # Another ticker at the same moment finds nothing to do.
    assert await scheduler.tick(runtime, state.decide_at + timedelta(seconds=2)) == []

    state = await ab_state(db, campaign_id)
    assert (state.winner_variant_id, state.decided_by) == (b, AbDecision.AUTOMATIC)
    assert state.lift is not None and state.lift > 1.5
    assert state.p_value is not None and state.p_value < 0.001
    row = await campaign_row(db, campaign_id)
    assert row.status_reason == (
        "A/B test: variant B won (chosen by unique opens); sending it to the rest of the audience"
    )

    await run_all(sender, batch_ids)
    recorded = await ledger(db, campaign_id)
    # Everybody exactly once: the test share with their variant, everybody else with the winner.
    assert sorted(recorded) == subscribers
    assert {sid: vid for sid, (vid, _) in recorded.items()} == {
        sid: tested.get(sid, b) for sid in subscribers
    }
    subjects = provider.subjects_by_recipient()
    assert len(subjects) == 200 and all(len(v) == 1 for v in subjects.values())
    row = await campaign_row(db, campaign_id)
    assert (row.status, row.status_reason, row.sent_count) == (CampaignStatus.FINISHED, None, 200)

    counters = await variant_counters(db, campaign_id)
    in_a = sum(1 for v in tested.values() if v == a)
    assert counters[a] == (in_a, 2 * (len(a_ids) // 5), len(a_ids) // 5)
    assert counters[b] == (200 - in_a, 2 * (len(b_ids) * 3 // 5), len(b_ids) * 3 // 5)


@LEDGERS
async def test_a_variant_once_recorded_survives_a_rerun_and_a_takeover(
    db: Database, ledger_kind: str
) -> None:
    list_id, subscribers = await seed_audience(db, 60)
    campaign_id = await make_ab_campaign(db, list_id, variants=3, share=1.0)
    variants = await variant_ids(db, campaign_id)
    [batch_id] = await start(db, campaign_id, batch_size=100)

    # A worker claims the batch, materialises it (twice: a rerun adds nobody) and dies before sending.
    first = sender_for(db, ledger_kind, KeepingProvider())
    batch = await first.ledger.claim(batch_id)
    assert batch is not None
    split = Split(campaign_id, tuple(variants), 1.0)
    async with db.transaction() as s:
        await first.ledger.materialise(s, batch, split)
    recorded = await ledger(db, campaign_id)
    assert {sid: vid for sid, (vid, _) in recorded.items()} == expected_split(
        campaign_id, subscribers, variants, 1.0
    )
    async with db.transaction() as s:
        assert (
            await first.ledger.materialise(s, batch, Split(campaign_id, tuple(reversed(variants)), 1.0)) == 0
        )
    assert await ledger(db, campaign_id) == recorded

    # Whatever the split would say now, the ledger's variant is what is sent: the recorded one.
    async with db.transaction() as s:
        await s.execute(update(CampaignAbTest).values(test_share=0.5))
        await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    provider = KeepingProvider()
    second = sender_for(db, ledger_kind, provider)
    outcome = await second.run_batch(batch_id)
    assert outcome.claimed and outcome.done and outcome.sent == 60
    assert await ledger(db, campaign_id) == {
        sid: (vid, DeliveryStatus.SENT) for sid, (vid, _) in recorded.items()
    }
    subjects = provider.subjects_by_recipient()
    assert len(subjects) == 60 and all(len(v) == 1 for v in subjects.values())
    counters = await variant_counters(db, campaign_id)
    assert {vid: n for vid, (n, _, _) in counters.items()} == {
        vid: sum(1 for v, _ in recorded.values() if v == vid) for vid in variants
    }


class CrashingProvider(KeepingProvider):
    """Dies (as its worker would) when asked to send its second group, before committing any of it."""

    calls: int = 0

    async def send_batch(self, messages, *, on_commit=None, on_result=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("worker killed")
        return await super().send_batch(messages, on_commit=on_commit, on_result=on_result)


async def test_a_batch_taken_over_part_way_sends_nobody_twice_and_keeps_the_variants(db: Database) -> None:
    list_id, _subscribers = await seed_audience(db, 80)
    campaign_id = await make_ab_campaign(db, list_id, share=1.0)
    [batch_id] = await start(db, campaign_id, batch_size=100)
    crashing = CrashingProvider()
    with pytest.raises(RuntimeError, match="worker killed"):
        await make_sender(db, crashing, chunk_size=20).run_batch(batch_id)
    before = await ledger(db, campaign_id)
    assert sum(1 for _, st in before.values() if st is DeliveryStatus.SENT) == 20

    async with db.transaction() as s:
        await s.execute(
            update(CampaignBatch)
            .where(CampaignBatch.id == batch_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    provider = KeepingProvider()
    outcome = await make_sender(db, provider, chunk_size=20).run_batch(batch_id)
    assert outcome.claimed and outcome.done and outcome.sent == 60
    after = await ledger(db, campaign_id)
    assert {sid: vid for sid, (vid, _) in after.items()} == {sid: vid for sid, (vid, _) in before.items()}
    assert {st for _, st in after.values()} == {DeliveryStatus.SENT}
    everyone = [m.recipient for m in crashing.messages + provider.messages]
    assert len(everyone) == 80 == len(set(everyone))


async def test_a_winner_picked_during_the_test_goes_to_the_rest_once_the_test_is_sent(db: Database) -> None:
    list_id, subscribers = await seed_audience(db, 100)
    campaign_id = await make_ab_campaign(db, list_id, share=0.4)
    a, b = await variant_ids(db, campaign_id)
    batch_ids = await start(db, campaign_id, batch_size=50)
    provider = KeepingProvider()
    sender = make_sender(db, provider)
    await run_all(sender, batch_ids[:1])

    async with db.transaction() as s:
        _, jobs = await winner.pick_winner(s, campaign_id, a)
    assert list(jobs.batch_ids) == []
    row = await campaign_row(db, campaign_id)
    assert row.status_reason == (
        "A/B test: variant A was picked; the rest of the audience gets it once the test is sent"
    )
    with pytest.raises(DomainError) as refused:
        async with db.transaction() as s:
            await winner.pick_winner(s, campaign_id, b)
    assert refused.value.errors[0].code is ErrorCode.WINNER_ALREADY_CHOSEN

    # The rest of the test share is sent as planned; then the rest is due at once, for the ticker.
    await run_all(sender, batch_ids[1:])
    state = await ab_state(db, campaign_id)
    assert state.test_sent_at is not None and state.decide_at == state.test_sent_at
    assert state.remainder_started_at is None
    runtime, _queue = runtime_with(db)
    assert await scheduler.tick(runtime, utcnow()) == [campaign_id]
    await run_all(sender, batch_ids)

    tested = expected_split(campaign_id, subscribers, [a, b], 0.4)
    recorded = await ledger(db, campaign_id)
    assert {sid: vid for sid, (vid, _) in recorded.items()} == {
        sid: tested.get(sid, a) for sid in subscribers
    }
    assert len(provider.messages) == 100 == len({m.recipient for m in provider.messages})
    state = await ab_state(db, campaign_id)
    assert (state.winner_variant_id, state.decided_by) == (a, AbDecision.MANUAL)
    assert (await campaign_row(db, campaign_id)).status is CampaignStatus.FINISHED


async def test_a_winner_picked_after_the_test_was_sent_starts_the_rest_at_once(db: Database) -> None:
    list_id, subscribers = await seed_audience(db, 60)
    campaign_id = await make_ab_campaign(db, list_id, share=0.5)
    a, b = await variant_ids(db, campaign_id)
    batch_ids = await start(db, campaign_id, batch_size=25)
    provider = KeepingProvider()
    sender = make_sender(db, provider)
    await run_all(sender, batch_ids)
    # A is ahead, but the operator picks B before the wait is over.
    await open_some(db, await deliveries_of(db, campaign_id, a))

    async with db.transaction() as s:
        campaign, jobs = await winner.pick_winner(s, campaign_id, b)
    assert sorted(jobs.batch_ids) == sorted(batch_ids)
    assert campaign.status is CampaignStatus.RUNNING
    state = await ab_state(db, campaign_id)
    assert (state.winner_variant_id, state.decided_by) == (b, AbDecision.MANUAL)
    # Its margin over the runner-up, as it stood: B lost every open to A.
    assert state.lift == -1.0 and state.p_value is not None
    runtime, _ = runtime_with(db)
    assert await scheduler.tick(runtime, utcnow() + timedelta(days=1)) == []  # nothing left for the ticker
    await run_all(sender, batch_ids)
    tested = expected_split(campaign_id, subscribers, [a, b], 0.5)
    recorded = await ledger(db, campaign_id)
    assert {sid: vid for sid, (vid, _) in recorded.items()} == {
        sid: tested.get(sid, b) for sid in subscribers
    }
    assert len(provider.messages) == 60 == len({m.recipient for m in provider.messages})


async def test_a_paused_test_waits_and_a_cancelled_one_is_never_decided(db: Database) -> None:
    list_id, _ = await seed_audience(db, 40)
    paused = await make_ab_campaign(db, list_id, share=0.5, wait=600)
    cancelled = await make_ab_campaign(db, list_id, share=0.5, wait=600)
    sender = make_sender(db, KeepingProvider())
    for campaign_id in (paused, cancelled):
        await run_all(sender, await start(db, campaign_id))
    async with db.transaction() as s:
        await lifecycle.pause_campaign(s, paused)
        await lifecycle.cancel_campaign(s, cancelled)
    due = (await ab_state(db, paused)).decide_at
    assert due is not None
    runtime, _queue = runtime_with(db)
    assert await scheduler.tick(runtime, due + timedelta(seconds=1)) == []

    async with db.transaction() as s:
        row, batch_ids = await lifecycle.resume_campaign(s, paused)
    assert batch_ids == []
    assert row.status_reason is not None and row.status_reason.startswith("A/B test: waiting for the winner")
    assert await scheduler.tick(runtime, due + timedelta(seconds=1)) == [paused]

    variant = (await variant_ids(db, cancelled))[0]
    with pytest.raises(DomainError) as refused:
        async with db.transaction() as s:
            await winner.pick_winner(s, cancelled, variant)
    assert refused.value.errors[0].code is ErrorCode.INVALID_STATE
    assert (await ab_state(db, cancelled)).winner_variant_id is None


async def test_a_segment_campaign_tests_and_sends_within_its_segment_and_the_daily_quota(
    db: Database,
) -> None:
    _list_id, subscribers = await seed_audience(db, 80)
    async with db.transaction() as s:
        # Half of the audience lives elsewhere; the segment is the Berliners.
        await s.execute(
            update(Subscriber)
            .where(Subscriber.id.in_(subscribers[1::2]))
            .values(attributes={"city": "Paris"})
        )
        segment = Segment(
            name="Berliners", filter={"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}
        )
        s.add(segment)
        await s.flush()
        segment_id = segment.id
        await s.execute(
            update(Workspace).where(Workspace.id == DEFAULT_WORKSPACE_ID).values(quota_emails_per_day=1000)
        )
    campaign_id = await make_ab_campaign(db, None, share=0.5, segment_ids=[segment_id])
    a, b = await variant_ids(db, campaign_id)
    batch_ids = await start(db, campaign_id, batch_size=20)
    berliners = subscribers[0::2]
    sender = make_sender(db, KeepingProvider())
    await run_all(sender, batch_ids)
    tested = expected_split(campaign_id, berliners, [a, b], 0.5)
    assert {sid: vid for sid, (vid, _) in (await ledger(db, campaign_id)).items()} == tested

    async def used() -> int:
        async with db.session() as s:
            return int((await s.execute(select(Workspace.usage_emails))).scalar_one())

    # The quota counts what was sent: the test share now, the rest later.
    assert await used() == len(tested)
    runtime, _ = runtime_with(db)
    due = (await ab_state(db, campaign_id)).decide_at
    assert due is not None
    assert await scheduler.tick(runtime, due) == [campaign_id]
    await run_all(sender, batch_ids)
    recorded = await ledger(db, campaign_id)
    assert sorted(recorded) == berliners
    winner_id = (await ab_state(db, campaign_id)).winner_variant_id
    assert winner_id == a  # nobody opened anything: a tie goes to the first variant
    assert {sid: vid for sid, (vid, _) in recorded.items()} == {sid: tested.get(sid, a) for sid in berliners}
    assert await used() == len(berliners)


async def test_pick_winner_refuses_a_campaign_without_a_test_and_a_variant_of_another(db: Database) -> None:
    list_id, _ = await seed_audience(db, 10)
    tested = await make_ab_campaign(db, list_id)
    other = await make_ab_campaign(db, list_id)
    async with db.transaction() as s:
        plain = (
            await campaigns.create_campaign(
                s,
                campaigns.CampaignInput(
                    name="Plain",
                    subject="Hi",
                    from_email="news@ab-mail.example.com",
                    body="<p>x</p>",
                    format=ContentFormat.HTML,
                    list_ids=[list_id],
                ),
            )
        ).id
    await start(db, tested)
    await start(db, plain)
    foreign = (await variant_ids(db, other))[0]

    async def refusal(campaign_id: int, variant_id: int) -> tuple[ErrorCode, str | None]:
        with pytest.raises(DomainError) as refused:
            async with db.transaction() as s:
                await winner.pick_winner(s, campaign_id, variant_id)
        error = refused.value.errors[0]
        return error.code, error.field

    assert await refusal(tested, foreign) == (ErrorCode.VARIANT_NOT_FOUND, "variantId")
    assert await refusal(tested, 10**12) == (ErrorCode.VARIANT_NOT_FOUND, "variantId")
    assert await refusal(10**12, foreign) == (ErrorCode.CAMPAIGN_NOT_FOUND, "campaignId")
    assert await refusal(plain, foreign) == (ErrorCode.NO_AB_TEST, "campaignId")


async def test_deleting_a_tested_campaign_takes_its_test_along(db: Database) -> None:
    list_id, _ = await seed_audience(db, 20)
    campaign_id = await make_ab_campaign(db, list_id, share=1.0)
    a, _b = await variant_ids(db, campaign_id)
    await run_all(make_sender(db, KeepingProvider()), await start(db, campaign_id))
    await open_some(db, await deliveries_of(db, campaign_id, a))
    async with db.transaction() as s:
        await winner.pick_winner(s, campaign_id, a)
        await lifecycle.cancel_campaign(s, campaign_id)
    async with db.transaction() as s:
        await campaigns.delete_campaign(s, campaign_id)
    async with db.session() as s:
        for table in (CampaignVariant, CampaignAbTest, CampaignVariantStats, Delivery):
            assert (await s.execute(select(table))).first() is None, table


async def test_a_test_send_of_one_variant(db: Database) -> None:
    list_id, _ = await seed_audience(db, 2)
    campaign_id = await make_ab_campaign(db, list_id)
    _a, b = await variant_ids(db, campaign_id)
    provider = KeepingProvider()
    sender = make_sender(db, provider)
    results = await sender.send_test(campaign_id, ["me@example.com"], variant_id=b)
    assert [r.ok for r in results] == [True]
    assert [m.subject for m in provider.messages] == ["[Test] B: the offer inside"]
    with pytest.raises(DomainError) as refused:
        await sender.send_test(campaign_id, ["me@example.com"], variant_id=10**12)
    assert refused.value.errors[0].code is ErrorCode.VARIANT_NOT_FOUND


async def test_a_variant_with_content_of_its_own_is_tracked_and_headed_like_the_campaign(
    db: Database,
) -> None:
    list_id, _ = await seed_audience(db, 30)
    data = campaigns.CampaignInput(
        name="Tracked",
        subject="Hello {{ subscriber.name }}",
        from_email="news@ab-mail.example.com",
        body='<p><a href="https://example.com/a">A</a> <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
        format=ContentFormat.HTML,
        plain_text="Hand-written: {{ subscriber.name }}",
        list_ids=[list_id],
        variants=[
            VariantInput(),
            VariantInput(
                body='<p>Other <a href="https://example.com/b">B</a></p>', format=ContentFormat.HTML
            ),
        ],
        ab_test=AbTestInput(test_share=1.0, metric=AbMetric.CLICKS, wait_seconds=60),
    )
    async with db.transaction() as s:
        campaign_id = (await campaigns.create_campaign(s, data)).id
    a, b = await variant_ids(db, campaign_id)
    provider = KeepingProvider()
    await run_all(make_sender(db, provider), await start(db, campaign_id))
    recorded = await ledger(db, campaign_id)
    async with db.session() as s:
        by_email = dict((await s.execute(select(Subscriber.email, Subscriber.id))).all())
    seen = set()
    for m in provider.messages:
        variant = recorded[by_email[m.recipient]][0]
        seen.add(variant)
        assert m.html is not None and m.text is not None
        assert "https://mail.ab.test/t/c/" in m.html and "https://mail.ab.test/t/o/" in m.html
        assert "https://example.com/" not in m.html
        assert m.headers["List-Unsubscribe"].startswith("<https://mail.ab.test/u/")
        assert m.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        if variant == a:
            assert m.text.startswith("Hand-written: Reader")
        else:
            # Its own content: its own text part, derived from its HTML.
            assert m.text.startswith("Other") and "Hand-written" not in m.text
    assert seen == {a, b}


class RefusingProvider(KeepingProvider):
    """Refuses some addresses for good (until told otherwise), accepts the rest."""

    refused: set[str] = set()

    async def send_batch(self, messages, *, on_commit=None, on_result=None):  # type: ignore[no-untyped-def]
        if on_commit is not None:
            await on_commit([m.delivery_id for m in messages])
        results = []
        for m in messages:
            if m.recipient in self.refused:
                results.append(SendResult.failed(m.delivery_id, "550 mailbox unavailable", transient=False))
            else:
                self.messages.append(m)
                results.append(SendResult.sent(m.delivery_id, f"pid-{m.delivery_id}"))
        return results


async def test_failures_retried_during_the_wait_belong_to_the_test(db: Database) -> None:
    list_id, subscribers = await seed_audience(db, 40)
    campaign_id = await make_ab_campaign(db, list_id, share=0.5, wait=600)
    a, b = await variant_ids(db, campaign_id)
    batch_ids = await start(db, campaign_id, batch_size=20)
    tested = expected_split(campaign_id, subscribers, [a, b], 0.5)
    async with db.session() as s:
        emails = dict((await s.execute(select(Subscriber.id, Subscriber.email))).all())
    refused = {emails[sid] for sid in list(tested)[:3]}
    provider = RefusingProvider()
    provider.refused = refused
    sender = make_sender(db, provider)
    await run_all(sender, batch_ids)
    due = (await ab_state(db, campaign_id)).decide_at
    assert due is not None

    async with db.transaction() as s:
        _, retried_batches, count = await deliveries.retry_failed_deliveries(s, campaign_id)
    assert count == 3 and retried_batches
    runtime, queue = runtime_with(db)
    # The winner is due, but part of the test is being sent again: it is chosen, the rest waits for the retry.
    assert await scheduler.tick(runtime, due + timedelta(seconds=1)) == []
    # (That tick only took the retried batch for a lost queue message.)
    assert queue.batch_ids() == sorted(retried_batches)
    state = await ab_state(db, campaign_id)
    assert state.winner_variant_id == a and state.remainder_started_at is None and state.decide_at == due
    provider.refused = set()
    await run_all(sender, retried_batches)
    assert await scheduler.tick(runtime, due + timedelta(seconds=2)) == [campaign_id]
    await run_all(sender, batch_ids)
    recorded = await ledger(db, campaign_id)
    assert {sid: vid for sid, (vid, _) in recorded.items()} == {
        sid: tested.get(sid, a) for sid in subscribers
    }
    assert {st for _, st in recorded.values()} == {DeliveryStatus.SENT}
    assert len(provider.messages) == 40 == len({m.recipient for m in provider.messages})


async def test_the_web_view_shows_the_variant_its_reader_got(db: Database) -> None:
    list_id, _ = await seed_audience(db, 12)
    campaign_id = await make_ab_campaign(db, list_id)
    a, b = await variant_ids(db, campaign_id)
    provider = KeepingProvider()
    sender = make_sender(db, provider)
    await run_all(sender, await start(db, campaign_id))
    recorded = await ledger(db, campaign_id)
    async with db.session() as s:
        delivery_of = {
            int(sid): (int(did), vid)
            for did, sid, vid in (
                await s.execute(
                    select(Delivery.id, Delivery.subscriber_id, Delivery.variant_id).where(
                        Delivery.campaign_id == campaign_id
                    )
                )
            ).all()
        }
    subjects = {}
    for subscriber_id, (variant, _status) in recorded.items():
        delivery_id, _ = delivery_of[subscriber_id]
        page = await webview.web_view(
            db, sender.messages, delivery_id, default_base_url="https://mail.ab.test"
        )
        assert isinstance(page, webview.WebView)
        subjects[variant] = page.subject
    assert set(subjects) == {a, b}
    assert subjects[a] != subjects[b] and subjects[b].startswith("B:")
