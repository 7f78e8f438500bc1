"""The README's GraphiQL walkthrough, run as written against the embedded server: first list to first sent mail."""

from __future__ import annotations

import email
import email.policy
import re
import time
from pathlib import Path

from tests.e2e.embedded import embedded_app

README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Try it in GraphiQL") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"```graphql\n(.*?)```", section, re.S)


def test_the_readme_walkthrough_sends_a_first_mail(tmp_path: Path) -> None:
    make_list, add_subscriber, make_campaign, test_send, start, progress, overview = walkthrough()
    with embedded_app(tmp_path) as api:
        list_id = api(make_list)["createList"]["list"]["id"]
        added = api(add_subscriber, {"listId": list_id})["createSubscriber"]
        assert added["userErrors"] == []
        created = api(make_campaign, {"listId": list_id})["createCampaign"]
        assert created["userErrors"] == []
        campaign_id = created["campaign"]["id"]
        tested = api(test_send, {"campaignId": campaign_id})["sendTestEmail"]
        assert tested == {
            "results": [{"email": "me@example.com", "ok": True, "error": None}],
            "userErrors": [],
        }
        started = api(start, {"campaignId": campaign_id})["startCampaign"]
        assert started["userErrors"] == [] and started["campaign"]["status"] == "RUNNING"
        deadline = time.monotonic() + 30
        while (state := api(progress, {"campaignId": campaign_id})["campaign"])["status"] != "FINISHED":
            assert time.monotonic() < deadline, state
            time.sleep(0.05)
        assert state["progress"] == {"recipients": 1, "sent": 1, "failed": 0, "skipped": 0}
        assert api(overview)["campaigns"]["totalCount"] == 1
        sent = [p for p in api.outbox.glob("*.eml") if not p.name.startswith("test-")]
        tests = list(api.outbox.glob("test-*.eml"))
    [mail] = sent
    msg = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert (msg["To"].addresses[0].addr_spec, msg["Subject"]) == ("ada@example.com", "Hello Ada")
    [test_mail] = tests
    assert email.message_from_bytes(test_mail.read_bytes(), policy=email.policy.default)["Subject"] == (
        "[Test] Hello Sam Sample"
    )
