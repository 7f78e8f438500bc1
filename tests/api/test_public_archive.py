"""The public archive: /archive/<slug>, one page per campaign and an Atom feed. Only a workspace's own published
campaigns (archive: true, sent), rendered with placeholder data and no tracking, cached by ETag; nothing of an
archived workspace. And the campaign fields behind it over GraphQL."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
import pytest
from sqlalchemy import update

from emailkit import globalid
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces, workspace_scope
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.domain import workspaces
from emailkit.domain.runtime import Runtime
from emailkit.settings import Settings
from tests.support.archive import (
    LINK,
    MJML_BODY,
    READER_EMAIL,
    READER_NAME,
    add_campaigns,
    add_reader,
    campaign_row,
)
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_workspace
from tests.support.graphql import GQL

BASE = "http://testserver"
ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture
async def web(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url=BASE)  # type: ignore[call-arg]
    app = create_app(settings, Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield client


def gid(campaign_id: int) -> str:
    return globalid.encode("Campaign", campaign_id)


def listed(page: str) -> list[str]:
    """The subjects on a list page, in order."""
    return [html.unescape(s) for s in re.findall(r'<span class="subject">([^<]*)</span>', page)]


def framed(page: str) -> str:
    found = re.search(r'srcdoc="([^"]*)"', page)
    assert found is not None, page
    return html.unescape(found.group(1))


async def set_campaign(db: Database, campaign_id: int, **values: object) -> None:
    async with db.transaction() as s:
        row = await s.get(Campaign, campaign_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


async def test_lists_only_the_workspaces_published_campaigns_newest_first(
    web: httpx.AsyncClient, db: Database
) -> None:
    await add_campaigns(
        db,
        campaign_row("First", days=0),
        campaign_row("Third", days=2),
        campaign_row("Second", days=1),
        campaign_row("Running with sends", days=3, status=CampaignStatus.RUNNING),
        campaign_row("Running, nothing sent yet", days=4, status=CampaignStatus.RUNNING, sent_count=0),
        campaign_row("Draft", days=5, status=CampaignStatus.DRAFT, started_at=None, sent_count=0),
        campaign_row("Cancelled", days=6, status=CampaignStatus.CANCELLED),
        campaign_row("Not published", days=7, archive=False),
    )
    other = await make_workspace(db, "brand-b")
    await add_campaigns(db, campaign_row("Brand B's", days=8), workspace_id=other)

    response = await web.get("/archive/default")
    assert response.status_code == 200
    assert listed(response.text) == [
        "Running with sends for Subscriber",
        "Third for Subscriber",
        "Second for Subscriber",
        "First for Subscriber",
    ]
    assert "3 March 2025" in response.text
    other_page = await web.get("/archive/brand-b")
    assert listed(other_page.text) == ["Brand B's for Subscriber"]


async def test_a_campaign_page_shows_placeholder_data_and_no_tracking(
    web: httpx.AsyncClient, db: Database
) -> None:
    (campaign_id,) = await add_campaigns(db, campaign_row("Autumn letter"))
    reader = await add_reader(db, campaign_id)
    response = await web.get(f"/archive/default/{gid(campaign_id)}")
    assert response.status_code == 200
    page = response.text
    message = framed(page)
    assert "<h1>Autumn letter for Subscriber</h1>" in page
    assert "Hello Subscriber (subscriber@example.com), your plan is ." in message
    # Links as written; unsubscribe and "open in a browser" lead to this public copy; no pixel, no token.
    own_url = f"{BASE}/archive/default/{gid(campaign_id)}"
    assert f'href="{LINK}"' in message and f'href="{own_url}"' in message
    for tracked in ("/t/o/", "/t/c/", "/u/", "/v/"):
        assert tracked not in page
    assert READER_NAME not in page and READER_EMAIL not in page and "gold" not in page
    assert response.headers["cache-control"] == "public, max-age=300"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert reader.delivery_id  # the reader exists, with her delivery: the page just never shows her


async def test_archive_data_is_what_personalises_the_copy(
    web: httpx.AsyncClient, db: Database, gql: GQL
) -> None:
    (campaign_id,) = await add_campaigns(db, campaign_row("Autumn letter"))
    await add_reader(db, campaign_id)
    result = await gql(
        """mutation($input: UpdateCampaignInput!) { updateCampaign(input: $input) {
             campaign { archive archiveData } userErrors { field code message } } }""",
        {
            "input": {
                "id": gid(campaign_id),
                "archiveData": {"name": "Reader", "attributes": {"plan": "basic"}},
            }
        },
    )
    payload = result["data"]["updateCampaign"]
    assert payload["userErrors"] == []
    assert payload["campaign"]["archiveData"] == {
        "name": "Reader",
        "email": "subscriber@example.com",
        "attributes": {"plan": "basic"},
    }
    page = (await web.get(f"/archive/default/{gid(campaign_id)}")).text
    assert "Hello Reader (subscriber@example.com), your plan is basic." in framed(page)
    assert listed((await web.get("/archive/default")).text) == ["Autumn letter for Reader"]


async def test_not_found_unless_published_here(web: httpx.AsyncClient, db: Database) -> None:
    published, draft, private = await add_campaigns(
        db,
        campaign_row("Published"),
        campaign_row("Draft", status=CampaignStatus.DRAFT, sent_count=0),
        campaign_row("Private", archive=False),
    )
    other = await make_workspace(db, "brand-b")
    (theirs,) = await add_campaigns(db, campaign_row("Theirs"), workspace_id=other)
    assert (await web.get(f"/archive/default/{gid(published)}")).status_code == 200
    for path in (
        f"/archive/default/{gid(draft)}",
        f"/archive/default/{gid(private)}",
        # Another workspace's published campaign under this workspace's slug: as missing as any.
        f"/archive/default/{gid(theirs)}",
        f"/archive/default/{globalid.encode('Template', published)}",
        "/archive/default/not-an-id",
        "/archive/nobody",
        "/archive/nobody/feed.atom",
        "/archive/default?page=0",
        "/archive/default?page=2",
        "/archive/default?page=x",
    ):
        response = await web.get(path)
        assert response.status_code == 404, path
        assert "Theirs" not in response.text and "Draft" not in response.text
    assert (await web.get(f"/archive/brand-b/{gid(theirs)}")).status_code == 200


async def test_pages_of_twenty(web: httpx.AsyncClient, db: Database) -> None:
    await add_campaigns(db, *(campaign_row(f"Issue {i:02}", days=i) for i in range(25)))
    first = await web.get("/archive/default")
    assert listed(first.text) == [f"Issue {i:02} for Subscriber" for i in range(24, 4, -1)]
    assert 'href="?page=2"' in first.text and "Newer emails" not in first.text
    second = await web.get("/archive/default?page=2")
    assert listed(second.text) == [f"Issue {i:02} for Subscriber" for i in range(4, -1, -1)]
    assert 'href="default" rel="prev"' in second.text and "Older emails" not in second.text
    assert (await web.get("/archive/default?page=3")).status_code == 404


async def test_etags_follow_the_content(web: httpx.AsyncClient, db: Database) -> None:
    (campaign_id,) = await add_campaigns(db, campaign_row("Autumn letter"))
    for path in (f"/archive/default/{gid(campaign_id)}", "/archive/default", "/archive/default/feed.atom"):
        first = await web.get(path)
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{32}"', etag), etag
        assert first.headers["cache-control"] == "public, max-age=300"
        # The same version: 304, no body, the same validators.
        again = await web.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304, path
        assert again.content == b""
        assert again.headers["etag"] == etag and again.headers["cache-control"] == "public, max-age=300"
        for matching in (f"W/{etag}", f'"other", {etag}', "*"):
            assert (await web.get(path, headers={"If-None-Match": matching})).status_code == 304
        assert (await web.get(path, headers={"If-None-Match": '"stale"'})).status_code == 200

    async def etags() -> list[str]:
        return [
            (await web.get(p)).headers["etag"]
            for p in (
                f"/archive/default/{gid(campaign_id)}",
                "/archive/default",
                "/archive/default/feed.atom",
            )
        ]

    before = await etags()
    assert await etags() == before
    # The campaign changes (its archive data): every page that shows it has a new version.
    await set_campaign(db, campaign_id, archive_data={"name": "Reader"})
    after_campaign = await etags()
    assert all(a != b for a, b in zip(before, after_campaign, strict=True))
    changed = await web.get(f"/archive/default/{gid(campaign_id)}", headers={"If-None-Match": before[0]})
    assert changed.status_code == 200 and "Reader" in changed.text
    # So does the workspace's branding.
    with all_workspaces():
        async with db.transaction() as s:
            await workspaces.update_workspace(
                s, 1, workspaces.WorkspaceInput(branding={"name": "The Default Times", "footer": "PO Box 1"})
            )
    after_branding = await etags()
    assert all(a != b for a, b in zip(after_campaign, after_branding, strict=True))
    page = (await web.get("/archive/default")).text
    assert "The Default Times" in page and "PO Box 1" in page


async def test_a_template_edit_is_a_new_version(web: httpx.AsyncClient, db: Database) -> None:
    async with db.transaction() as s:
        template = Template(
            name="Letter", kind=TemplateKind.CAMPAIGN, format=ContentFormat.MJML, body=MJML_BODY, subject=""
        )
        s.add(template)
        await s.flush()
        template_id = template.id
    (campaign_id,) = await add_campaigns(
        db, campaign_row("Templated", body=None, format=None, template_id=template_id)
    )
    path = f"/archive/default/{gid(campaign_id)}"
    first = await web.get(path)
    assert "this is the autumn letter" in framed(first.text)
    async with db.transaction() as s:
        row = await s.get(Template, template_id)
        assert row is not None
        row.body = MJML_BODY.replace("autumn letter", "winter letter")
    second = await web.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert "this is the winter letter" in framed(second.text)


async def test_the_feed_is_valid_atom(web: httpx.AsyncClient, db: Database) -> None:
    with all_workspaces():
        async with db.transaction() as s:
            await workspaces.update_workspace(
                s,
                1,
                workspaces.WorkspaceInput(
                    public_url="https://news.example.com",
                    branding={"name": "Default News"},
                    given=frozenset({"public_url"}),
                ),
            )
    first, second = await add_campaigns(db, campaign_row("First", days=0), campaign_row("Second", days=1))
    await add_campaigns(db, campaign_row("Not published", days=2, archive=False))
    reader = await add_reader(db, first)
    response = await web.get("/archive/default/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    body = response.text
    assert READER_NAME not in body and READER_EMAIL not in body and "/t/" not in body and "/u/" not in body
    assert reader.delivery_id

    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated", "author"):
        assert feed.find(f"{ATOM}{required}") is not None, required
    assert feed.findtext(f"{ATOM}title") == "Default News: email archive"
    assert feed.findtext(f"{ATOM}author/{ATOM}name") == "Default News"
    links = {link.get("rel"): link.get("href") for link in feed.findall(f"{ATOM}link")}
    assert links == {
        "self": "https://news.example.com/archive/default/feed.atom",
        "alternate": "https://news.example.com/archive/default",
    }
    entries = feed.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}title") for e in entries] == ["Second for Subscriber", "First for Subscriber"]
    ids = set()
    for entry in entries:
        ids.add(entry.findtext(f"{ATOM}id"))
        for required in ("id", "title", "updated"):
            assert entry.findtext(f"{ATOM}{required}"), required
        datetime.fromisoformat(entry.findtext(f"{ATOM}updated") or "")
        link = entry.find(f"{ATOM}link")
        assert link is not None and link.get("rel") == "alternate"
        assert (link.get("href") or "").startswith("https://news.example.com/archive/default/")
        content = entry.find(f"{ATOM}content")
        assert content is not None and content.get("type") == "html"
        assert "Hello Subscriber (subscriber@example.com)" in (content.text or "")
        assert "<body" not in (content.text or "")
    assert len(ids) == 2 and all(i and i.startswith("tag:news.example.com,") for i in ids)
    datetime.fromisoformat(feed.findtext(f"{ATOM}updated") or "")
    assert second


async def test_an_empty_archive_and_its_feed(web: httpx.AsyncClient) -> None:
    page = await web.get("/archive/default")
    assert page.status_code == 200 and "Nothing published yet" in page.text
    feed = ET.fromstring((await web.get("/archive/default/feed.atom")).content)
    assert feed.findall(f"{ATOM}entry") == [] and feed.findtext(f"{ATOM}updated")


async def test_an_archived_workspace_has_no_public_pages(web: httpx.AsyncClient, db: Database) -> None:
    other = await make_workspace(db, "brand-b")
    (campaign_id,) = await add_campaigns(db, campaign_row("Theirs"), workspace_id=other)
    paths = ("/archive/brand-b", f"/archive/brand-b/{gid(campaign_id)}", "/archive/brand-b/feed.atom")
    for path in paths:
        assert (await web.get(path)).status_code == 200, path
    with all_workspaces():
        async with db.transaction() as s:
            await workspaces.archive_workspace(s, other)
    for path in paths:
        response = await web.get(path)
        assert response.status_code == 404, path
        assert "Theirs" not in response.text and "Brand-B" not in response.text


async def test_a_campaign_that_no_longer_renders_is_shown_as_such(
    web: httpx.AsyncClient, db: Database
) -> None:
    (campaign_id,) = await add_campaigns(
        db, campaign_row("Broken", body="<p>{{ subscriber.attributes.points + 1 }}</p>")
    )
    response = await web.get(f"/archive/default/{gid(campaign_id)}")
    assert response.status_code == 200 and "This message cannot be shown." in response.text
    feed = ET.fromstring((await web.get("/archive/default/feed.atom")).content)
    (entry,) = feed.findall(f"{ATOM}entry")
    assert entry.findtext(f"{ATOM}summary") == "This message cannot be shown."


# -- the campaign fields over GraphQL ------------------------------------------------------------------------

CREATE = """mutation($input: CreateCampaignInput!) { createCampaign(input: $input) {
  campaign { id webViewLink archive archiveData } userErrors { field code message } } }"""
UPDATE = """mutation($input: UpdateCampaignInput!) { updateCampaign(input: $input) {
  campaign { id name webViewLink archive archiveData } userErrors { field code message } } }"""


async def test_fields_default_to_off_and_are_set_on_create(gql: GQL) -> None:
    base = {
        "name": "N",
        "subject": "S",
        "fromEmail": "news@example.com",
        "body": "<p>Hi</p>",
        "format": "HTML",
    }
    plain = (await gql(CREATE, {"input": base}))["data"]["createCampaign"]["campaign"]
    assert plain["webViewLink"] is False and plain["archive"] is False
    assert plain["archiveData"] == {"name": "Subscriber", "email": "subscriber@example.com", "attributes": {}}
    created = (
        await gql(
            CREATE,
            {"input": {**base, "webViewLink": True, "archive": True, "archiveData": {"name": "Friend"}}},
        )
    )["data"]["createCampaign"]["campaign"]
    assert created["webViewLink"] is True and created["archive"] is True
    assert created["archiveData"]["name"] == "Friend"


async def test_archive_data_is_checked(gql: GQL) -> None:
    base = {
        "name": "N",
        "subject": "S",
        "fromEmail": "news@example.com",
        "body": "<p>Hi</p>",
        "format": "HTML",
    }
    for bad, says in (
        ("Jane", "is an object"),
        ({"name": 3}, "archiveData.name is text"),
        ({"attributes": [1]}, "archiveData.attributes is an object"),
        ({"phone": "1"}, "Unknown archiveData keys phone"),
        ({"attributes": {"x": "y" * 20_000}}, "at most 16 KiB"),
    ):
        payload = (await gql(CREATE, {"input": {**base, "archiveData": bad}}))["data"]["createCampaign"]
        assert payload["campaign"] is None
        (error,) = payload["userErrors"]
        assert (
            error["field"] == "archiveData" and error["code"] == "INVALID_INPUT" and says in error["message"]
        )


async def test_a_sent_campaign_can_be_published_but_not_edited(gql: GQL, db: Database) -> None:
    (campaign_id,) = await add_campaigns(db, campaign_row("Sent", archive=False))
    published = (await gql(UPDATE, {"input": {"id": gid(campaign_id), "archive": True}}))["data"][
        "updateCampaign"
    ]
    assert published["userErrors"] == [] and published["campaign"]["archive"] is True
    reset = (await gql(UPDATE, {"input": {"id": gid(campaign_id), "archiveData": {"name": "X"}}}))["data"][
        "updateCampaign"
    ]
    assert reset["campaign"]["archiveData"]["name"] == "X"
    cleared = (await gql(UPDATE, {"input": {"id": gid(campaign_id), "archiveData": {}}}))["data"][
        "updateCampaign"
    ]
    assert cleared["campaign"]["archiveData"]["name"] == "Subscriber"
    for edit in ({"archive": False, "name": "Renamed"}, {"webViewLink": True}):
        refused = (await gql(UPDATE, {"input": {"id": gid(campaign_id), **edit}}))["data"]["updateCampaign"]
        assert refused["campaign"] is None
        assert refused["userErrors"][0]["code"] == "INVALID_STATE"
    with workspace_scope(1):
        async with db.session() as s:
            row = await s.get(Campaign, campaign_id)
            assert row is not None and row.archive is True and row.name == "Sent" and not row.web_view_link


async def test_workspace_isolation_of_the_fields(gql: GQL, db: Database) -> None:
    """Publishing another workspace's campaign by its id is refused like a missing one."""
    other = await make_workspace(db, "brand-b")
    (theirs,) = await add_campaigns(db, campaign_row("Theirs", archive=False), workspace_id=other)
    payload = (await gql(UPDATE, {"input": {"id": gid(theirs), "archive": True}}))["data"]["updateCampaign"]
    assert payload["campaign"] is None and payload["userErrors"][0]["code"] == "CAMPAIGN_NOT_FOUND"
    with workspace_scope(other):
        async with db.session() as s:
            row = await s.get(Campaign, theirs)
            assert row is not None and row.archive is False
    async with db.transaction() as s:
        # A raw update in workspace 1's scope reaches no row of workspace 2.
        result = await s.execute(update(Campaign).where(Campaign.id == theirs).values(archive=True))
        assert result.rowcount == 0  # type: ignore[attr-defined]
