"""The campaign state machine: every change of a campaign's status is made here.

An operator starts, schedules, pauses, resumes and cancels; the ticker starts a due campaign (or fails one that
cannot start at its sendAt); the pipeline pauses a campaign over its error budget, fails one whose content no
longer compiles, and finishes one whose batches are all done; the feedback policy pauses one over its complaint
limit; a retry of failed deliveries reopens a finished one. Each transition takes the caller's session, so it
runs in the caller's transaction as one statement or one row change, and states its precondition in SQL (or
under a row lock): a transition that lost a race changes nothing. A transition that happened is announced to the
workspace's webhook endpoints (campaign.started, .paused, .finished, .failed) in the same transaction.

The database is the truth about a send. Starting snapshots the audience bound and plans the batches in the same
transaction that flips the status, so a crash between "started" and "enqueued" loses nothing: the ticker finds
PENDING batches that nobody has enqueued and enqueues them.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import Exists, SQLColumnExpression, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import (
    FINAL_CAMPAIGN_STATUSES,
    BatchStatus,
    Campaign,
    CampaignBatch,
    CampaignList,
    CampaignStatus,
)
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import targeting as audience
from emailkit.domain.audience.segments import store as segments
from emailkit.domain.errors import DomainError, ErrorCode, NotFound
from emailkit.domain.sending import local_time
from emailkit.domain.sending.ab import state as ab_state
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.failures import all_failed_reason
from emailkit.domain.sending.jobs import Jobs
from emailkit.domain.webhooks_out.emitters import campaign_status as announce
from emailkit.metrics import record as metrics

S = CampaignStatus

CAN_START = frozenset({S.DRAFT, S.SCHEDULED})
CAN_PAUSE = frozenset({S.RUNNING})
CAN_RESUME = frozenset({S.PAUSED})
CAN_CANCEL = frozenset(S) - FINAL_CAMPAIGN_STATUSES
CAN_SCHEDULE = frozenset({S.DRAFT, S.SCHEDULED})
# Failed deliveries can be queued again while the campaign sends or waits, and after it ended by itself (a
# cancelled campaign stays cancelled): that reopens it.
REOPEN_ON_RETRY = FINAL_CAMPAIGN_STATUSES - {S.CANCELLED}
CAN_RETRY = frozenset({S.RUNNING, S.PAUSED}) | REOPEN_ON_RETRY
# The status reason of a campaign paused because its workspace was archived (nothing of it may send).
WORKSPACE_ARCHIVED = "workspace archived"


async def _locked(session: AsyncSession, campaign_id: int) -> Campaign:
    stmt = select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("Campaign")
    return row


def _check(row: Campaign, allowed: Collection[CampaignStatus], action: str) -> None:
    if row.status not in allowed:
        names = ", ".join(sorted(s.value for s in allowed))
        raise DomainError.single(
            ErrorCode.INVALID_STATE,
            f"Cannot {action} a {row.status.value} campaign (allowed from: {names})",
            "id",
        )


async def _require_targets(session: AsyncSession, campaign_id: int) -> None:
    lists = select(CampaignList.list_id).where(CampaignList.campaign_id == campaign_id).limit(1)
    if (await session.execute(lists)).first() is None and not (
        await segments.segment_ids_by_campaign(session, [campaign_id])
    )[campaign_id]:
        raise DomainError.single(ErrorCode.INVALID_STATE, "The campaign targets no lists or segments", "id")


async def start_campaign(
    session: AsyncSession,
    campaign_id: int,
    *,
    batch_size: int = SendingConfig.batch_size,
    now: datetime | None = None,
    default_timezone: str = SendingConfig.default_timezone,
) -> tuple[Campaign, list[int]]:
    """Move to RUNNING and plan the batches; returns the campaign and the batch ids to enqueue after commit.

    A campaign sent in local time also works out when its last timezone is due (`default_timezone` is the
    instance's), which its statusReason says until then."""
    row = await _locked(session, campaign_id)
    _check(row, CAN_START, "start")
    await _require_targets(session, campaign_id)
    now = now or utcnow()
    # From here on the send uses these copies of the segment filters, evaluated as of `now`.
    await segments.record_definitions(session, campaign_id)
    target = await audience.load_target(session, campaign_id, as_of=now)
    max_id, count = await audience.snapshot(session, target)
    bounds = await audience.batch_boundaries(session, target, max_id, batch_size) if count else []
    for i, lo in enumerate(bounds):
        hi = bounds[i + 1] - 1 if i + 1 < len(bounds) else max_id
        session.add(CampaignBatch(campaign_id=campaign_id, lo_id=lo, hi_id=hi, enqueued_at=now))
    row.audience_max_id = max_id
    row.recipients_count = count
    row.started_at = now
    row.status_reason = None
    if row.local_send_at is not None and count:
        _, row.local_send_until = await local_time.due_range(
            session, target, row.local_send_at, default_timezone
        )
    if count == 0:
        # Nothing to send: finishing at once is more honest than a RUNNING campaign nobody will complete.
        row.status = S.FINISHED
        row.finished_at = now
        row.status_reason = "The campaign's audience is empty"
    else:
        row.status = S.RUNNING
        # An A/B test says it sends the test share first; a local-time campaign, until when it waits.
        row.status_reason = await running_note(session, row, now)
    await session.flush()
    metrics.campaign_status(row.status)
    await announce(session, campaign_id, S.RUNNING, workspace_id=row.workspace_id)
    if row.status is S.FINISHED:
        await announce(session, campaign_id, S.FINISHED, workspace_id=row.workspace_id)
    return row, await pending_batch_ids(session, campaign_id)


async def start_campaign_with_jobs(
    session: AsyncSession,
    campaign_id: int,
    *,
    batch_size: int = SendingConfig.batch_size,
    now: datetime | None = None,
    default_timezone: str = SendingConfig.default_timezone,
) -> tuple[Campaign, Jobs]:
    """`start_campaign` for ``dispatch.commit_then_enqueue``: the campaign, and its batches as the jobs."""
    row, batch_ids = await start_campaign(
        session, campaign_id, batch_size=batch_size, now=now, default_timezone=default_timezone
    )
    return row, Jobs(batch_ids=batch_ids)


async def running_note(session: AsyncSession, row: Campaign, now: datetime | None = None) -> str | None:
    """What a RUNNING campaign's statusReason says when nothing else holds it up: its A/B test's phase, if it
    has one, else, while later timezones of a local-time send are due, until when it waits for them."""
    return await ab_state.running_note(session, row.id) or local_time.running_note(row, now or utcnow())


async def pending_batch_ids(session: AsyncSession, campaign_id: int) -> list[int]:
    stmt = (
        select(CampaignBatch.id)
        .where(CampaignBatch.campaign_id == campaign_id, CampaignBatch.status != BatchStatus.DONE)
        .order_by(CampaignBatch.lo_id)
    )
    return [int(x) for x in (await session.execute(stmt)).scalars()]


async def pause_campaign(session: AsyncSession, campaign_id: int, reason: str = "Paused by user") -> Campaign:
    row = await _locked(session, campaign_id)
    _check(row, CAN_PAUSE, "pause")
    row.status = S.PAUSED
    row.status_reason = reason
    await session.flush()
    metrics.campaign_status(row.status)
    await announce(session, campaign_id, S.PAUSED, workspace_id=row.workspace_id)
    return row


async def resume_campaign(session: AsyncSession, campaign_id: int) -> tuple[Campaign, list[int]]:
    row = await _locked(session, campaign_id)
    _check(row, CAN_RESUME, "resume")
    row.status = S.RUNNING
    row.status_reason = await running_note(session, row)
    ids = await pending_batch_ids(session, campaign_id)
    if ids:
        await session.execute(
            update(CampaignBatch).where(CampaignBatch.id.in_(ids)).values(enqueued_at=utcnow())
        )
    await session.flush()
    metrics.campaign_status(row.status)
    return row, ids


async def resume_campaign_with_jobs(session: AsyncSession, campaign_id: int) -> tuple[Campaign, Jobs]:
    """`resume_campaign` for ``dispatch.commit_then_enqueue``: the campaign, and its batches as the jobs."""
    row, batch_ids = await resume_campaign(session, campaign_id)
    return row, Jobs(batch_ids=batch_ids)


async def cancel_campaign(session: AsyncSession, campaign_id: int) -> Campaign:
    row = await _locked(session, campaign_id)
    _check(row, CAN_CANCEL, "cancel")
    row.status = S.CANCELLED
    row.status_reason = "Cancelled by user"
    row.finished_at = utcnow()
    await session.flush()
    metrics.campaign_status(row.status)
    return row


async def schedule_campaign(
    session: AsyncSession,
    campaign_id: int,
    send_at: datetime,
    *,
    now: datetime | None = None,
    local: bool = False,
    default_timezone: str = SendingConfig.default_timezone,
) -> Campaign:
    """DRAFT/SCHEDULED → SCHEDULED: the ticker starts it at `send_at`.

    `local`: each recipient gets it when their own clock shows `send_at`'s date and time of day (its offset
    ignored, see ``local_time``); the campaign is then due when the first timezone of its audience is, as it
    stands now (`default_timezone` is the instance's)."""
    now = now or utcnow()
    if local:
        wall = local_time.wall_clock(send_at)
        if local_time.has_passed_everywhere(wall, now - timedelta(seconds=5)):
            raise DomainError.single(ErrorCode.INVALID_INPUT, "sendAt has passed in every timezone", "sendAt")
    elif send_at.tzinfo is None:
        raise DomainError.single(ErrorCode.INVALID_INPUT, "sendAt needs a timezone offset", "sendAt")
    elif send_at < now - timedelta(seconds=5):
        raise DomainError.single(ErrorCode.INVALID_INPUT, "sendAt is in the past", "sendAt")
    row = await _locked(session, campaign_id)
    _check(row, CAN_SCHEDULE, "schedule")
    await _require_targets(session, campaign_id)
    row.status = S.SCHEDULED
    row.status_reason = None
    row.local_send_until = None
    if local:
        target = await audience.load_target(session, campaign_id, as_of=now)
        row.local_send_at = wall
        row.send_at, _ = await local_time.due_range(session, target, wall, default_timezone)
    else:
        row.local_send_at = None
        row.send_at = send_at
    await session.flush()
    metrics.campaign_status(row.status)
    return row


async def fail_to_start(session: AsyncSession, campaign_id: int, error: Exception) -> None:
    """SCHEDULED → FAILED: the ticker could not start the campaign at its sendAt (it names no target any
    more, say), and says why on the campaign. A campaign another ticker started meanwhile is left alone."""
    failed = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == S.SCHEDULED)
        .values(status=S.FAILED, status_reason=f"Could not start at sendAt: {error}")
    )
    if failed.rowcount:  # type: ignore[attr-defined]
        metrics.campaign_status(S.FAILED)
        await announce(session, campaign_id, S.FAILED)


async def due_scheduled(session: AsyncSession, now: datetime) -> list[tuple[int, int]]:
    """(workspace id, campaign id) of the scheduled campaigns due by `now`, in every active workspace (run it
    for all workspaces); an archived workspace's campaigns wait."""
    stmt = (
        select(Campaign.workspace_id, Campaign.id)
        .join(Workspace, Workspace.id == Campaign.workspace_id)
        .where(
            Campaign.status == S.SCHEDULED,
            Campaign.send_at <= now,
            Workspace.status == WorkspaceStatus.ACTIVE,
        )
    )
    return [(int(w), int(c)) for w, c in (await session.execute(stmt)).all()]


async def finish_if_complete(session: AsyncSession, campaign_id: int) -> CampaignStatus | None:
    """End a RUNNING campaign whose batches are all done; returns the status it ended in, or None.

    A campaign whose every attempted recipient failed ends FAILED, with the commonest reason: whatever the
    audience size, so a small campaign (under the error budget's minimum sample) does not look FINISHED
    while nobody got the mail.
    """
    open_batches = exists().where(
        CampaignBatch.campaign_id == campaign_id, CampaignBatch.status != BatchStatus.DONE
    )
    stmt = (
        select(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == S.RUNNING, ~open_batches)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        return None
    now = utcnow()
    waiting = await ab_state.test_sent(session, campaign_id, now)
    if waiting is not None:
        # Only the A/B test's share has been sent: the rest waits for the winner, still RUNNING.
        row.status_reason = waiting
        await session.flush()
        return None
    row.finished_at = now
    if row.sent_count == 0 and row.failed_count > 0:
        row.status = S.FAILED
        row.status_reason = await all_failed_reason(session, campaign_id, row.failed_count)
    else:
        row.status = S.FINISHED
        row.status_reason = None
    await session.flush()
    metrics.campaign_status(row.status)
    await announce(session, campaign_id, row.status, workspace_id=row.workspace_id)
    return row.status


def is_running(campaign_id: SQLColumnExpression[int]) -> Exists:
    """SQL: the campaign is RUNNING, the one status in which its batches are claimed and its mail handed over."""
    return exists().where(Campaign.id == campaign_id, Campaign.status == S.RUNNING)


async def pause_automatically(
    session: AsyncSession, campaign_id: int, reason: str, *, now: datetime | None = None
) -> bool:
    """RUNNING → PAUSED by emailkit itself (over the error budget, over the complaint limit), with the reason
    an operator reads before resuming; False when the campaign was no longer RUNNING."""
    result = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == S.RUNNING)
        .values(status=S.PAUSED, status_reason=reason, updated_at=now or utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:  # type: ignore[attr-defined]
        metrics.campaign_status(S.PAUSED)
        await announce(session, campaign_id, S.PAUSED)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def pause_for_archived_workspace(session: AsyncSession, campaign_id: int) -> bool:
    """RUNNING → PAUSED: the campaign's workspace was archived; resumed by an operator once it is active again
    (the batches wait PENDING). False when the campaign was no longer RUNNING."""
    return await pause_automatically(session, campaign_id, WORKSPACE_ARCHIVED)


async def note_while_running(session: AsyncSession, campaign_id: int, reason: str | None) -> None:
    """Say why a RUNNING campaign is waiting (its workspace's daily quota), or clear that (back to what its A/B
    test's phase says, if it has one); no transition."""
    if reason is None:
        row = await session.get(Campaign, campaign_id)
        reason = await running_note(session, row) if row is not None else None
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == S.RUNNING)
        .values(status_reason=reason)
    )


async def note_test_phase(session: AsyncSession, campaign_id: int, reason: str) -> None:
    """Say what a RUNNING campaign's A/B test is at, unless something else holds the campaign up (its quota)."""
    await session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == S.RUNNING,
            or_(Campaign.status_reason.is_(None), Campaign.status_reason.startswith(ab_state.NOTE_PREFIX)),
        )
        .values(status_reason=reason)
        .execution_options(synchronize_session=False)
    )


async def has_open_batches(session: AsyncSession, campaign_id: int) -> bool:
    stmt = select(CampaignBatch.id).where(
        CampaignBatch.campaign_id == campaign_id, CampaignBatch.status != BatchStatus.DONE
    )
    return (await session.execute(stmt.limit(1))).first() is not None


async def send_to_the_rest(
    session: AsyncSession, campaign_id: int, reason: str, *, now: datetime
) -> list[int]:
    """A RUNNING campaign whose A/B test is decided (held under its row lock, every batch done): its batches
    run again, for the rest of the audience; returns them, to enqueue after commit. Stays RUNNING."""
    await session.execute(
        update(CampaignBatch)
        .where(CampaignBatch.campaign_id == campaign_id, CampaignBatch.status == BatchStatus.DONE)
        .values(status=BatchStatus.PENDING, lease_until=None, enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == S.RUNNING)
        .values(status_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return await pending_batch_ids(session, campaign_id)


async def fail(session: AsyncSession, campaign_id: int, reason: str) -> None:
    """RUNNING → FAILED: the send cannot go on (its content no longer compiles), visibly and for good."""
    failed = await session.execute(
        update(Campaign)
        .where(Campaign.id == campaign_id, Campaign.status == S.RUNNING)
        .values(status=S.FAILED, status_reason=reason, finished_at=utcnow())
    )
    if failed.rowcount:  # type: ignore[attr-defined]
        metrics.campaign_status(S.FAILED)
        await announce(session, campaign_id, S.FAILED)


async def lock_for_retry(session: AsyncSession, campaign_id: int) -> Campaign:
    """The campaign whose failed deliveries are about to be queued again, locked; refused unless CAN_RETRY."""
    stmt = select(Campaign).where(Campaign.id == campaign_id).with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("Campaign", code=ErrorCode.CAMPAIGN_NOT_FOUND)
    if row.status not in CAN_RETRY:
        raise DomainError.single(
            ErrorCode.INVALID_STATE,
            f"Failed deliveries of a {row.status.value} campaign cannot be retried",
            "campaignId",
        )
    return row


def reopen_for_retry(row: Campaign, *, failed: int, in_doubt: int) -> None:
    """FINISHED or FAILED → RUNNING until the retried recipients are done (flushed with the caller's other
    changes to the row); a RUNNING or PAUSED campaign keeps its status (resume sends them with the rest)."""
    if row.status not in REOPEN_ON_RETRY:
        return
    row.status = S.RUNNING
    metrics.campaign_status(S.RUNNING)
    row.finished_at = None
    row.status_reason = f"Retrying {failed + in_doubt} failed deliveries" + (
        f" ({in_doubt} of them in doubt)" if in_doubt else ""
    )
