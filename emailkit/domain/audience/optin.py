"""Double opt-in: the confirmation mail, its signed link, and confirming.

A subscription to a DOUBLE list starts UNCONFIRMED and a confirmation mail is queued in the same transaction.
Its link carries a token signing the subscriber and the lists, so following it needs no login and cannot be
forged for someone else; it starts with the workspace's public URL (the instance's when it has none).
Confirming is a POST from the page the link opens: mail scanners fetch links with GET and would otherwise
confirm on the recipient's behalf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, current_workspace_id
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    SubscriberStatus,
    Subscription,
    SubscriptionStatus,
    Visibility,
)
from emailkit.db.tables.sending import Delivery, DeliveryStatus
from emailkit.db.tables.tenancy import Workspace, WorkspaceStatus
from emailkit.db.types import utcnow
from emailkit.domain.audience import subscribers
from emailkit.domain.audience.suppressions import is_suppressed
from emailkit.domain.automation import entry as flow_entry
from emailkit.domain.errors import DomainError
from emailkit.domain.public_site import SiteCache
from emailkit.domain.tokens import TokenSigner
from emailkit.domain.validation import normalize_email, text_problem

PURPOSE_CONFIRM = "confirm"
BUILTIN_OPTIN = "optin"

DEFAULT_SUBJECT = "Please confirm your subscription"
# Ships as the default; a list's optinTemplateId (a TRANSACTIONAL template) replaces it. Same variables there.
DEFAULT_HTML = """<!doctype html>
<html><body style="font-family:Arial,Helvetica,sans-serif;color:#222;max-width:560px;margin:auto;padding:24px">
<p>Hello{% if subscriber.name %} {{ subscriber.name }}{% endif %},</p>
<p>Please confirm that you want to receive email from {{ lists | join(", ") }}.</p>
<p><a href="{{ confirm_url }}"
 style="display:inline-block;padding:10px 18px;background:#1a73e8;color:#fff;text-decoration:none;border-radius:4px">
Confirm my subscription</a></p>
<p style="color:#666;font-size:13px">If you did not ask for this, ignore this message: you will not be subscribed.</p>
</body></html>"""


@dataclass(frozen=True)
class OptinSender:
    """What a confirmation mail needs from configuration."""

    # The instance's public URL: the base of the links when `sites` does not name the workspace's.
    public_url: str
    signer: TokenSigner
    from_email: str
    from_name: str = ""
    # Each workspace's public URL, read at most once a minute per process; None: always `public_url`.
    sites: SiteCache | None = None

    def at(self, base_url: str) -> OptinSender:
        """This sender with links under `base_url` (a caller that has just read the workspace's row)."""
        return replace(self, public_url=base_url, sites=None)

    async def base_url(self, session: AsyncSession) -> str:
        """The base of the links of the workspace in scope."""
        if self.sites is None:
            return self.public_url.rstrip("/")
        return await self.sites.base_url(session, current_workspace_id())


def confirm_url(signer: TokenSigner, base_url: str, subscriber_id: int, list_ids: Sequence[int]) -> str:
    token = signer.sign(PURPOSE_CONFIRM, subscriber_id, ",".join(str(i) for i in sorted(list_ids)))
    return f"{base_url.rstrip('/')}/confirm/{token}"


def parse_confirm_token(signer: TokenSigner, token: str) -> tuple[int, list[int]] | None:
    parts = signer.verify(PURPOSE_CONFIRM, token)
    if parts is None or len(parts) != 2 or not parts[0].isdigit():
        return None
    try:
        list_ids = [int(x) for x in parts[1].split(",") if x]
    except ValueError:
        return None
    return int(parts[0]), list_ids


async def queue_confirmations(
    session: AsyncSession, sender: OptinSender, subscriber_ids: Sequence[int], list_ids: Sequence[int]
) -> list[int]:
    """Queue one confirmation mail per subscriber with UNCONFIRMED subscriptions on DOUBLE lists among
    `list_ids`; returns the transactional delivery ids to enqueue after commit."""
    if not subscriber_ids or not list_ids:
        return []
    stmt = (
        select(
            Subscription.subscriber_id,
            MailingList.id,
            MailingList.name,
            MailingList.optin_template_id,
            MailingList.sender_id,
        )
        .join(MailingList, MailingList.id == Subscription.list_id)
        .where(
            Subscription.subscriber_id.in_(subscriber_ids),
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.UNCONFIRMED,
            MailingList.optin == OptIn.DOUBLE,
        )
        .order_by(Subscription.subscriber_id, MailingList.id)
    )
    pending: dict[int, list[tuple[int, str, int | None, int | None]]] = {}
    for sid, lid, name, template_id, sender_id in await session.execute(stmt):
        pending.setdefault(sid, []).append((lid, name, template_id, sender_id))
    if not pending:
        return []
    people = {
        s.id: s
        for s in (await session.execute(select(Subscriber).where(Subscriber.id.in_(list(pending))))).scalars()
    }
    base_url = await sender.base_url(session)
    rows = []
    for sid, lists in pending.items():
        person = people.get(sid)
        if person is None or person.status is SubscriberStatus.BLOCKLISTED:
            continue
        template_id = next((t for _, _, t, _ in lists if t is not None), None)
        # The lists' sender, as for their campaigns: of those that have one, the lowest list id's.
        via = next((v for _, _, _, v in lists if v is not None), None)
        data = {
            "vars": {
                "confirm_url": confirm_url(sender.signer, base_url, sid, [lid for lid, _, _, _ in lists]),
                "lists": [name for _, name, _, _ in lists],
            },
            "from_email": sender.from_email,
            "from_name": sender.from_name,
        }
        if template_id is None:
            data["builtin"] = BUILTIN_OPTIN
        rows.append(
            Delivery(
                campaign_id=None,
                subscriber_id=sid,
                email=person.email,
                template_id=template_id,
                data=data,
                status=DeliveryStatus.QUEUED,
                sender_id=via,
            )
        )
    session.add_all(rows)
    await session.flush()
    return [r.id for r in rows]


async def confirm(session: AsyncSession, subscriber_id: int, list_ids: Sequence[int]) -> int:
    """UNCONFIRMED → CONFIRMED for those lists; idempotent; an unsubscribe made since is respected. The
    flows of those lists start for the person now."""
    now = utcnow()
    result = await session.execute(
        update(Subscription)
        .where(
            Subscription.subscriber_id == subscriber_id,
            Subscription.list_id.in_(list_ids),
            Subscription.status == SubscriptionStatus.UNCONFIRMED,
        )
        .values(status=SubscriptionStatus.CONFIRMED, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    confirmed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if confirmed:
        await flow_entry.subscribed(
            session,
            workspace_id=current_workspace_id(),
            list_ids=list_ids,
            changed_at=now,
            subscriber_ids=[subscriber_id],
        )
    return confirmed


def sender_of(
    public_url: str,
    secret_key: str,
    default_from: tuple[str | None, str],
    sites: SiteCache | None = None,
) -> OptinSender:
    """The confirmation sender; without EMAILKIT_FROM_EMAIL, noreply@ the instance's public host (fine for the
    outbox)."""
    address, name = default_from
    if not address:
        host = urlsplit(public_url).hostname or "localhost"
        address = f"noreply@{host}"
    return OptinSender(
        public_url=public_url,
        signer=TokenSigner(secret_key),
        from_email=address,
        from_name=name,
        sites=sites,
    )


NOT_PUBLIC = "Unknown or non-public list: only lists whose visibility is PUBLIC accept sign-ups"
MAX_SIGNUP_LISTS = 20


async def workspace_of_lists(
    db: Database, list_ids: Sequence[int], *, all_public: bool = False
) -> Workspace | None:
    """The workspace of the lists a public request names (the form, a confirmation link), which carries no key
    (its row: the page shows its branding): None when they belong to no workspace (unknown ids), to several, or
    to an archived one, each of which the caller answers like an unknown list. With `all_public`, also None
    unless every one of them is PUBLIC (what the form accepts)."""
    wanted = sorted(set(list_ids))
    query = (
        select(MailingList.id, Workspace)
        .join(Workspace, Workspace.id == MailingList.workspace_id)
        .where(MailingList.id.in_(wanted))
    )
    if all_public:
        query = query.where(MailingList.visibility == Visibility.PUBLIC)
    with all_workspaces():
        async with db.read_session() as session:
            found = (await session.execute(query)).all()
    owners = {workspace.id: workspace for _, workspace in found}
    if len(owners) != 1 or (all_public and len(found) != len(wanted)):
        return None
    (workspace,) = owners.values()
    return workspace if workspace.status is WorkspaceStatus.ACTIVE else None


class SubscribeRefused(Exception):
    """The form's input is unusable (bad address, unknown or private list); safe to tell the visitor."""


@dataclass(frozen=True)
class Signup:
    """What the website form asks for, checked."""

    address: str
    name: str
    list_ids: list[int]


def signup_of(*, email: str, name: str, list_ids: Sequence[int]) -> Signup:
    """The form's input checked before anything is looked up (which workspace, which lists)."""
    try:
        address = normalize_email(email)
    except DomainError as exc:
        raise SubscribeRefused(exc.errors[0].message) from None
    if (problem := text_problem(name)) is not None:
        raise SubscribeRefused(f"Name: {problem}")
    wanted = sorted(set(list_ids))
    if not wanted or len(wanted) > MAX_SIGNUP_LISTS:
        raise SubscribeRefused(f"Choose between 1 and {MAX_SIGNUP_LISTS} lists")
    return Signup(address=address, name=name, list_ids=wanted)


async def public_subscribe(session: AsyncSession, sender: OptinSender, signup: Signup) -> list[int]:
    """The website form: subscribe to PUBLIC lists of the workspace in scope (see `workspace_of_lists`);
    returns confirmation deliveries to enqueue after commit.

    The outcome must not reveal whether the address was already known, suppressed or blocklisted, so those
    cases quietly do nothing and the caller answers the same as for a new subscriber.
    """
    address, name, wanted = signup.address, signup.name, signup.list_ids
    public = set(
        (
            await session.execute(
                # Held against deletion until commit (as subscribe_to_lists will): one being deleted is unknown.
                select(MailingList.id)
                .where(MailingList.id.in_(wanted), MailingList.visibility == Visibility.PUBLIC)
                .with_for_update(read=True, key_share=True)
            )
        ).scalars()
    )
    if public != set(wanted):
        # The same answer for a private list as for a missing one: strangers learn nothing about private lists.
        raise SubscribeRefused(NOT_PUBLIC)
    if await is_suppressed(session, address):
        return []
    person = (
        await session.execute(select(Subscriber).where(Subscriber.email == address))
    ).scalar_one_or_none()
    if person is None:
        try:
            person = await subscribers.create_subscriber(
                session, address, name=name.strip()[:255], list_ids=[]
            )
        except DomainError:
            return []  # e.g. an erased address: refused without saying so
    elif person.status is SubscriberStatus.BLOCKLISTED:
        return []
    try:
        await subscribers.subscribe_to_lists(session, [person.id], wanted)
    except DomainError as exc:
        # A list (or the subscriber) deleted since the checks above.
        raise SubscribeRefused(exc.errors[0].message) from None
    return await queue_confirmations(session, sender, [person.id], wanted)
