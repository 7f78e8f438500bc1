"""An A/B test in the embedded default, end to end: GraphQL → in-process queue → outbox. The test share is sent
by the worker, the campaign waits for the winner, pickWinner sends it to the rest, and every subscriber finds
exactly one message in the outbox: their variant's."""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from pathlib import Path

from tests.e2e.embedded import embedded_app
from tests.e2e.test_embedded_sending import wait_until

SUBJECTS = ("Spring news", "Only today")
STATE = """query($id: ID!) { node(id: $id) { ... on Campaign {
  status statusReason abTest { phase winner { label } }
  stats { variants { variant { label } sent } }
  deliveries(first: 100) { edges { node { email variant { label } } } }
} } }"""


def test_the_test_share_then_the_picked_winner_to_the_rest(tmp_path: Path) -> None:
    with embedded_app(tmp_path, public_url="https://mail.example.com", batch_size=10) as api:
        list_id = api('mutation { createList(input: {name: "News"}) { list { id } } }')["createList"]["list"][
            "id"
        ]
        for i in range(40):
            api(
                "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { userErrors { code } } }",
                {"i": {"email": f"p{i}@example.com", "name": f"P{i}", "listIds": [list_id]}},
            )
        created = api(
            """mutation($i: CreateCampaignInput!) {
                createCampaign(input: $i) { campaign { id variants { id label } } userErrors { code field } } }""",
            {
                "i": {
                    "name": "Spring",
                    "subject": SUBJECTS[0],
                    "fromEmail": "news@example.com",
                    "listIds": [list_id],
                    "body": "<p>Hi {{ subscriber.name }}</p>",
                    "format": "HTML",
                    "variants": [{}, {"subject": SUBJECTS[1]}],
                    "abTest": {"testShare": 0.5, "metric": "CLICKS", "waitSeconds": 3600},
                }
            },
        )["createCampaign"]
        assert created["userErrors"] == []
        campaign = created["campaign"]["id"]
        api(
            "mutation($id: ID!) { startCampaign(input: {id: $id}) { userErrors { code } } }", {"id": campaign}
        )

        def state() -> dict:  # type: ignore[type-arg]
            node: dict = api(STATE, {"id": campaign})["node"]  # type: ignore[type-arg]
            return node

        wait_until(lambda: state()["abTest"]["phase"] == "WAITING")
        waiting = state()
        assert waiting["status"] == "RUNNING"
        assert waiting["statusReason"].startswith(
            "A/B test: waiting for the winner (by unique clicks) until "
        )
        tested = {e["node"]["email"]: e["node"]["variant"]["label"] for e in waiting["deliveries"]["edges"]}
        assert 0 < len(tested) < 40

        b = created["campaign"]["variants"][1]["id"]
        picked = api(
            "mutation($c: ID!, $v: ID!) { pickWinner(input: {campaignId: $c, variantId: $v}) { userErrors { code } } }",
            {"c": campaign, "v": b},
        )
        assert picked["pickWinner"]["userErrors"] == []
        wait_until(lambda: state()["status"] == "FINISHED")
        final = state()
        assert final["abTest"] == {"phase": "WINNER_SENT", "winner": {"label": "B"}}
        everyone = {e["node"]["email"]: e["node"]["variant"]["label"] for e in final["deliveries"]["edges"]}
        assert everyone == {f"p{i}@example.com": tested.get(f"p{i}@example.com", "B") for i in range(40)}
        assert sum(v["sent"] for v in final["stats"]["variants"]) == 40

        mails = [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in api.outbox.glob("*.eml")
        ]
        received = Counter(m["To"].addresses[0].addr_spec for m in mails)
        assert len(received) == 40 and set(received.values()) == {1}
        subject_of = {m["To"].addresses[0].addr_spec: m["Subject"] for m in mails}
        assert subject_of == {
            addr: SUBJECTS[0] if label == "A" else SUBJECTS[1] for addr, label in everyone.items()
        }
