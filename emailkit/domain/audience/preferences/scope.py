"""Which lists an unsubscribe from a delivery leaves.

Every list through which that delivery could reach its recipient: the pipeline records them on the delivery
when it materialises the recipient (``deliveries.via_list_ids``), so the answer does not move with later edits
of the campaign, its lists or its segments. A campaign that targets only a segment reaches people through
lists it never names; leaving only the campaign's own lists would change nothing and the next campaign would
mail them again (RFC 8058 and the mailbox providers' bulk-sender rules require that it does not).

Rows without a record (transactional mail, rows written before it was recorded) fall back to the widest
answer that is still right: every list, unless the delivery belongs to a campaign that targeted lists only,
in which case those lists.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from sqlalchemy import BigInteger, ColumnElement, Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import one_of
from emailkit.db.tables.audience import Subscriber, Subscription, SubscriptionStatus
from emailkit.db.tables.sending import CampaignList, CampaignSegment, Delivery
from emailkit.domain.webhooks_out import emitters

# A scope is the ids of the lists to leave, or EVERY_LIST.
Scope = tuple[int, ...] | None
EVERY_LIST: Scope = None


async def scopes_of(session: AsyncSession, delivery_ids: Collection[int]) -> dict[int, Scope]:
    """The scope of each existing delivery among ``delivery_ids``."""
    if not delivery_ids:
        return {}
    rows = (
        await session.execute(
            select(Delivery.id, Delivery.campaign_id, Delivery.via_list_ids).where(
                one_of(session, Delivery.id, set(delivery_ids), BigInteger())
            )
        )
    ).all()
    out: dict[int, Scope] = {}
    unrecorded: dict[int, list[int]] = defaultdict(list)
    for delivery_id, campaign_id, via in rows:
        if via is not None:
            out[delivery_id] = tuple(sorted(int(x) for x in via))
        elif campaign_id is None:
            out[delivery_id] = EVERY_LIST
        else:
            unrecorded[campaign_id].append(delivery_id)
    for campaign_id, scope in (await _campaign_scopes(session, unrecorded)).items():
        for delivery_id in unrecorded[campaign_id]:
            out[delivery_id] = scope
    return out


async def _campaign_scopes(session: AsyncSession, campaign_ids: Iterable[int]) -> dict[int, Scope]:
    wanted = set(campaign_ids)
    if not wanted:
        return {}
    lists: dict[int, list[int]] = defaultdict(list)
    for campaign_id, list_id in await session.execute(
        select(CampaignList.campaign_id, CampaignList.list_id).where(
            one_of(session, CampaignList.campaign_id, wanted, BigInteger())
        )
    ):
        lists[campaign_id].append(list_id)
    with_segments = set(
        (
            await session.execute(
                select(CampaignSegment.campaign_id).where(
                    one_of(session, CampaignSegment.campaign_id, wanted, BigInteger())
                )
            )
        ).scalars()
    )
    return {cid: EVERY_LIST if cid in with_segments else tuple(sorted(lists.get(cid, ()))) for cid in wanted}


def _in_scope(
    subscriber_ids: Collection[int], scope: Scope, session: AsyncSession
) -> list[ColumnElement[bool]]:
    conditions = [
        one_of(session, Subscription.subscriber_id, sorted(set(subscriber_ids)), BigInteger()),
        Subscription.status != SubscriptionStatus.UNSUBSCRIBED,
    ]
    if scope is not None:  # EVERY_LIST
        conditions.append(one_of(session, Subscription.list_id, scope, BigInteger()))
    return conditions


async def leave(session: AsyncSession, subscriber_ids: Collection[int], scope: Scope, now: datetime) -> int:
    """Mark the subscribers' subscriptions within ``scope`` UNSUBSCRIBED; returns how many changed."""
    if not subscriber_ids or scope == ():
        return 0
    result = await session.execute(
        update(Subscription)
        .where(*_in_scope(subscriber_ids, scope, session))
        .values(status=SubscriptionStatus.UNSUBSCRIBED, updated_at=now)
        .returning(Subscription.workspace_id, Subscription.subscriber_id, Subscription.list_id)
        .execution_options(synchronize_session=False)
    )
    changed = result.all()
    await _tell_webhooks(session, changed, every_list=scope is EVERY_LIST)
    return len(changed)


async def _tell_webhooks(
    session: AsyncSession, changed: Sequence[Row[int, int, int]], *, every_list: bool
) -> None:
    """``subscriber.unsubscribed`` (source LINK) per subscriber that left, read only where an endpoint of its
    workspace listens."""
    left: dict[tuple[int, int], list[int]] = defaultdict(list)
    for workspace_id, subscriber_id, list_id in changed:
        left[(int(workspace_id), int(subscriber_id))].append(int(list_id))
    listening = {w for w, _ in left if await emitters.wanted(session, w, "subscriber.unsubscribed")}
    wanted = [s for w, s in left if w in listening]
    if not wanted:
        return
    emails = dict(
        (
            await session.execute(select(Subscriber.id, Subscriber.email).where(Subscriber.id.in_(wanted)))
        ).all()
    )
    for (workspace_id, subscriber_id), list_ids in sorted(left.items()):
        if workspace_id in listening and subscriber_id in emails:
            await emitters.subscriber_unsubscribed(
                session,
                workspace_id=workspace_id,
                subscriber_id=subscriber_id,
                email=emails[subscriber_id],
                list_ids=None if every_list else sorted(list_ids),
                source="LINK",
            )


async def still_subscribed(session: AsyncSession, subscriber_id: int, scope: Scope) -> bool:
    """Whether any subscription within ``scope`` is not UNSUBSCRIBED yet."""
    found = await session.execute(
        select(Subscription.list_id).where(*_in_scope([subscriber_id], scope, session)).limit(1)
    )
    return found.first() is not None


async def unsubscribe_recipients(
    session: AsyncSession, recipients: Mapping[int | None, Collection[int]], now: datetime
) -> int:
    """Apply unsubscribes given as {delivery id (None: no delivery known): subscriber ids}; every list for a
    subscriber without a delivery. Returns how many subscriptions changed."""
    scopes = await scopes_of(session, [d for d in recipients if d is not None])
    by_scope: dict[Scope, set[int]] = defaultdict(set)
    for delivery_id, subscriber_ids in recipients.items():
        scope = EVERY_LIST if delivery_id is None else scopes.get(delivery_id, EVERY_LIST)
        by_scope[scope].update(subscriber_ids)
    changed = 0
    # A stable order, so concurrent batches lock subscriptions in the same order.
    for scope, subscriber_ids in sorted(by_scope.items(), key=lambda kv: (kv[0] is not None, kv[0] or ())):
        changed += await leave(session, subscriber_ids, scope, now)
    return changed
