"""Tie events to the delivery (and so the campaign and subscriber) they are about.

In order of trust: our own delivery id carried back in the provider's metadata; the provider's message id
(several deliveries may share one, SendGrid gives one id to a whole batch request, so the address picks the
right one); otherwise the latest delivery sent to a subscriber with that address. A claimed id that does not
exist in the database is ignored rather than trusted.

Each row also gets its workspace, the one everything it causes is stored and acted upon in: the delivery's;
else the claimed campaign's, else the claimed subscriber's (a claim from another workspace than one already
known is ignored, so a row never mixes workspaces); else that of the subscriber with its address. An address
may belong to subscribers of several workspaces: the one already known for the row decides; without one, the
only workspace that has it, else the default workspace if it has it, else the lowest id. A row tied to
nothing gets the fallback workspace the caller names (the default one for system work).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import BigInteger, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.dialect import dialect_of, one_of, pg_driver
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import Campaign, Delivery, DeliveryStatus
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.feedback.types import Pending

# Deliveries that went out (or may have: an event about an IN_DOUBT one shows it did); a SKIPPED or QUEUED
# row never reached the recipient.
_HANDED_OVER = (DeliveryStatus.SENT, DeliveryStatus.SENDING, DeliveryStatus.IN_DOUBT)


class _Delivery(NamedTuple):
    id: int
    workspace_id: int
    campaign_id: int | None
    subscriber_id: int | None
    email: str
    variant_id: int | None


def _attach(row: Pending, d: _Delivery) -> None:
    row.delivery_id = d.id
    row.workspace_id = d.workspace_id
    row.campaign_id = d.campaign_id
    row.subscriber_id = d.subscriber_id
    row.variant_id = d.variant_id
    if row.email is None:
        row.email = d.email


_COLUMNS = (
    Delivery.id,
    Delivery.workspace_id,
    Delivery.campaign_id,
    Delivery.subscriber_id,
    Delivery.email,
    Delivery.variant_id,
)


_PG_BY_IDS = (
    "SELECT id, workspace_id, campaign_id, subscriber_id, email, variant_id FROM deliveries "
    "WHERE id = ANY(string_to_array($1, ',')::bigint[])"
)
_PG_BY_MESSAGE_IDS = (
    "SELECT id, workspace_id, campaign_id, subscriber_id, email, variant_id, provider_message_id FROM deliveries "
    "WHERE provider_message_id = ANY($1::varchar[])"
)


async def _by_ids(session: AsyncSession, ids: Iterable[int]) -> dict[int, _Delivery]:
    wanted = set(ids)
    if not wanted:
        return {}
    if dialect_of(session) == "postgresql":
        # A thousand rows per batch: straight from the driver, without per-row ORM result processing.
        rows = await (await pg_driver(session)).fetch(_PG_BY_IDS, ",".join(map(str, wanted)))
        return {r[0]: _Delivery(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows}
    stmt = select(*_COLUMNS).where(one_of(session, Delivery.id, wanted, BigInteger()))
    return {r[0]: _Delivery(*r) for r in await session.execute(stmt)}


async def _by_message_ids(session: AsyncSession, ids: Iterable[str]) -> dict[str, list[_Delivery]]:
    wanted = set(ids)
    if not wanted:
        return {}
    found: dict[str, list[_Delivery]] = defaultdict(list)
    if dialect_of(session) == "postgresql":
        for r in await (await pg_driver(session)).fetch(_PG_BY_MESSAGE_IDS, list(wanted)):
            found[r[6]].append(_Delivery(r[0], r[1], r[2], r[3], r[4], r[5]))
        return found
    stmt = select(*_COLUMNS, Delivery.provider_message_id).where(
        one_of(session, Delivery.provider_message_id, wanted, String())
    )
    for r in await session.execute(stmt):
        found[r.provider_message_id].append(_Delivery(*r[:6]))
    return found


# An address's subscribers: {workspace id: subscriber id}.
_Holders = dict[int, int]


async def _subscribers_by_email(session: AsyncSession, emails: Iterable[str]) -> dict[str, _Holders]:
    wanted = set(emails)
    if not wanted:
        return {}
    stmt = select(Subscriber.email, Subscriber.workspace_id, Subscriber.id).where(
        one_of(session, Subscriber.email, wanted, String())
    )
    found: dict[str, _Holders] = defaultdict(dict)
    for email, workspace_id, subscriber_id in await session.execute(stmt):
        found[email][workspace_id] = subscriber_id
    return found


def _holder(holders: _Holders, known_workspace: int) -> tuple[int, int] | None:
    """(workspace, subscriber) of the address for a row whose workspace is `known_workspace` (0: unknown)."""
    if known_workspace:
        found = holders.get(known_workspace)
        return None if found is None else (known_workspace, found)
    if not holders:
        return None
    if len(holders) == 1:
        return next(iter(holders.items()))
    # Several workspaces have the address and nothing says which one the event is about: the default one,
    # where everything before workspaces lived, else the oldest.
    workspace_id = DEFAULT_WORKSPACE_ID if DEFAULT_WORKSPACE_ID in holders else min(holders)
    return workspace_id, holders[workspace_id]


async def _existing(
    session: AsyncSession, model: type[Campaign] | type[Subscriber], ids: set[int]
) -> dict[int, int]:
    """{id: workspace id} of the rows among `ids` that exist."""
    if not ids:
        return {}
    stmt = select(model.id, model.workspace_id).where(one_of(session, model.id, ids, BigInteger()))
    return {row_id: workspace_id for row_id, workspace_id in await session.execute(stmt)}


def _claim(row: Pending, claimed: dict[int, int], ref: int | None) -> bool:
    """Whether the claimed id `ref` exists in the row's workspace (any, while that is unknown); takes that
    workspace for the row."""
    workspace_id = claimed.get(ref) if ref is not None else None
    if workspace_id is None or row.workspace_id not in (0, workspace_id):
        return False
    row.workspace_id = workspace_id
    return True


async def _latest_for_subscribers(
    session: AsyncSession, subscriber_ids: Iterable[int]
) -> dict[int, _Delivery]:
    wanted = set(subscriber_ids)
    if not wanted:
        return {}
    latest = (
        select(func.max(Delivery.id).label("id"))
        .where(
            one_of(session, Delivery.subscriber_id, wanted, BigInteger()), Delivery.status.in_(_HANDED_OVER)
        )
        .group_by(Delivery.subscriber_id)
        .subquery()
    )
    stmt = select(*_COLUMNS).join(latest, latest.c.id == Delivery.id)
    out: dict[int, _Delivery] = {}
    for r in await session.execute(stmt):
        if r.subscriber_id is not None:
            out[r.subscriber_id] = _Delivery(*r)
    return out


async def _for_campaign_and_subscriber(
    session: AsyncSession, pairs: set[tuple[int, int]]
) -> dict[tuple[int, int], _Delivery]:
    if not pairs:
        return {}
    campaigns = {c for c, _ in pairs}
    subscribers = {s for _, s in pairs}
    stmt = select(*_COLUMNS).where(
        one_of(session, Delivery.campaign_id, campaigns, BigInteger()),
        one_of(session, Delivery.subscriber_id, subscribers, BigInteger()),
    )
    out: dict[tuple[int, int], _Delivery] = {}
    for r in await session.execute(stmt):
        key = (r.campaign_id, r.subscriber_id)
        if key in pairs:
            out[key] = _Delivery(*r)
    return out


async def correlate(session: AsyncSession, rows: Sequence[Pending], fallback_workspace: int) -> None:
    """Fill in delivery, campaign, subscriber and workspace ids in place (a few queries for the whole batch;
    the usual batch, where every event carries our delivery id, costs one). Rows tied to nothing get
    `fallback_workspace`."""
    by_id = await _by_ids(session, (r.delivery_ref for r in rows if r.delivery_ref is not None))
    rest: list[Pending] = []
    for r in rows:
        if r.delivery_ref is not None and (d := by_id.get(r.delivery_ref)) is not None:
            _attach(r, d)
        else:
            rest.append(r)

    claimed_campaigns: dict[int, int] = {}
    if rest:
        rest = await _attach_by_message_id(session, rest)
        claimed_campaigns = await _claim_campaigns(session, rest)
    loose = [r for r in rows if r.subscriber_id is None]
    if loose:
        await _find_subscribers(session, loose)
    if rest:
        await _by_subscriber(session, rest, claimed_campaigns)
    for r in rows:
        if not r.workspace_id:
            r.workspace_id = fallback_workspace


async def _attach_by_message_id(session: AsyncSession, rest: list[Pending]) -> list[Pending]:
    """Attach rows by the provider's message id (the address decides between deliveries sharing one); the
    rows still without a delivery."""
    by_message = await _by_message_ids(
        session, (r.provider_message_id for r in rest if r.provider_message_id)
    )
    for r in rest:
        if r.provider_message_id and (found := by_message.get(r.provider_message_id)):
            same_address = [d for d in found if d.email == r.email]
            if same_address:
                _attach(r, same_address[0])
            elif len(found) == 1:
                _attach(r, found[0])
    return [r for r in rest if r.delivery_id is None]


async def _claim_campaigns(session: AsyncSession, rest: list[Pending]) -> dict[int, int]:
    """{id: workspace} of the claimed campaigns that exist; each row claiming one takes its workspace (before
    its subscriber is looked up, so that an address is found in the campaign's workspace)."""
    claimed = await _existing(session, Campaign, {r.campaign_ref for r in rest if r.campaign_ref})
    for r in rest:
        _claim(r, claimed, r.campaign_ref)
    return claimed


async def _find_subscribers(session: AsyncSession, loose: list[Pending]) -> None:
    """Rows without a subscriber: their claimed subscriber id, checked; else the subscriber by address."""
    claimed_subscribers = await _existing(
        session, Subscriber, {r.subscriber_ref for r in loose if r.subscriber_ref}
    )
    for r in loose:
        if _claim(r, claimed_subscribers, r.subscriber_ref):
            r.subscriber_id = r.subscriber_ref
    by_email = await _subscribers_by_email(
        session, (r.email for r in loose if r.subscriber_id is None and r.email)
    )
    for r in loose:
        if (
            r.subscriber_id is None
            and r.email
            and (found := _holder(by_email.get(r.email, {}), r.workspace_id))
        ):
            r.workspace_id, r.subscriber_id = found


async def _by_subscriber(
    session: AsyncSession, rest: list[Pending], claimed_campaigns: dict[int, int]
) -> None:
    """Rows without a delivery yet: a claimed campaign and the subscriber name exactly one delivery;
    without a (valid) campaign claim, the latest delivery sent to the subscriber counts."""

    def campaign_of(r: Pending) -> int | None:
        # A claimed campaign counts in its own workspace only, which the row took when it was checked.
        ref = r.campaign_ref
        if ref is not None and claimed_campaigns.get(ref) == r.workspace_id:
            return ref
        return None

    pairs: set[tuple[int, int]] = set()
    latest_for: set[int] = set()
    for r in rest:
        if r.subscriber_id is None:
            continue
        if (campaign_id := campaign_of(r)) is not None:
            pairs.add((campaign_id, r.subscriber_id))
        else:
            latest_for.add(r.subscriber_id)
    by_pair = await _for_campaign_and_subscriber(session, pairs)
    latest = await _latest_for_subscribers(session, latest_for)
    for r in rest:
        campaign_id = campaign_of(r)
        if r.subscriber_id is not None:
            if campaign_id is not None:
                d = by_pair.get((campaign_id, r.subscriber_id))
            else:
                d = latest.get(r.subscriber_id)
            if d is not None:
                _attach(r, d)
        if r.delivery_id is None and r.campaign_id is None and campaign_id is not None:
            r.campaign_id = campaign_id
