"""Senders through GraphQL: ADMIN keys manage them, credentials are sealed and never shown (nor logged), bad
settings and credentials are userErrors naming the key, a sender in use cannot go, testSender talks to the
provider, and a campaign's sender follows the documented precedence."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from emailkit.app import sending_setup
from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.senders import Sender
from emailkit.db.tables.sending import Campaign
from emailkit.domain.runtime import Runtime
from emailkit.domain.sealing import unseal
from emailkit.domain.senders.precedence import campaign_sender_id
from emailkit.domain.senders.store import PURPOSE
from emailkit.providers import senders as sender_modules
from emailkit.providers.senders import SenderProviderFactory
from emailkit.settings import Settings
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.flows_api import CREATE_FLOW, make_content, pk
from tests.support.graphql import GQL, data, make_list
from tests.support.smtp_provider import Sink, smtp_server

PASSWORD = "s3cret-smtp-pass-9876"
API_KEY = "SG.very-secret-key-4321"
FIELDS = "id name type settings ratePerSecond poolSize hasCredentials credentialsLast4 isDefault createdAt"
ERRORS = "userErrors { field code message }"
CREATE = (
    f"mutation($i: CreateSenderInput!) {{ createSender(input: $i) {{ sender {{ {FIELDS} }} {ERRORS} }} }}"
)
UPDATE = (
    f"mutation($i: UpdateSenderInput!) {{ updateSender(input: $i) {{ sender {{ {FIELDS} }} {ERRORS} }} }}"
)
DELETE = f"mutation($i: DeleteSenderInput!) {{ deleteSender(input: $i) {{ deletedId {ERRORS} }} }}"
TEST = f"mutation($i: TestSenderInput!) {{ testSender(input: $i) {{ ok message sender {{ id name }} {ERRORS} }} }}"
LIST = f"{{ senders(first: 10) {{ totalCount edges {{ node {{ {FIELDS} }} }} }} }}"
ONE = f"query($id: ID!) {{ sender(id: $id) {{ {FIELDS} }} }}"
DEFAULT = f"{{ defaultSender {{ {FIELDS} }} }}"


@pytest.fixture
def runtime(db: Database, settings: Settings, tmp_path: Path) -> Runtime:
    """A runtime that sends (through the outbox by default) and can build senders' providers."""
    sending = Settings(
        database_url=db.url,  # type: ignore[arg-type]
        secret_key=TEST_SECRET,
        public_url=settings.public_url,  # type: ignore[arg-type]
        outbox_dir=tmp_path / "outbox",
    )
    return Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url=settings.public_url,
        sending=sending_setup(sending),
        sender_factory=SenderProviderFactory(outbox_root=tmp_path / "outbox"),
        # The tests' SMTP servers listen on loopback (test_private_hosts_are_refused turns it off).
        sender_allow_private=True,
    )


def smtp_input(name: str = "Brand relay", port: int = 2525, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "SMTP",
        "settings": {"url": f"smtp://127.0.0.1:{port}?tls=none&timeout=5"},
        "credentials": {"username": "mailer", "password": PASSWORD},
        "ratePerSecond": 20,
        "poolSize": 3,
        **extra,
    }


async def create(gql: GQL, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"i": values}))["createSender"]
    return out


async def test_create_read_update_delete_without_ever_showing_credentials(
    gql: GQL, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def run(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = await gql(query, variables)
        seen.append(json.dumps(body))
        return data(body)

    made = (await run(CREATE, {"i": smtp_input()}))["createSender"]
    assert made["userErrors"] == []
    sender = made["sender"]
    assert sender["name"] == "Brand relay" and sender["type"] == "SMTP"
    assert sender["settings"] == {"url": "smtp://127.0.0.1:2525?tls=none&timeout=5"}
    assert (sender["hasCredentials"], sender["credentialsLast4"]) == (True, "9876")
    assert (sender["ratePerSecond"], sender["poolSize"], sender["isDefault"]) == (20.0, 3, False)

    listed = (await run(LIST))["senders"]
    assert listed["totalCount"] == 1 and listed["edges"][0]["node"] == sender
    assert (await run(ONE, {"id": sender["id"]}))["sender"] == sender

    # Renamed: the credentials stay as they were.
    renamed = (await run(UPDATE, {"i": {"id": sender["id"], "name": "Relay"}}))["updateSender"]
    assert renamed["userErrors"] == [] and renamed["sender"]["name"] == "Relay"
    assert renamed["sender"]["credentialsLast4"] == "9876"
    # Replaced only when given.
    rotated = (
        await run(
            UPDATE, {"i": {"id": sender["id"], "credentials": {"username": "m", "password": "new-pass-0001"}}}
        )
    )["updateSender"]
    assert rotated["userErrors"] == [] and rotated["sender"]["credentialsLast4"] == "0001"
    # Credentials removed: an SMTP relay without AUTH.
    plain = (await run(UPDATE, {"i": {"id": sender["id"], "credentials": {}, "ratePerSecond": 0}}))[
        "updateSender"
    ]
    assert plain["sender"]["hasCredentials"] is False and plain["sender"]["credentialsLast4"] is None
    assert plain["sender"]["ratePerSecond"] is None

    deleted = (await run(DELETE, {"i": {"id": sender["id"]}}))["deleteSender"]
    assert deleted == {"deletedId": sender["id"], "userErrors": []}
    assert (await run(LIST))["senders"]["totalCount"] == 0

    for secret in (PASSWORD, "new-pass-0001"):
        assert not any(secret in body for body in seen), "a credential came back in a response"
        assert secret not in caplog.text, "a credential was logged"


async def test_credentials_are_sealed_at_rest(gql: GQL, db: Database) -> None:
    made = await create(
        gql, {"name": "Grid", "type": "SENDGRID", "settings": {}, "credentials": {"apiKey": API_KEY}}
    )
    assert made["userErrors"] == [] and made["sender"]["credentialsLast4"] == "4321"
    async with db.session() as s:
        row = (await s.execute(select(Sender))).scalar_one()
    assert row.credentials_sealed is not None and API_KEY not in row.credentials_sealed
    assert "very-secret" not in json.dumps(row.settings)
    assert json.loads(unseal(row.credentials_sealed, TEST_SECRET, purpose=PURPOSE)) == {"apiKey": API_KEY}


@pytest.mark.parametrize(
    ("values", "field", "code"),
    [
        ({"settings": {"url": "http://mail.example.com"}}, "settings.url", "INVALID_SENDER_SETTINGS"),
        ({"settings": {"url": "smtp://u:p@mail.example.com"}}, "settings.url", "INVALID_SENDER_SETTINGS"),
        ({"settings": {"host": "mail.example.com"}}, "settings.host", "INVALID_SENDER_SETTINGS"),
        ({"settings": ["not", "an", "object"]}, "settings", "INVALID_SENDER_SETTINGS"),
        ({"credentials": {"username": "mailer"}}, "credentials.password", "INVALID_SENDER_CREDENTIALS"),
        ({"credentials": {"password": 1234}}, "credentials.password", "INVALID_SENDER_CREDENTIALS"),
        ({"poolSize": 0}, "poolSize", "OUT_OF_RANGE"),
        ({"ratePerSecond": -1}, "ratePerSecond", "OUT_OF_RANGE"),
        ({"name": " "}, "name", "REQUIRED"),
    ],
)
async def test_bad_settings_and_credentials_are_user_errors(
    gql: GQL, values: dict[str, Any], field: str, code: str
) -> None:
    out = await create(gql, {**smtp_input(), **values})
    assert out["sender"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(field, code)], out["userErrors"]
    assert PASSWORD not in json.dumps(out)
    assert data(await gql(LIST))["senders"]["totalCount"] == 0


async def test_types_credentials_and_names(gql: GQL, monkeypatch: pytest.MonkeyPatch) -> None:
    ses = await create(
        gql,
        {
            "name": "SES",
            "type": "SES",
            "settings": {"region": "eu-west-1"},
            "credentials": {"accessKeyId": "AKIA1"},
        },
    )
    assert [(e["field"], e["code"]) for e in ses["userErrors"]] == [
        ("credentials.secretAccessKey", "INVALID_SENDER_CREDENTIALS")
    ]
    # A type whose provider module this server does not have.
    monkeypatch.setitem(sender_modules.MODULES, "RESEND", "emailkit.providers.not_here")
    resend = await create(gql, {"name": "R", "type": "RESEND", "credentials": {"apiKey": "re_1234"}})
    assert [(e["field"], e["code"]) for e in resend["userErrors"]] == [("type", "INVALID_SENDER_TYPE")]

    assert (await create(gql, smtp_input()))["userErrors"] == []
    twice = await create(gql, smtp_input(name="brand RELAY"))
    assert [(e["field"], e["code"]) for e in twice["userErrors"]] == [("name", "DUPLICATE_NAME")]
    # An update that breaks the settings is refused whole; the sender keeps what it had.
    sender_id = data(await gql(LIST))["senders"]["edges"][0]["node"]["id"]
    broken = data(
        await gql(UPDATE, {"i": {"id": sender_id, "name": "Renamed", "settings": {"url": "smtp://"}}})
    )["updateSender"]
    assert [(e["field"], e["code"]) for e in broken["userErrors"]] == [
        ("settings.url", "INVALID_SENDER_SETTINGS")
    ]
    assert data(await gql(ONE, {"id": sender_id}))["sender"]["name"] == "Brand relay"


async def test_only_admin_keys_see_or_manage_senders(gql: GQL, db: Database) -> None:
    sender_id = (await create(gql, smtp_input()))["sender"]["id"]
    for role in (Role.EDITOR, Role.VIEWER):
        key = await make_key(db, role, role.value.lower())
        for query, variables in (
            (CREATE, {"i": smtp_input(name="Other")}),
            (UPDATE, {"i": {"id": sender_id, "name": "Mine"}}),
            (DELETE, {"i": {"id": sender_id}}),
            (TEST, {"i": {"id": sender_id}}),
            (LIST, None),
            (ONE, {"id": sender_id}),
            (DEFAULT, None),
        ):
            body = await gql(query, variables, key=key)
            assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", (role, query, body)
    assert data(await gql(ONE, {"id": sender_id}))["sender"]["name"] == "Brand relay"


LIST_SENDER = "mutation($i: UpdateListInput!) { updateList(input: $i) { list { id senderId } userErrors { field code } } }"
CAMPAIGN = "mutation($i: CreateCampaignInput!) { createCampaign(input: $i) { campaign { id senderId } userErrors { field code } } }"
DELETE_CAMPAIGN = (
    "mutation($i: DeleteCampaignInput!) { deleteCampaign(input: $i) { deletedId userErrors { code } } }"
)
ARCHIVE_FLOW = "mutation($i: FlowIdInput!) { archiveFlow(input: $i) { flow { id } userErrors { code } } }"


async def test_a_sender_in_use_is_not_deleted(gql: GQL) -> None:
    sender_id = (await create(gql, smtp_input()))["sender"]["id"]
    content = await make_content(gql)

    async def delete_codes() -> list[str]:
        out = data(await gql(DELETE, {"i": {"id": sender_id}}))["deleteSender"]
        return [e["code"] for e in out["userErrors"]]

    listed = data(await gql(LIST_SENDER, {"i": {"id": content.welcome_list, "senderId": sender_id}}))
    assert listed["updateList"]["list"]["senderId"] == sender_id
    assert await delete_codes() == ["IN_USE"]
    cleared = data(await gql(LIST_SENDER, {"i": {"id": content.welcome_list, "senderId": ""}}))
    assert cleared["updateList"]["list"]["senderId"] is None

    campaign = data(
        await gql(
            CAMPAIGN,
            {
                "i": {
                    "name": "Launch",
                    "subject": "Hi",
                    "fromEmail": "news@example.com",
                    "templateId": content.template,
                    "listIds": [content.customers_list],
                    "senderId": sender_id,
                }
            },
        )
    )["createCampaign"]
    assert campaign["userErrors"] == [] and campaign["campaign"]["senderId"] == sender_id
    assert await delete_codes() == ["IN_USE"]
    data(await gql(DELETE_CAMPAIGN, {"i": {"id": campaign["campaign"]["id"]}}))

    step = {"key": "hello", "type": "SEND", "templateId": content.template, "fromEmail": "hi@example.com"}
    trigger = {"type": "SUBSCRIBED", "listId": content.welcome_list}
    unknown = data(
        await gql(
            CREATE_FLOW,
            {"i": {"name": "Bad", "trigger": trigger, "steps": [{**step, "senderId": "U2VuZGVyOjk5OTk5"}]}},
        )
    )["createFlow"]
    assert [(e["field"], e["code"]) for e in unknown["userErrors"]] == [("steps[0].senderId", "NOT_FOUND")]
    flow = data(
        await gql(
            CREATE_FLOW,
            {"i": {"name": "Hello", "trigger": trigger, "steps": [{**step, "senderId": sender_id}]}},
        )
    )["createFlow"]
    assert flow["userErrors"] == []
    assert await delete_codes() == ["IN_USE"]
    data(await gql(ARCHIVE_FLOW, {"i": {"id": flow["flow"]["id"]}}))

    assert await delete_codes() == []


async def test_test_sender_reports_the_providers_answer(gql: GQL, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = Sink()
    async with smtp_server(sink) as port:
        plain = await create(gql, {**smtp_input(port=port), "credentials": None})
        tested = data(await gql(TEST, {"i": {"id": plain["sender"]["id"]}}))["testSender"]
        assert tested["ok"] is True and tested["message"].startswith("250"), tested
        assert tested["sender"]["name"] == "Brand relay"
        # aiosmtpd offers no AUTH here: the relay's refusal is the answer, not an exception.
        with_auth = await create(gql, smtp_input(name="With auth", port=port))
        refused = data(await gql(TEST, {"i": {"id": with_auth["sender"]["id"]}}))["testSender"]
    assert refused["ok"] is False and refused["message"], refused
    assert sink.delivered == []
    closed = data(await gql(TEST, {"i": {"id": plain["sender"]["id"]}}))["testSender"]
    assert closed["ok"] is False and f"127.0.0.1:{port}" in closed["message"]

    default = data(await gql(DEFAULT))["defaultSender"]
    assert (default["isDefault"], default["type"], default["name"]) == (True, "OUTBOX", "default")
    outbox = data(await gql(TEST, {"i": {"id": default["id"]}}))["testSender"]
    assert outbox["ok"] is True and "writable" in outbox["message"]
    missing = data(await gql(TEST, {"i": {"id": "U2VuZGVyOjk5OTk5"}}))["testSender"]
    assert [e["code"] for e in missing["userErrors"]] == ["NOT_FOUND"] and missing["ok"] is False
    assert PASSWORD not in caplog.text


async def test_a_campaigns_sender_follows_the_precedence(gql: GQL, db: Database) -> None:
    """Its own sender; else the sender of its list with the lowest id that has one; else the default."""
    content = await make_content(gql)
    first = (await create(gql, smtp_input(name="First")))["sender"]["id"]
    second = (await create(gql, smtp_input(name="Second")))["sender"]["id"]
    plain_list = await make_list(gql, "No sender")
    data(await gql(LIST_SENDER, {"i": {"id": content.welcome_list, "senderId": second}}))
    data(await gql(LIST_SENDER, {"i": {"id": content.customers_list, "senderId": first}}))

    async def campaign(list_ids: list[str], sender: str | None = None) -> int:
        values = {
            "name": "C",
            "subject": "Hi",
            "fromEmail": "news@example.com",
            "templateId": content.template,
            "listIds": list_ids,
        }
        if sender is not None:
            values["senderId"] = sender
        out = data(await gql(CAMPAIGN, {"i": values}))["createCampaign"]
        assert out["userErrors"] == [], out
        return pk(out["campaign"]["id"])

    cases = {
        await campaign([content.welcome_list, content.customers_list, plain_list]): pk(second),
        await campaign([plain_list, content.customers_list]): pk(first),
        await campaign([content.welcome_list], sender=first): pk(first),
        await campaign([plain_list]): None,
        await campaign([content.welcome_list], sender=""): pk(second),
    }
    async with db.session() as s:
        resolved = {
            cid: sid for cid, sid in (await s.execute(select(Campaign.id, campaign_sender_id()))).all()
        }
    assert resolved == cases


async def test_private_and_metadata_hosts_are_refused(gql: GQL, runtime: Runtime) -> None:
    """Without EMAILKIT_SENDER_ALLOW_PRIVATE an API key cannot point a sender (and testSender) into the
    server's own network; cloud metadata addresses are refused even with it."""
    runtime.sender_allow_private = False
    cases = [
        (smtp_input(), "settings.url"),
        (
            {
                "name": "G",
                "type": "SENDGRID",
                "settings": {"baseUrl": "http://10.1.2.3"},
                "credentials": {"apiKey": "k"},
            },
            "settings.baseUrl",
        ),
        (
            {
                "name": "S",
                "type": "SES",
                "settings": {"region": "us-east-1", "endpointUrl": "http://localhost:4566"},
                "credentials": {"accessKeyId": "a", "secretAccessKey": "b"},
            },
            "settings.endpointUrl",
        ),
    ]
    for values, field in cases:
        out = await create(gql, values)
        assert [(e["field"], e["code"]) for e in out["userErrors"]] == [(field, "DESTINATION_REFUSED")], out
    public = await create(gql, smtp_input(name="Public") | {"settings": {"url": "smtp://93.184.215.14:25"}})
    assert public["userErrors"] == []
    runtime.sender_allow_private = True
    metadata = await create(
        gql,
        {
            "name": "M",
            "type": "SENDGRID",
            "settings": {"baseUrl": "http://169.254.169.254"},
            "credentials": {"apiKey": "k"},
        },
    )
    assert [(e["field"], e["code"]) for e in metadata["userErrors"]] == [
        ("settings.baseUrl", "DESTINATION_REFUSED")
    ]
    assert data(await gql(LIST))["senders"]["totalCount"] == 1


WARMUP = "warmup { startPerDay growthPercent ceilingPerDay startsOn } warmupToday { allowance sent remaining resetsAt }"


class _AnyText:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_TEXT = _AnyText()
CREATE_WARM = (
    f"mutation($i: CreateSenderInput!) {{ createSender(input: $i) {{ sender {{ id {WARMUP} }} {ERRORS} }} }}"
)
UPDATE_WARM = (
    f"mutation($i: UpdateSenderInput!) {{ updateSender(input: $i) {{ sender {{ id {WARMUP} }} {ERRORS} }} }}"
)


async def test_a_warm_up_plan_is_set_shown_replaced_and_removed(gql: GQL, db: Database) -> None:
    made = data(
        await gql(
            CREATE_WARM,
            {"i": smtp_input(warmup={"startPerDay": 500, "growthPercent": 50, "ceilingPerDay": 5000})},
        )
    )["createSender"]
    assert made["userErrors"] == []
    sender = made["sender"]
    today = datetime.now(UTC).date()
    # Starts the day it is set; nothing handed over yet.
    assert sender["warmup"] == {
        "startPerDay": 500,
        "growthPercent": 50.0,
        "ceilingPerDay": 5000,
        "startsOn": today.isoformat(),
    }
    assert sender["warmupToday"] == {
        "allowance": 500,
        "sent": 0,
        "remaining": 500,
        "resetsAt": datetime.combine(today + timedelta(days=1), datetime.min.time(), UTC).isoformat(),
    }
    # What workers counted today shows; a plan begun two days ago allows 500 * 1.5^2.
    async with db.transaction() as s:
        await s.execute(update(Sender).values(warmup_day=today, warmup_sent=300))
    started = (today - timedelta(days=2)).isoformat()
    moved = data(
        await gql(
            UPDATE_WARM,
            {
                "i": {
                    "id": sender["id"],
                    "warmup": {
                        "startPerDay": 500,
                        "growthPercent": 50,
                        "ceilingPerDay": 5000,
                        "startsOn": started,
                    },
                }
            },
        )
    )["updateSender"]
    assert moved["userErrors"] == [] and moved["sender"]["warmup"]["startsOn"] == started
    assert {k: moved["sender"]["warmupToday"][k] for k in ("allowance", "sent", "remaining")} == {
        "allowance": 1125,
        "sent": 300,
        "remaining": 825,
    }
    # Omitted: the plan stays; null: it goes.
    kept = data(await gql(UPDATE_WARM, {"i": {"id": sender["id"], "name": "Renamed"}}))["updateSender"]
    assert kept["sender"]["warmup"] == moved["sender"]["warmup"]
    gone = data(await gql(UPDATE_WARM, {"i": {"id": sender["id"], "warmup": None}}))["updateSender"]
    assert (
        gone["userErrors"] == []
        and gone["sender"]["warmup"] is None
        and gone["sender"]["warmupToday"] is None
    )
    async with db.session() as s:
        row = (await s.execute(select(Sender))).scalar_one()
        assert (row.warmup_start_per_day, row.warmup_starts_on) == (None, None)


async def test_bad_warm_up_plans_are_user_errors_and_change_nothing(gql: GQL, db: Database) -> None:
    good = {"startPerDay": 100, "growthPercent": 20, "ceilingPerDay": 1000}
    sender_id = data(await gql(CREATE_WARM, {"i": smtp_input(warmup=good)}))["createSender"]["sender"]["id"]
    for bad, field in (
        ({**good, "startPerDay": 0}, "warmup.startPerDay"),
        ({**good, "growthPercent": -5}, "warmup.growthPercent"),
        ({**good, "growthPercent": 1001}, "warmup.growthPercent"),
        ({**good, "ceilingPerDay": 99}, "warmup.ceilingPerDay"),
    ):
        created = data(await gql(CREATE_WARM, {"i": smtp_input(name="Other", warmup=bad)}))["createSender"]
        assert created["sender"] is None
        assert created["userErrors"] == [{"field": field, "code": "OUT_OF_RANGE", "message": ANY_TEXT}]
        updated = data(await gql(UPDATE_WARM, {"i": {"id": sender_id, "warmup": bad}}))["updateSender"]
        assert [(e["field"], e["code"]) for e in updated["userErrors"]] == [(field, "OUT_OF_RANGE")]
    async with db.session() as s:
        rows = (await s.execute(select(Sender))).scalars().all()
        assert [(r.warmup_start_per_day, r.warmup_ceiling_per_day) for r in rows] == [(100, 1000)]


async def test_only_admin_keys_set_a_warm_up_plan(gql: GQL, db: Database) -> None:
    sender_id = (await create(gql, smtp_input()))["sender"]["id"]
    plan = {"startPerDay": 10, "growthPercent": 10, "ceilingPerDay": 10}
    for role in (Role.EDITOR, Role.VIEWER):
        key = await make_key(db, role, f"warm-{role.value.lower()}")
        body = await gql(UPDATE_WARM, {"i": {"id": sender_id, "warmup": plan}}, key=key)
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    async with db.session() as s:
        assert (await s.execute(select(Sender.warmup_start_per_day))).scalar_one() is None
