"""The public pages carry no key: the subscribe form acts in the workspace of the lists it names, a
confirmation link in the workspace of its lists, the preference centre in the workspace of its mail. Lists of
two workspaces, or of an archived one, are refused like unknown lists. SQLite always, PostgreSQL when set."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from emailkit import globalid
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.audience import (
    MailingList,
    OptIn,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
    Visibility,
)
from emailkit.domain.audience.optin import NOT_PUBLIC, PURPOSE_CONFIRM
from emailkit.domain.audience.suppressions import email_hash
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from emailkit.web.preferences import PURPOSE_FORM
from tests.support.environment import TEST_SECRET
from tests.support.preference_centre import C, U, seed, subscriptions_by_name
from tests.support.workspaces import add_workspace, archive

BASE = "http://testserver"
SIGNER = TokenSigner(TEST_SECRET)


@pytest.fixture
async def other(db: Database) -> int:
    return await add_workspace(db, "brand-two")


@pytest.fixture
async def web(db: Database, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app without a job queue, and a sign-up limit these tests do not reach."""
    app = create_app(
        settings.model_copy(update={"subscribe_rate_limit": "1000/minute"}),
        Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE),
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield client


async def public_list(db: Database, workspace_id: int, name: str, optin: OptIn = OptIn.SINGLE) -> int:
    with workspace_scope(workspace_id):
        async with db.transaction() as s:
            row = MailingList(name=name, visibility=Visibility.PUBLIC, optin=optin)
            s.add(row)
            await s.flush()
            return row.id


async def members(db: Database, workspace_id: int) -> dict[tuple[str, int], SubscriptionStatus]:
    """(address, list id) -> status of every subscription in the workspace."""
    with workspace_scope(workspace_id):
        async with db.session() as s:
            rows = await s.execute(
                select(Subscriber.email, Subscription.list_id, Subscription.status).join(
                    Subscription, Subscription.subscriber_id == Subscriber.id
                )
            )
            return {(email, list_id): status for email, list_id, status in rows}


async def sign_up(web: httpx.AsyncClient, email: str, *list_ids: int) -> httpx.Response:
    return await web.post(
        "/subscribe", json={"email": email, "lists": [globalid.encode("MailingList", i) for i in list_ids]}
    )


async def test_the_form_subscribes_in_the_workspace_of_its_lists(
    web: httpx.AsyncClient, db: Database, other: int
) -> None:
    mine = await public_list(db, other, "Two's news")
    theirs = await public_list(db, 1, "One's news")
    # The same address is suppressed in workspace 1: that says nothing about workspace 2's lists.
    async with db.transaction() as s:
        s.add(
            Suppression(
                email="fan@example.com",
                email_hash=email_hash("fan@example.com"),
                reason=SuppressionReason.COMPLAINT,
                source="api",
            )
        )
    resp = await sign_up(web, "fan@example.com", mine)
    assert (resp.status_code, resp.json()) == (200, {"ok": True})
    assert await members(db, other) == {("fan@example.com", mine): C}
    assert await members(db, 1) == {}

    # Lists of two workspaces: refused as a whole, like an unknown list; nothing changes anywhere.
    resp = await sign_up(web, "both@example.com", mine, theirs)
    assert (resp.status_code, resp.json()) == (400, {"ok": False, "error": NOT_PUBLIC})
    assert (await sign_up(web, "both@example.com", mine, 987654321)).json() == resp.json()
    assert await members(db, other) == {("fan@example.com", mine): C}
    assert await members(db, 1) == {}


async def test_an_archived_workspaces_lists_are_unknown_to_the_form(
    web: httpx.AsyncClient, db: Database, other: int
) -> None:
    mine = await public_list(db, other, "Two's news")
    await archive(db, other)
    resp = await sign_up(web, "late@example.com", mine)
    assert (resp.status_code, resp.json()) == (400, {"ok": False, "error": NOT_PUBLIC})
    assert await members(db, other) == {}


async def test_a_confirmation_link_confirms_in_the_workspace_of_its_lists(
    web: httpx.AsyncClient, db: Database, other: int
) -> None:
    double = await public_list(db, other, "Two's digest", OptIn.DOUBLE)
    theirs = await public_list(db, 1, "One's digest", OptIn.DOUBLE)
    assert (await sign_up(web, "dee@example.com", double)).status_code == 200
    assert (await sign_up(web, "dee@example.com", theirs)).status_code == 200
    assert await members(db, other) == {("dee@example.com", double): U}
    with workspace_scope(other):
        async with db.session() as s:
            person = (await s.execute(select(Subscriber.id))).scalar_one()

    link = f"/confirm/{SIGNER.sign(PURPOSE_CONFIRM, person, str(double))}"
    page = await web.get(link)
    assert page.status_code == 200 and "Two&#39;s digest" in page.text
    assert (await web.post(link)).status_code == 200
    assert await members(db, other) == {("dee@example.com", double): C}
    # Workspace 1's subscription of the same address still waits for its own link.
    assert list((await members(db, 1)).values()) == [U]

    # A link naming lists of two workspaces (never signed by emailkit, but signed) is no link.
    mixed = f"/confirm/{SIGNER.sign(PURPOSE_CONFIRM, person, f'{theirs},{double}')}"
    assert (await web.get(mixed)).status_code == 404
    await archive(db, other)
    assert (await web.get(link)).status_code == 404
    assert (await web.post(link)).status_code == 404


async def test_the_preference_centre_acts_in_the_workspace_of_its_mail(
    web: httpx.AsyncClient, db: Database, other: int
) -> None:
    """Jane is a reader of workspace 1 and of workspace 2 (same address, same list names)."""
    _, jane_one, lists_one = await seed(db)
    with workspace_scope(other):
        delivery, jane_two, lists_two = await seed(db)
    before = await subscriptions_by_name(db, jane_one, lists_one)
    url = TrackingUrls(BASE, SIGNER).unsubscribe(delivery)[len(BASE) :]
    nonce = SIGNER.sign(PURPOSE_FORM, delivery)

    page = await web.get(url)
    assert page.status_code == 200
    assert f'value="{lists_two["Podcasts"]}"' in page.text
    assert f'value="{lists_one["Podcasts"]}"' not in page.text

    # Workspace 1's public list through workspace 2's mail: no such list to choose.
    for action in ("join", "leave"):
        resp = await web.post(url, data={"action": action, "nonce": nonce, "list": str(lists_one["Offers"])})
        assert resp.status_code == 400 and "no such list" in resp.text
    joined = await web.post(url, data={"action": "join", "nonce": nonce, "list": str(lists_two["Podcasts"])})
    assert joined.status_code == 200
    with workspace_scope(other):
        assert (await subscriptions_by_name(db, jane_two, lists_two))["Podcasts"] == C
    assert await subscriptions_by_name(db, jane_one, lists_one) == before

    exported = await web.post(url, data={"action": "export", "nonce": nonce})
    assert exported.status_code == 200
    assert exported.json()["profile"]["id"] == globalid.encode("Subscriber", jane_two)

    await archive(db, other)
    assert (await web.get(url)).status_code == 404
    resp = await web.post(url, data={"action": "join", "nonce": nonce, "list": str(lists_two["Offers"])})
    assert resp.status_code == 404
