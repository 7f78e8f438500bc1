"""Batched personalised sends (SendGrid substitutions, Mailgun recipient-variables) against the local API
peers, which expand each batched request into what every recipient gets by the provider's own substitution
rules. What each person gets must be byte-identical to what the one-message-per-request path sends them, for
people whose rendering factors like the others' and for those whose does not (a Jinja branch showing a
transformed name, a name that also occurs in the template's text); each request is committed before it goes
and reported before its slot is reused; a 429 or 5xx fails its whole request's recipients as transient."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import update

from emailkit.db.engine import Database
from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import Campaign
from emailkit.domain.content.rendering import compile_content
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.ports.provider import (
    DELIVERY_HEADER,
    DELIVERY_TAG,
    Address,
    EmailProvider,
    OutgoingMessage,
)
from emailkit.domain.sending import lifecycle
from emailkit.domain.sending.ledger import Pending
from emailkit.domain.sending.messages import Compiled, MessageBuilder
from emailkit.domain.sending.pipeline import CampaignSender
from emailkit.domain.tokens import TokenSigner
from emailkit.providers.mailgun import MailgunProvider
from emailkit.providers.registry import build_provider
from emailkit.providers.sendgrid import SendGridProvider
from emailkit.settings import Settings
from tests.support.audience import seed_campaign
from tests.support.environment import TEST_SECRET
from tests.support.handover import HandoverLog
from tests.support.provider_apis import mailgun as mailgun_api
from tests.support.provider_apis.common import Accepted, ApiState, serve
from tests.support.provider_apis.kits import KITS, api, environment
from tests.support.provider_apis.sendgrid import API_KEY as SENDGRID_KEY
from tests.support.provider_apis.sendgrid import FakeSendGridState, sendgrid_server

BASE = "https://mail.example.com"
TEMPLATE = """<html><body>
<p>Hello {{ subscriber.name }},</p>
<p>We write to {{ subscriber.email }} about {{ campaign.name }}.</p>
{% if subscriber.attributes.plan == "gold" %}<p>Gold perks in {{ subscriber.attributes.city }}</p>{% endif %}
{% if subscriber.attributes.vip %}<p>DEAR {{ subscriber.name|upper }}</p>{% endif %}
<a href="https://shop.example.com/autumn?ref=news&amp;a=1">Shop the autumn range</a>
<a href="https://blog.example.com/">Our blog</a>
<a href="{{ webview_url }}">View in browser</a>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> from the Weekly News team.</p>
</body></html>"""


def compiled() -> Compiled:
    content = compile_content(TEMPLATE, ContentFormat.HTML, subject="Autumn news for {{ subscriber.name }}")
    return Compiled(
        updated_at=datetime(2026, 12, 1, tzinfo=UTC),
        content=content,
        campaign={"id": 9, "name": "Autumn"},
        from_=Address("news@news.example.com", "Weekly News"),
        reply_to=Address("replies@news.example.com"),
        track_opens=True,
        track_clicks=True,
        list_id_header='"Weekly News" <campaign-9.mail.example.com>',
        tracked=content.tracked(clicks=True, opens=True),
        web_view=True,
    )


def people() -> list[Pending]:
    """Ordinary readers (one with a name that needs escaping in HTML, one named like a word of the template,
    which cutting alone would split apart but the readers' shape fits), gold-plan readers (another shape,
    shared among them), and VIPs (their upper-cased name factors for nobody: each alone)."""
    found: list[Pending] = []
    for i in range(30):
        found.append(
            Pending(1000 + i, 500 + i, f"reader{i}@example.org", f"Reader Number{i}", {"plan": "free"}, 0)
        )
    found.append(Pending(1030, 530, "obrien@example.org", "Mary O'Brien & Sons", {}, 0))
    for i in range(5):
        attributes = {"plan": "gold", "city": ["Lisbon", "Porto", "Braga", "Faro", "Évora"][i]}
        found.append(Pending(1040 + i, 540 + i, f"gold{i}@example.org", f"Golden Reader{i}", attributes, 0))
    for i in range(3):
        found.append(Pending(1050 + i, 550 + i, f"vip{i}@example.org", f"Very Important{i}", {"vip": 1}, 0))
    found.append(Pending(1060, 560, "weekly@example.org", "Weekly", {}, 0))
    return found


def build(recipients: Sequence[Pending] | None = None) -> list[OutgoingMessage]:
    builder = MessageBuilder(
        TrackingUrls(BASE, TokenSigner(TEST_SECRET)), unsubscribe_mailto="u@news.example.com"
    )
    c = compiled()
    # A Message-ID of our own too, so that the test covers it surviving the batch.
    return [
        dataclasses.replace(builder.build(c, p), message_id=f"<{p.delivery_id}.9@mail.example.com>")
        for p in recipients or people()
    ]


@dataclass
class Peer:
    """A provider's local API: what each recipient got, and how many requests it took."""

    name: str
    delivered: Callable[[], list[Accepted]]
    requests: Callable[[], int]
    #: The HTML of each request the API took, as sent (before substitution).
    bodies: Callable[[], list[str]]
    tags: Callable[[Accepted], dict[str, str]]
    set_handover: Callable[[HandoverLog], None]


@asynccontextmanager
async def sendgrid(*, batch: bool = True, concurrency: int = 4) -> AsyncIterator[tuple[EmailProvider, Peer]]:
    async with sendgrid_server() as (url, state):
        provider = SendGridProvider(api_key=SENDGRID_KEY, base_url=url, batch=batch, concurrency=concurrency)

        def set_handover(log: HandoverLog, state: FakeSendGridState = state) -> None:
            state.handover = log

        peer = Peer(
            "sendgrid",
            lambda: state.delivered,
            lambda: state.requests,
            lambda: [c["value"] for b in state.accepted for c in b["content"] if c["type"] == "text/html"],
            lambda a: dict(a.raw["custom_args"]),
            set_handover,
        )
        try:
            yield provider, peer
        finally:
            await provider.close()


@asynccontextmanager
async def mailgun(*, batch: bool = True, concurrency: int = 4) -> AsyncIterator[tuple[EmailProvider, Peer]]:
    state = ApiState(key=mailgun_api.API_KEY, delay=0.001)
    async with serve(mailgun_api.mailgun_app(state)) as url:
        provider = MailgunProvider(
            api_key=mailgun_api.API_KEY,
            domain=mailgun_api.DOMAIN,
            base_url=url,
            batch=batch,
            concurrency=concurrency,
        )

        def set_handover(log: HandoverLog, state: ApiState = state) -> None:
            state.handover = log

        peer = Peer(
            "mailgun",
            lambda: state.accepted,
            lambda: state.requests,
            lambda: [v for fields in state.received for n, v in fields if n == "html"],
            lambda a: {n[2:]: v for n, v in a.raw if n.startswith("v:")},
            set_handover,
        )
        try:
            yield provider, peer
        finally:
            await provider.close()


PEERS = {"sendgrid": sendgrid, "mailgun": mailgun}


@pytest.fixture(params=sorted(PEERS))
def peer_of(request: pytest.FixtureRequest) -> Any:
    return PEERS[request.param]


def view(peer: Peer, got: Accepted) -> dict[str, Any]:
    return {
        "to": got.to,
        "sender": got.sender,
        "subject": got.subject,
        "html": got.html,
        "text": got.text,
        "headers": got.headers,
        "tags": peer.tags(got),
    }


async def test_each_person_gets_byte_for_byte_what_the_per_message_path_sends(peer_of: Any) -> None:
    messages = build()
    async with peer_of(batch=False) as (provider, alone):
        assert all(r.ok for r in await provider.send_batch(messages))
        singly = {a.to: view(alone, a) for a in alone.delivered()}
        alone_requests = alone.requests()
    async with peer_of(batch=True) as (provider, batched):
        results = await provider.send_batch(messages)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        together = {a.to: view(batched, a) for a in batched.delivered()}
        batched_requests = batched.requests()

    assert alone_requests == len(messages)
    # Readers (30, O'Brien and Weekly) share one request, the gold readers another; the 3 VIPs go alone.
    assert batched_requests == 1 + 1 + 3
    assert sorted(together) == sorted(singly) == sorted(m.to.email for m in messages)
    for message in messages:
        got = together[message.to.email]
        assert got == singly[message.to.email], message.to.email
        # And what we control is exactly the rendered message.
        assert (got["subject"], got["html"], got["text"]) == (message.subject, message.html, message.text)
        for name, value in message.headers.items():
            assert got["headers"][name] == value
        assert got["headers"]["Message-ID"] == message.message_id
        if peer_of is mailgun:  # SendGrid ties events to deliveries by custom_args alone
            assert got["headers"][DELIVERY_HEADER] == message.delivery_id
        assert got["tags"][DELIVERY_TAG] == message.delivery_id
        assert {k: got["tags"][k] for k in message.tags} == dict(message.tags)


async def test_batched_requests_really_substitute(peer_of: Any) -> None:
    """The shared body holds keys, not anybody's values: one body for many people."""
    messages = build()[:10]
    async with peer_of(batch=True) as (provider, peer):
        assert all(r.ok for r in await provider.send_batch(messages))
        assert peer.requests() == 1
        assert len(peer.delivered()) == 10
        (html,) = peer.bodies()
    for message in messages:
        for value in message.personal.values():
            assert value not in html
    assert ("%ek" if peer.name == "sendgrid" else "%recipient.") in html
    assert len(html) < len(messages[0].html or "") + 200


async def test_a_request_is_committed_before_it_goes_and_reported_before_its_slot_is_reused(
    peer_of: Any,
) -> None:
    log = HandoverLog()
    messages = build()
    async with peer_of(batch=True, concurrency=2) as (provider, peer):
        peer.set_handover(log)
        await provider.send_batch(messages, on_commit=log.on_commit, on_result=log.on_result)
    worst = log.check(all_ids={m.delivery_id for m in messages}, most_in_doubt=32 + 5)
    assert worst >= 32  # the readers' request was in doubt as a whole, and only while it was in flight
    requests = [ids for kind, ids in log.events if kind == "request"]
    assert sorted(len(ids) for ids in requests) == [1, 1, 1, 5, 32]


@pytest.mark.parametrize(("local", "status"), [("limited", 429), ("broken", 500)])
async def test_a_refused_request_fails_all_its_recipients_as_transient(
    peer_of: Any, local: str, status: int
) -> None:
    recipients = people()[:12]
    recipients[5] = dataclasses.replace(recipients[5], email=f"{local}@example.org")
    messages = build(recipients)
    async with peer_of(batch=True) as (provider, peer):
        results = await provider.send_batch(messages)
        assert peer.delivered() == []
    assert all(not r.ok and r.transient for r in results)
    assert all(f" {status}" in (r.error or "") for r in results)
    if local == "limited":
        assert all(r.retry_after is not None and r.retry_after > 0 for r in results)


async def test_a_bad_address_in_a_batch_fails_alone(peer_of: Any) -> None:
    recipients = people()[:8]
    recipients[3] = dataclasses.replace(recipients[3], email="nobody@nowhere.invalid")
    messages = build(recipients)
    async with peer_of(batch=True) as (provider, peer):
        results = await provider.send_batch(messages)
        delivered = sorted(a.to for a in peer.delivered())
    assert [r.ok for r in results] == [True, True, True, False, True, True, True, True]
    assert not results[3].transient
    assert delivered == sorted(m.to.email for i, m in enumerate(messages) if i != 3)


async def test_content_holding_a_providers_key_marker_goes_alone(peer_of: Any) -> None:
    """SendGrid replaces every %ek0%-like key and Mailgun every %recipient.x%: content that holds such
    text must not share a body, or the API would rewrite it."""
    messages = build(people()[:6])
    marker = "%ek0%" if peer_of is sendgrid else "%recipient.s0%"
    odd = dataclasses.replace(messages[2], html=(messages[2].html or "") + f"<p>{marker}</p>")
    messages[2] = odd
    async with peer_of(batch=True) as (provider, peer):
        assert all(r.ok for r in await provider.send_batch(messages))
        assert peer.requests() == 2
        got = next(a for a in peer.delivered() if a.to == odd.to.email)
    assert got.html == odd.html


@pytest.mark.parametrize(("name", "requests"), [("mailgun", 2), ("postmark", 3), ("resend", 12)])
async def test_a_campaign_goes_out_in_full_requests(db: Database, name: str, requests: int) -> None:
    """Through the send pipeline: a chunk is as large as the provider's request (SendingConfig.chunk_for),
    so 1200 people are 1000 + 200 for Mailgun's batch, 500 + 500 + 200 for Postmark, 100 each for Resend."""
    kit = next(k for k in KITS if k.name == name)
    campaign_id, emails = await seed_campaign(db, 1200)
    async with db.transaction() as s:
        await s.execute(
            update(Campaign).where(Campaign.id == campaign_id).values(from_email="news@news.example.com")
        )
        _, batch_ids = await lifecycle.start_campaign(s, campaign_id, batch_size=1000)
    async with api(kit) as (url, state):
        provider = build_provider(Settings(**environment(kit, url)))
        sender = CampaignSender(db, provider, kit.name, TrackingUrls(BASE, TokenSigner(TEST_SECRET)))
        try:
            for batch_id in batch_ids:
                assert (await sender.run_batch(batch_id)).done
        finally:
            await provider.close()
    assert state.requests == requests
    assert sorted(a.to for a in state.accepted) == sorted(emails)
    async with db.session() as s:
        campaign = await s.get(Campaign, campaign_id)
    assert campaign is not None and campaign.sent_count == 1200
