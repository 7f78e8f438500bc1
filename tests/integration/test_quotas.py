"""A workspace's quotas, at the domain level: subscribers it may have, campaign emails per UTC day."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import ImportStatus
from emailkit.domain import quotas
from emailkit.domain.audience import subscribers
from emailkit.domain.errors import DomainError
from tests.support import import_job
from tests.support.factories import make_workspace, make_workspace_key
from tests.support.graphql import data, graphql_runner


async def test_daily_emails_are_granted_up_to_the_quota_then_from_the_next_day(db: Database) -> None:
    capped = await make_workspace(db, "capped", quota_emails_per_day=250)
    morning = datetime(2026, 12, 7, 9, tzinfo=UTC)
    with workspace_scope(capped):
        grants = []
        for wanted in (100, 100, 100, 100):
            async with db.transaction() as session:
                grants.append(await quotas.reserve_emails(session, wanted, now=morning))
        assert [g.granted for g in grants] == [100, 100, 50, 0]
        assert grants[1].next_day is None
        assert grants[2].next_day == datetime(2026, 12, 8, tzinfo=UTC)
        assert "250 campaign emails per day" in grants[3].reason
        async with db.transaction() as session:
            tomorrow = await quotas.reserve_emails(session, 100, now=datetime(2026, 12, 8, 0, 1, tzinfo=UTC))
        assert tomorrow.granted == 100
    # Another workspace's quota is its own; no quota grants everything.
    with workspace_scope(1):
        async with db.transaction() as session:
            free = await quotas.reserve_emails(session, 10_000, now=morning)
    assert (free.granted, free.quota) == (10_000, None)


async def test_subscribers_beyond_the_quota_are_refused(db: Database) -> None:
    small = await make_workspace(db, "small", quota_subscribers=2)
    with workspace_scope(small):
        for n in range(2):
            async with db.transaction() as session:
                await quotas.ensure_room_for_subscribers(session, 1)
                await subscribers.create_subscriber(session, f"p{n}@example.com")
        with pytest.raises(DomainError) as refused:
            async with db.transaction() as session:
                await quotas.ensure_room_for_subscribers(session, 1, field="email")
        assert refused.value.errors[0].code == "QUOTA_EXCEEDED"
        assert "at most 2 subscribers" in refused.value.errors[0].message
    # The default workspace has no quota, whatever the others hold.
    with workspace_scope(1):
        async with db.transaction() as session:
            await quotas.ensure_room_for_subscribers(session, 1_000_000)


async def test_an_import_over_the_subscriber_quota_fails_whole_with_the_reason(db: Database) -> None:
    small = await make_workspace(db, "small", quota_subscribers=3)
    with workspace_scope(small):
        fits = await import_job.start(db, b"email\na@example.com\nb@example.com\n")
        assert (await import_job.run(db, fits)).status is ImportStatus.FINISHED
        over = await import_job.start(db, b"email\nc@example.com\nd@example.com\ne@example.com\n")
        failed = await import_job.run(db, over)
        assert failed.status is ImportStatus.FAILED
        assert "at most 3 subscribers" in (failed.error or "") and "would add 3" in (failed.error or "")
        # Nothing of the failed import stayed.
        assert sorted(await import_job.people(db)) == ["a@example.com", "b@example.com"]


CREATE = "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } userErrors { field code message } } }"


async def test_create_subscriber_over_the_quota_is_a_user_error(
    client: httpx.AsyncClient, db: Database
) -> None:
    small = await make_workspace(db, "small", quota_subscribers=1)
    key = await make_workspace_key(db, small)
    run = graphql_runner(client, key)
    first = data(await run(CREATE, {"i": {"email": "one@example.com"}}))["createSubscriber"]
    assert first["userErrors"] == []
    second = data(await run(CREATE, {"i": {"email": "two@example.com"}}))["createSubscriber"]
    assert second["subscriber"] is None
    assert [(e["field"], e["code"]) for e in second["userErrors"]] == [("email", "QUOTA_EXCEEDED")]
    assert "at most 1 subscribers" in second["userErrors"][0]["message"]
