"""Double opt-in and the public subscribe form, end to end on the embedded default (outbox provider)."""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.embedded import Api, embedded_app


class OptinApi(Api):
    def create_list(self, name: str, optin: str, visibility: str = "PUBLIC", **extra: Any) -> str:
        out = self(
            "mutation($i: CreateListInput!) { createList(input: $i) { list { id } userErrors { code } } }",
            {"i": {"name": name, "optin": optin, "visibility": visibility, **extra}},
        )["createList"]
        assert out["userErrors"] == []
        list_id: str = out["list"]["id"]
        return list_id

    def subscription_status(self, email_address: str) -> dict[str, str]:
        sub = self(
            "query($e: String!) { subscriber(email: $e) { subscriptions { list { name } status } } }",
            {"e": email_address},
        )["subscriber"]
        return {s["list"]["name"]: s["status"] for s in sub["subscriptions"]} if sub else {}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[OptinApi]:
    with embedded_app(
        tmp_path, public_url="https://news.example.com", subscribe_rate_limit="7/minute"
    ) as base:
        yield OptinApi(base.client, base.key, base.outbox)


def wait_for_mail(outbox: Path, count: int, timeout: float = 20.0) -> list[email.message.EmailMessage]:
    deadline = time.monotonic() + timeout
    while len(list(outbox.glob("*.eml"))) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} messages in the outbox")
        time.sleep(0.05)
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(outbox.glob("*.eml"))
    ]


def confirm_link(msg: email.message.EmailMessage) -> str:
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    match = re.search(r'href="(https://news\.example\.com/confirm/[^"]+)"', html)
    assert match, html
    return match.group(1).replace("https://news.example.com", "")


def test_double_list_signup_gets_a_confirmation_and_counts_only_once_confirmed(api: OptinApi) -> None:
    double = api.create_list("Weekly", "DOUBLE")
    single = api.create_list("Offers", "SINGLE")
    created = api(
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { id } userErrors { code } } }",
        {"i": {"email": "ada@example.com", "name": "Ada", "listIds": [double, single]}},
    )["createSubscriber"]
    assert created["userErrors"] == []
    assert api.subscription_status("ada@example.com") == {"Weekly": "UNCONFIRMED", "Offers": "CONFIRMED"}
    counts = "query($id: ID!) { list(id: $id) { subscriberCount } }"

    [msg] = wait_for_mail(api.outbox, 1)
    assert msg["To"] == "Ada <ada@example.com>"
    assert msg["From"] == "hello@example.com"
    assert msg["Subject"] == "Please confirm your subscription"
    link = confirm_link(msg)

    # Following the link shows a page; scanners that only GET confirm nothing.
    page = api.client.get(link)
    assert page.status_code == 200 and "Confirm my subscription" in page.text and "Weekly" in page.text
    assert api.subscription_status("ada@example.com")["Weekly"] == "UNCONFIRMED"
    done = api.client.post(link)
    assert done.status_code == 200 and "is confirmed" in done.text
    assert api.subscription_status("ada@example.com")["Weekly"] == "CONFIRMED"
    assert api(counts, {"id": double})["list"]["subscriberCount"] == 1
    # Idempotent.
    assert api.client.post(link).status_code == 200

    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    assert api.client.get(tampered).status_code == 404
    assert api.client.post(tampered).status_code == 404


def test_list_can_use_its_own_transactional_template(api: OptinApi) -> None:
    template = api(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } userErrors { code } } }",
        {
            "i": {
                "name": "Our opt-in",
                "kind": "TRANSACTIONAL",
                "format": "HTML",
                "subject": "Say yes to {{ lists | join(', ') }}",
                "body": '<p>Hi {{ subscriber.email }}: <a href="{{ confirm_url }}">yes please</a></p>',
            }
        },
    )["createTemplate"]["template"]["id"]
    lst = api.create_list("Digest", "DOUBLE", optinTemplateId=template)
    got = api("query($id: ID!) { list(id: $id) { optinTemplate { name } } }", {"id": lst})["list"]
    assert got == {"optinTemplate": {"name": "Our opt-in"}}
    api(
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { code } } }",
        {"i": {"email": "bob@example.com", "listIds": [lst]}},
    )
    [msg] = wait_for_mail(api.outbox, 1)
    assert msg["Subject"] == "Say yes to Digest"
    api.client.post(confirm_link(msg))
    assert api.subscription_status("bob@example.com") == {"Digest": "CONFIRMED"}

    campaign_template = api(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { template { id } } }",
        {"i": {"name": "C", "kind": "CAMPAIGN", "format": "HTML", "subject": "s", "body": "<p>x</p>"}},
    )["createTemplate"]["template"]["id"]
    bad = api(
        "mutation($i: UpdateListInput!) { updateList(input: $i) { userErrors { field code } } }",
        {"i": {"id": lst, "optinTemplateId": campaign_template}},
    )["updateList"]
    assert bad["userErrors"] == [{"field": "optinTemplateId", "code": "INVALID_INPUT"}]


def test_public_subscribe_form(api: OptinApi) -> None:
    public = api.create_list("Public news", "DOUBLE")
    private = api.create_list("Staff", "SINGLE", visibility="PRIVATE")
    post: Callable[..., Any] = api.client.post

    ok = post("/subscribe", data={"email": "new@example.com", "name": "New", "lists": public})
    assert ok.status_code == 200 and "Almost done" in ok.text
    [msg] = wait_for_mail(api.outbox, 1)
    assert api.subscription_status("new@example.com") == {"Public news": "UNCONFIRMED"}

    # An address that already exists gets exactly the same answer (no enumeration).
    again = post("/subscribe", json={"email": "new@example.com", "lists": [public]})
    assert again.status_code == 200 and again.json() == {"ok": True}

    # Honeypot filled: same answer, nothing stored.
    bot = post("/subscribe", data={"email": "bot@example.com", "lists": public, "website": "http://spam"})
    assert bot.status_code == 200
    assert api.subscription_status("bot@example.com") == {}

    # Private lists and bad addresses are refused.
    # One answer for a private list and a missing one, so private lists stay unknown to strangers.
    for lists in ([private], [public, private], [9_999_999]):
        refused = post("/subscribe", json={"email": "x@example.com", "lists": lists})
        assert refused.status_code == 400
        assert refused.json() == {
            "ok": False,
            "error": "Unknown or non-public list: only lists whose visibility is PUBLIC accept sign-ups",
        }
    assert post("/subscribe", json={"email": "not-an-email", "lists": [public]}).status_code == 400
    assert api.subscription_status("x@example.com") == {}

    # Per-IP rate limit (7 per minute in this test): the eighth request from this client is refused.
    limited = post("/subscribe", json={"email": "late@example.com", "lists": [public]})
    assert limited.status_code == 429
    assert api.subscription_status("late@example.com") == {}
    assert msg["Subject"] == "Please confirm your subscription"
