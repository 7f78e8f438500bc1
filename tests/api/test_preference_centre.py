"""The preference centre at ``/u/<token>`` over HTTP: GET never changes anything, every POST action does what
it says and nothing more, and forms without their nonce are refused. SQLite always, PostgreSQL when set."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import func, select

from emailkit import globalid
from emailkit.app import create_app
from emailkit.db.engine import Database
from emailkit.db.tables.audience import Subscriber, SubscriberStatus, SubscriptionStatus
from emailkit.db.tables.feedback import Event, EventType
from emailkit.db.tables.sending import Delivery
from emailkit.domain.audience.gdpr import ERASED_EMAIL
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.runtime import Runtime
from emailkit.domain.tokens import TokenSigner
from emailkit.settings import Settings
from emailkit.web.preferences import MAX_FORM_BYTES, PURPOSE_FORM
from tests.support.environment import TEST_SECRET
from tests.support.preference_centre import C, U, X, seed, subscriptions_by_name

BASE = "http://testserver"
ONE_CLICK = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Reader:
    """Jane, who got the "news" campaign; the lists by name; her link and the page's nonce."""

    db: Database
    client: httpx.AsyncClient
    delivery_id: int
    subscriber_id: int
    lists: dict[str, int]
    url: str
    nonce: str

    async def subscriptions(self) -> dict[str, SubscriptionStatus]:
        return await subscriptions_by_name(self.db, self.subscriber_id, self.lists)

    async def state(self) -> tuple[object, ...]:
        """Everything a request could change: subscriptions, the subscriber, deliveries and events."""
        async with self.db.session() as s:
            subscriber = await s.get(Subscriber, self.subscriber_id)
            deliveries = (await s.execute(select(Delivery.id, Delivery.email, Delivery.subscriber_id))).all()
            events = (await s.execute(select(func.count()).select_from(Event))).scalar_one()
        return (
            await self.subscriptions(),
            None if subscriber is None else (subscriber.email, subscriber.status),
            sorted(deliveries),
            events,
        )

    async def act(self, action: str, **fields: str) -> httpx.Response:
        return await self.client.post(self.url, data={"action": action, "nonce": self.nonce, **fields})

    async def unsubscribe_events(self) -> int:
        async with self.db.session() as s:
            stmt = select(func.count()).select_from(Event).where(Event.type == EventType.UNSUBSCRIBE)
            return int((await s.execute(stmt)).scalar_one())


@pytest.fixture
async def reader(db: Database) -> AsyncIterator[Reader]:
    settings = Settings(database_url=db.url, secret_key=TEST_SECRET, public_url=BASE)  # type: ignore[arg-type]
    app = create_app(settings, Runtime(db=db, secret_key=TEST_SECRET, public_url=BASE))
    signer = TokenSigner(TEST_SECRET)
    delivery_id, subscriber_id, lists = await seed(db)
    url = TrackingUrls(BASE, signer).unsubscribe(delivery_id)[len(BASE) :]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            yield Reader(
                db, client, delivery_id, subscriber_id, lists, url, signer.sign(PURPOSE_FORM, delivery_id)
            )


def list_item(page: str, name: str) -> str:
    """The <li> of one list on the page."""
    found = re.search(r"<li>\s*<div>\s*<strong>" + re.escape(name) + r"</strong>.*?</li>", page, re.DOTALL)
    assert found is not None, f"{name} is not on the page"
    return found.group(0)


async def test_get_shows_the_public_lists_and_changes_nothing(reader: Reader) -> None:
    before = await reader.state()
    for _ in range(3):
        resp = await reader.client.get(reader.url)
        assert (await reader.client.head(reader.url)).status_code == 200
    assert resp.status_code == 200
    page = resp.text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "j…e@example.com" in page and "jane.doe@example.com" not in page
    assert "Subscribed" in list_item(page, "Weekly news") and "Fridays" in list_item(page, "Weekly news")
    assert "Leave" in list_item(page, "Offers")
    assert "Awaiting your confirmation" in list_item(page, "Events") and "Confirm" in list_item(
        page, "Events"
    )
    assert "Not subscribed" in list_item(page, "Podcasts") and "Join" in list_item(page, "Podcasts")
    # Private lists are nobody's business on a public page.
    assert "Secret VIPs" not in page
    assert f'name="nonce" value="{reader.nonce}"' in page
    assert "<script" not in page and "src=" not in page
    assert resp.headers["cache-control"] == "no-store"
    assert "form-action 'self'" in resp.headers["content-security-policy"]
    assert await reader.state() == before


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"content": b"List-Unsubscribe=One-Click", "headers": ONE_CLICK},
        {"files": {"List-Unsubscribe": (None, "One-Click")}},
        # Senders that leave the Content-Type out.
        {"content": b"List-Unsubscribe=One-Click"},
    ],
    ids=["urlencoded", "multipart", "bare"],
)
async def test_one_click_post_leaves_the_lists_the_mail_came_through(
    reader: Reader, request_kwargs: dict[str, object]
) -> None:
    for _ in range(2):
        resp = await reader.client.post(reader.url, **request_kwargs)  # type: ignore[arg-type]
        assert resp.status_code == 200
        assert "You are unsubscribed from the emails this message was sent through" in resp.text
    assert await reader.subscriptions() == {"Weekly news": X, "Offers": C, "Events": U, "Secret VIPs": C}
    assert await reader.unsubscribe_events() == 1


async def test_a_post_that_is_neither_one_click_nor_a_form_changes_nothing(reader: Reader) -> None:
    before = await reader.state()
    for body in (b"", b"List-Unsubscribe=Yes", b"hello"):
        resp = await reader.client.post(reader.url, content=body, headers=ONE_CLICK)
        assert resp.status_code == 400
        assert "Nothing was changed" in resp.text
    assert await reader.state() == before


async def test_forms_need_their_nonce(reader: Reader) -> None:
    before = await reader.state()
    other = TokenSigner(TEST_SECRET).sign(PURPOSE_FORM, reader.delivery_id + 1)
    for nonce in (None, "", "forged", other, reader.url.rsplit("/", 1)[1]):
        fields = {"action": "unsubscribe-all"} | ({} if nonce is None else {"nonce": nonce})
        assert (await reader.client.post(reader.url, data=fields)).status_code == 400
    assert (await reader.act("no-such-action")).status_code == 400
    assert await reader.state() == before


async def test_leave_and_join_lists(reader: Reader) -> None:
    resp = await reader.act("leave", list=str(reader.lists["Offers"]))
    assert resp.status_code == 200 and "You left Offers." in resp.text
    assert "Join" in list_item(resp.text, "Offers")
    assert await reader.subscriptions() == {"Weekly news": C, "Offers": X, "Events": U, "Secret VIPs": C}

    resp = await reader.act("join", list=str(reader.lists["Podcasts"]))
    assert resp.status_code == 200 and "You joined Podcasts." in resp.text
    # The link proves the address: joining a double opt-in list from here confirms at once.
    assert (await reader.act("join", list=str(reader.lists["Events"]))).status_code == 200
    assert (await reader.act("join", list=str(reader.lists["Offers"]))).status_code == 200
    assert await reader.subscriptions() == {
        "Weekly news": C,
        "Offers": C,
        "Events": C,
        "Podcasts": C,
        "Secret VIPs": C,
    }
    # Repeating is harmless.
    assert (await reader.act("join", list=str(reader.lists["Podcasts"]))).status_code == 200
    assert (await reader.act("leave", list=str(reader.lists["Podcasts"]))).status_code == 200
    assert (await reader.act("leave", list=str(reader.lists["Podcasts"]))).status_code == 200
    assert (await reader.subscriptions())["Podcasts"] is X


async def test_private_unknown_and_malformed_lists_are_refused(reader: Reader) -> None:
    before = await reader.state()
    for action in ("join", "leave"):
        for value in (str(reader.lists["Secret VIPs"]), "999999", "x", "", "1" * 40):
            resp = await reader.act(action, list=value)
            assert resp.status_code == 400, (action, value)
        assert (await reader.act(action)).status_code == 400
    assert await reader.state() == before


async def test_a_blocklisted_reader_can_leave_but_not_join(reader: Reader) -> None:
    async with reader.db.transaction() as s:
        jane = await s.get(Subscriber, reader.subscriber_id)
        assert jane is not None
        jane.status = SubscriberStatus.BLOCKLISTED
    page = (await reader.client.get(reader.url)).text
    assert "cannot join lists" in page
    assert "Join" not in list_item(page, "Podcasts")
    resp = await reader.act("join", list=str(reader.lists["Podcasts"]))
    assert resp.status_code == 400 and "cannot join lists" in resp.text
    assert (await reader.act("leave", list=str(reader.lists["Offers"]))).status_code == 200
    assert await reader.subscriptions() == {"Weekly news": C, "Offers": X, "Events": U, "Secret VIPs": C}


async def test_unsubscribe_from_everything(reader: Reader) -> None:
    resp = await reader.act("unsubscribe-all")
    assert resp.status_code == 200 and "unsubscribed from every list" in resp.text
    # Private lists too: "everything" means every list there is.
    assert await reader.subscriptions() == {"Weekly news": X, "Offers": X, "Events": X, "Secret VIPs": X}
    assert await reader.unsubscribe_events() == 1


async def test_download_my_data(reader: Reader) -> None:
    before = await reader.state()
    resp = await reader.act("export")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["content-disposition"] == 'attachment; filename="my-data.json"'
    assert resp.headers["cache-control"] == "no-store"
    document = json.loads(resp.content)
    assert document["profile"]["email"] == "jane.doe@example.com"
    assert sorted(s["list"]["name"] for s in document["subscriptions"]) == [
        "Events",
        "Offers",
        "Secret VIPs",
        "Weekly news",
    ]
    assert [(d["status"], d["viaLists"]) for d in document["deliveries"]] == [
        ("SENT", [globalid.encode("MailingList", reader.lists["Weekly news"])])
    ]
    assert await reader.state() == before


async def test_erasure_asks_first_then_erases(reader: Reader) -> None:
    before = await reader.state()
    ask = await reader.act("erase")
    assert ask.status_code == 200
    assert "Erase your data?" in ask.text and "j…e@example.com" in ask.text
    assert 'name="confirm" value="yes"' in ask.text
    # A confirmation without the nonce, or with another value, erases nothing.
    assert (
        await reader.client.post(reader.url, data={"action": "erase", "confirm": "yes"})
    ).status_code == 400
    assert (await reader.act("erase", confirm="no")).status_code == 200
    assert await reader.state() == before

    done = await reader.act("erase", confirm="yes")
    assert done.status_code == 200 and "Your data is erased" in done.text
    async with reader.db.session() as s:
        assert await s.get(Subscriber, reader.subscriber_id) is None
        delivery = await s.get(Delivery, reader.delivery_id)
        assert delivery is not None and (delivery.email, delivery.subscriber_id) == (ERASED_EMAIL, None)
    assert await reader.subscriptions() == {}

    # The link still answers, with nothing to show and nothing to change.
    after = await reader.client.get(reader.url)
    assert (
        after.status_code == 200
        and "We hold nothing" in after.text
        and "@" not in after.text.split("<main")[1]
    )
    assert (await reader.act("export")).status_code == 200
    assert "We hold nothing" in (await reader.act("export")).text
    one_click = await reader.client.post(reader.url, content=b"List-Unsubscribe=One-Click", headers=ONE_CLICK)
    assert one_click.status_code == 200


async def test_oversized_posts_are_refused_unread(reader: Reader) -> None:
    before = await reader.state()
    body = b"List-Unsubscribe=One-Click&pad=" + b"x" * MAX_FORM_BYTES
    resp = await reader.client.post(reader.url, content=body, headers=ONE_CLICK)
    assert resp.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        yield b"List-Unsubscribe=One-Click&pad="
        for _ in range(64):
            yield b"x" * 1024

    # Streamed without a Content-Length: cut off once past the limit.
    streamed = await reader.client.post(reader.url, content=chunks(), headers=ONE_CLICK)
    assert streamed.status_code == 413
    assert await reader.state() == before
