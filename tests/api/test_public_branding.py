"""A workspace's publicUrl and branding on the pages a recipient reaches from its mail or its signup form (the
preference centre, one-click unsubscribe, the subscribe answer, the double opt-in page) and in its confirmation
links; a workspace without them keeps the instance's defaults. SQLite always, PostgreSQL when set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from emailkit import globalid
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import MailingList, OptIn, Visibility
from emailkit.db.tables.sending import Delivery
from emailkit.db.tables.tenancy import Workspace
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.public_site import SiteCache
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from emailkit.web.preferences import CSP, PURPOSE_FORM
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key, make_workspace, make_workspace_key
from tests.support.preference_centre import seed

BASE = "http://testserver"
SIGNER = TokenSigner(TEST_SECRET)
PUBLIC_URL = "https://news.brand-b.example"
BRANDING = {
    "name": "Brand B News",
    "logoUrl": "https://cdn.brand-b.example/logo.png",
    "accentColor": "#7B1FA2",
    "footer": "Brand B Ltd, 1 Example Street",
}
CREATE_SUBSCRIBER = (
    "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { field code } } }"
)
UPDATE_WORKSPACE = (
    "mutation($i: UpdateWorkspaceInput!) { updateWorkspace(input: $i) { userErrors { field code } } }"
)


@dataclass
class Web:
    client: httpx.AsyncClient
    runtime: Runtime

    async def graphql(self, key: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        resp = await self.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {key}"},
        )
        body: dict[str, Any] = resp.json()
        assert resp.status_code == 200 and "errors" not in body, body
        return body["data"]


@pytest.fixture
async def web(db: Database, settings: Settings) -> AsyncIterator[Web]:
    """The app without a job queue, and a sign-up limit these tests do not reach."""
    runtime = Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE)
    app = create_app(settings.model_copy(update={"subscribe_rate_limit": "1000/minute"}), runtime)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield Web(client, runtime)


@pytest.fixture
async def brand(db: Database) -> int:
    """Workspace "brand-b", with its own public URL and branding."""
    return await make_workspace(db, "brand-b", public_url=PUBLIC_URL, branding=BRANDING)


def assert_branded(page: str) -> None:
    assert "<title>" in page and " · Brand B News</title>" in page
    assert '<span class="name">Brand B News</span>' in page
    assert '<img src="https://cdn.brand-b.example/logo.png" alt="">' in page
    assert "Brand B Ltd, 1 Example Street</div></footer>" in page
    assert "border-top: 4px solid #7b1fa2" in page
    # A dark enough accent colours the links and the buttons too.
    assert "a { color: #7b1fa2; }" in page and "background: #7b1fa2;" in page


def assert_plain(page: str) -> None:
    """The frame of a page of no workspace: no name, no logo, no footer."""
    assert "Brand B" not in page and "Default" not in page
    assert "<img" not in page and '<header class="site">' not in page and '<footer class="site">' not in page


def path(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE) :]


async def public_list(db: Database, workspace_id: int, name: str, visibility: Visibility) -> int:
    with workspace_scope(workspace_id):
        async with db.transaction() as s:
            row = MailingList(name=name, visibility=visibility, optin=OptIn.DOUBLE)
            s.add(row)
            await s.flush()
            return row.id


async def confirm_urls(db: Database, workspace_id: int) -> list[str]:
    """The confirm_url of every confirmation mail queued in the workspace, oldest first."""
    with workspace_scope(workspace_id):
        async with db.session() as s:
            rows = await s.execute(
                select(Delivery.data).where(Delivery.campaign_id.is_(None)).order_by(Delivery.id)
            )
            return [str(data["vars"]["confirm_url"]) for data in rows.scalars()]


async def test_the_preference_centre_and_unsubscribe_show_the_workspaces_branding(
    web: Web, db: Database, brand: int
) -> None:
    with workspace_scope(brand):
        delivery, _, _ = await seed(db)
    url = path(TrackingUrls(BASE, SIGNER).unsubscribe(delivery))

    page = await web.client.get(url)
    assert page.status_code == 200 and "Your email preferences" in page.text
    assert_branded(page.text)
    # The logo is the one thing loaded from elsewhere, from its own origin only; the rest of the policy stays.
    assert page.headers["content-security-policy"] == f"{CSP}; img-src https://cdn.brand-b.example"
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"

    one_click = await web.client.post(url, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "You are unsubscribed" in one_click.text
    assert_branded(one_click.text)
    refused = await web.client.post(url, data={"action": "erase", "nonce": "forged"})
    assert refused.status_code == 400 and "Nothing was changed" in refused.text
    assert_branded(refused.text)
    ask = await web.client.post(url, data={"action": "erase", "nonce": SIGNER.sign(PURPOSE_FORM, delivery)})
    assert ask.status_code == 200 and "Erase your data?" in ask.text
    assert_branded(ask.text)

    # A link that names no delivery names no workspace either.
    invalid = await web.client.get(url[:-4] + ("AAAA" if not url.endswith("AAAA") else "BBBB"))
    assert invalid.status_code == 404 and "This link is not valid" in invalid.text
    assert_plain(invalid.text)
    assert invalid.headers["content-security-policy"] == CSP


async def test_a_workspace_without_branding_keeps_the_instance_defaults(web: Web, db: Database) -> None:
    delivery, _, _ = await seed(db)
    page = await web.client.get(path(TrackingUrls(BASE, SIGNER).unsubscribe(delivery)))
    assert page.status_code == 200
    assert '<span class="name">Default</span>' in page.text and "border-top: 4px solid #1a73e8" in page.text
    assert "<img" not in page.text and '<footer class="site">' not in page.text
    assert page.headers["content-security-policy"] == CSP

    listed = await public_list(db, 1, "Default digest", Visibility.PUBLIC)
    signed_up = await web.client.post("/subscribe", data={"email": "d@example.com", "lists": str(listed)})
    assert signed_up.status_code == 200 and '<span class="name">Default</span>' in signed_up.text
    [link] = await confirm_urls(db, 1)
    assert link.startswith(f"{BASE}/confirm/")
    confirm = await web.client.get(path(link))
    assert confirm.status_code == 200 and '<span class="name">Default</span>' in confirm.text


async def test_signup_and_confirmation_show_the_branding_and_link_under_the_public_url(
    web: Web, db: Database, brand: int
) -> None:
    listed = await public_list(db, brand, "Brand digest", Visibility.PUBLIC)
    secret = await public_list(db, brand, "Brand staff", Visibility.PRIVATE)
    form = {"email": "reader@example.com", "lists": globalid.encode("MailingList", listed)}

    signed_up = await web.client.post("/subscribe", data=form)
    assert signed_up.status_code == 200 and "Almost done" in signed_up.text
    assert_branded(signed_up.text)
    # A bot that fills the honeypot gets the same page; one naming a private list learns nothing of its owner.
    assert (await web.client.post("/subscribe", data={**form, "website": "x"})).text == signed_up.text
    probe = await web.client.post("/subscribe", data={**form, "lists": str(secret), "website": "x"})
    assert probe.status_code == 200 and "Almost done" in probe.text
    assert_plain(probe.text)
    refused = await web.client.post("/subscribe", data={**form, "lists": str(secret)})
    assert refused.status_code == 400 and "Brand B" not in refused.text

    [link] = await confirm_urls(db, brand)
    assert link.startswith(f"{PUBLIC_URL}/confirm/")
    confirm_path = link[len(PUBLIC_URL) :]
    page = await web.client.get(confirm_path)
    assert page.status_code == 200 and "Confirm my subscription" in page.text and "Brand digest" in page.text
    assert_branded(page.text)
    done = await web.client.post(confirm_path)
    assert done.status_code == 200 and "is confirmed" in done.text
    assert_branded(done.text)

    invalid = await web.client.get(confirm_path[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB"))
    assert invalid.status_code == 404
    assert_plain(invalid.text)


async def test_confirmation_links_follow_update_workspace_at_once(web: Web, db: Database, brand: int) -> None:
    """Mails queued through the API take the workspace's public URL from the process's cache, which
    updateWorkspace empties for that workspace."""
    listed = await public_list(db, brand, "Brand digest", Visibility.PUBLIC)
    key = await make_workspace_key(db, brand)
    owner = await make_key(db, Role.OWNER, "instance")

    async def subscribe(address: str) -> str:
        got = await web.graphql(
            key,
            CREATE_SUBSCRIBER,
            {"i": {"email": address, "listIds": [globalid.encode("MailingList", listed)]}},
        )
        assert got["createSubscriber"]["userErrors"] == []
        return (await confirm_urls(db, brand))[-1]

    async def set_public_url(url: str | None) -> None:
        got = await web.graphql(
            owner, UPDATE_WORKSPACE, {"i": {"id": globalid.encode("Workspace", brand), "publicUrl": url}}
        )
        assert got["updateWorkspace"]["userErrors"] == []

    assert (await subscribe("one@example.com")).startswith(f"{PUBLIC_URL}/confirm/")
    await set_public_url("https://mail.brand-b.example/news")
    assert (await subscribe("two@example.com")).startswith("https://mail.brand-b.example/news/confirm/")
    await set_public_url(None)
    assert (await subscribe("three@example.com")).startswith(f"{BASE}/confirm/")


async def test_the_site_cache_reads_a_workspace_once_per_max_age(db: Database, brand: int) -> None:
    now = [0.0]
    cache = SiteCache(BASE, max_age=60, clock=lambda: now[0])

    async def base_url() -> str:
        with workspace_scope(brand):
            async with db.read_session() as s:
                return await cache.base_url(s, brand)

    assert await base_url() == PUBLIC_URL
    # Changed through another process: this one keeps its copy for up to max_age.
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(
                update(Workspace).where(Workspace.id == brand).values(public_url="https://other.example")
            )
    now[0] = 59.0
    assert await base_url() == PUBLIC_URL
    now[0] = 60.0
    assert await base_url() == "https://other.example"
    # Forgotten (updateWorkspace in this process): read again at once.
    with all_workspaces():
        async with db.transaction() as s:
            await s.execute(update(Workspace).where(Workspace.id == brand).values(public_url=None))
    cache.forget(brand)
    assert await base_url() == BASE
