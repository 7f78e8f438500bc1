"""The reported bug, end to end on the embedded default: a campaign to a segment only, a real mail in the outbox,
its List-Unsubscribe URL POSTed as a mailbox provider does, and the next campaign to the same segment.

Sync on purpose, like the other embedded tests: starlette's TestClient runs the in-process worker.
"""

from __future__ import annotations

import email
import email.policy
import re
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.embedded import Api, embedded_app

BODY = '<p>Hi {{ subscriber.name }}</p><p><a href="{{ unsubscribe_url }}">Unsubscribe or manage your emails</a></p>'
BERLIN = {"attribute": {"path": "city", "op": "EQ", "value": "Berlin"}}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with embedded_app(tmp_path, public_url="http://testserver") as running:
        yield running


def gid(api: Api, mutation: str, payload: str, variables: dict[str, Any]) -> str:
    out = api(
        f"mutation($i: {mutation[0].upper()}{mutation[1:]}Input!) {{ {mutation}(input: $i) "
        f"{{ {payload} {{ id }} userErrors {{ field code }} }} }}",
        {"i": variables},
    )[mutation]
    assert out["userErrors"] == [], out
    found: str = out[payload]["id"]
    return found


def send_to_segment(api: Api, segment_id: str) -> list[EmailMessage]:
    before = set(api.outbox.glob("*.eml"))
    campaign_id = gid(
        api,
        "createCampaign",
        "campaign",
        {
            "name": "News",
            "subject": "News",
            "fromEmail": "news@example.com",
            "segmentIds": [segment_id],
            "body": BODY,
            "format": "HTML",
        },
    )
    started = api(
        "mutation($i: CampaignIdInput!) { startCampaign(input: $i) { userErrors { code } } }",
        {"i": {"id": campaign_id}},
    )["startCampaign"]
    assert started["userErrors"] == []
    status = "query($id: ID!) { campaign(id: $id) { status } }"
    deadline = time.monotonic() + 30
    while api(status, {"id": campaign_id})["campaign"]["status"] != "FINISHED":
        assert time.monotonic() < deadline, "the campaign did not finish"
        time.sleep(0.05)
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(set(api.outbox.glob("*.eml")) - before)
    ]


def subscriptions(api: Api, subscriber_id: str) -> dict[str, str]:
    query = (
        "query($id: ID!) { node(id: $id) { ... on Subscriber { subscriptions { status list { name } } } } }"
    )
    return {
        s["list"]["name"]: s["status"] for s in api(query, {"id": subscriber_id})["node"]["subscriptions"]
    }


def test_a_segment_only_campaign_is_unsubscribed_from_by_its_one_click_url(api: Api) -> None:
    news = gid(api, "createList", "list", {"name": "News", "visibility": "PUBLIC"})
    offers = gid(api, "createList", "list", {"name": "Offers"})
    ann = gid(
        api,
        "createSubscriber",
        "subscriber",
        {
            "email": "ann@example.com",
            "name": "Ann",
            "attributes": {"city": "Berlin"},
            "listIds": [news, offers],
        },
    )
    gid(
        api,
        "createSubscriber",
        "subscriber",
        {"email": "bob@example.com", "name": "Bob", "attributes": {"city": "Berlin"}, "listIds": [news]},
    )
    segment = gid(api, "createSegment", "segment", {"name": "Berliners", "filter": BERLIN})

    mails = {str(m["To"].addresses[0].addr_spec): m for m in send_to_segment(api, segment)}
    assert set(mails) == {"ann@example.com", "bob@example.com"}
    mail = mails["ann@example.com"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    header_url = re.fullmatch(r"<(http://testserver/u/[^>]+)>", str(mail["List-Unsubscribe"]))
    assert header_url is not None
    url = header_url.group(1)
    # The footer link opens the same page: the preference centre.
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert f'href="{url}"' in html

    # A link scanner fetching it changes nothing.
    page = api.client.get(url)
    assert page.status_code == 200 and "a…n@example.com" in page.text and "News" in page.text
    assert subscriptions(api, ann) == {"News": "CONFIRMED", "Offers": "CONFIRMED"}

    one_click = api.client.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    # The campaign named no list; she was reached through both of hers, and leaves both.
    assert subscriptions(api, ann) == {"News": "UNSUBSCRIBED", "Offers": "UNSUBSCRIBED"}
    assert "You are unsubscribed" in api.client.get(url).text

    again = send_to_segment(api, segment)
    assert [str(m["To"].addresses[0].addr_spec) for m in again] == ["bob@example.com"]
