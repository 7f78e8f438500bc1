"""A bounce mailbox per sender, against a throw-away Dovecot (tests/support/dovecot.py): checked by
createSender/updateSender, logged in to by testSender, and read by the mailbox fleet of `emailkit bounce-mailbox`,
which follows senders added, changed and removed while it runs. The password never shows: not in the API's
answers, not in the logs. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from emailkit.db.engine import Database
from emailkit.db.scope import no_scope
from emailkit.db.tables.audience import SuppressionReason
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.runtime import Runtime
from emailkit.inbound.handling import Receiver
from emailkit.inbound.mailbox import MailboxReader
from emailkit.inbound.mailbox_config import MailboxConfig
from emailkit.inbound.mailbox_fleet import MailboxFleet, senders_mailboxes
from emailkit.inbound.sender_mailboxes import SenderMailboxes
from emailkit.providers.senders import SenderProviderFactory
from emailkit.settings import Settings
from tests.api.test_senders_api import CREATE, DELETE, TEST, UPDATE
from tests.integration.test_bounce_mailbox import (
    imap_server,  # noqa: F401 (the module's Dovecot fixture)
    with_headers,
)
from tests.integration.test_bounce_server import suppressions
from tests.support.bounces import dsn, return_paths
from tests.support.dovecot import PASSWORD, USER, Dovecot
from tests.support.environment import TEST_SECRET
from tests.support.feedback import seed_sent_campaign
from tests.support.graphql import GQL, data
from tests.support.smtp_provider import Sink, smtp_server

A, B = "ada@example.net", "bob@example.net"
WRONG = "Wrong-pw-for-the-box"
WAIT = 30.0


@pytest.fixture
def imap(imap_server: Dovecot) -> Dovecot:  # noqa: F811
    imap_server.empty()
    return imap_server


@pytest.fixture
def runtime(db: Database, settings: Settings, tmp_path: Path) -> Runtime:
    """A runtime that builds senders' providers and checks their mailboxes, as build_runtime's does."""
    return Runtime(
        db=db,
        secret_key=TEST_SECRET,
        public_url=settings.public_url,
        sender_factory=SenderProviderFactory(outbox_root=tmp_path / "outbox"),
        sender_mailboxes=SenderMailboxes(probe_timeout=10),
        # Dovecot and the SMTP server listen on loopback.
        sender_allow_private=True,
    )


def mailbox_url(server: Dovecot) -> str:
    """The sender's bounceMailbox.url: the password is not in it, it goes in credentials."""
    return f"imap://{USER.replace('@', '%40')}@127.0.0.1:{server.port}/INBOX?tls=none"


def sender_input(
    name: str, smtp_port: int, server: Dovecot, *, password: str | None = PASSWORD, **mailbox: str
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "SMTP",
        "settings": {
            "url": f"smtp://127.0.0.1:{smtp_port}?tls=none&timeout=5",
            "bounceMailbox": {"url": mailbox_url(server), **mailbox},
        },
        "credentials": {"mailboxPassword": password} if password is not None else {},
    }


async def create(gql: GQL, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"i": values}))["createSender"]
    return out


async def until(condition: Callable[[], Any], what: str, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.1)


async def test_a_mailbox_on_a_private_host_is_refused_unless_allowed(
    gql: GQL, runtime: Runtime, imap: Dovecot
) -> None:
    runtime.sender_allow_private = False
    values = sender_input("Brand", 2525, imap)
    values["settings"]["url"] = "smtp://relay.example.org:2525?tls=none"
    made = await create(gql, values)
    assert [(e["field"], e["code"]) for e in made["userErrors"]] == [
        ("settings.bounceMailbox.url", "DESTINATION_REFUSED")
    ]


async def test_the_api_checks_the_mailbox_and_test_sender_logs_in(
    gql: GQL, imap: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []

    async def run(query: str, values: dict[str, Any]) -> dict[str, Any]:
        body = await gql(query, {"i": values})
        answers.append(json.dumps(body))
        return data(body)

    sink = Sink()
    async with smtp_server(sink) as smtp_port:
        made = (await run(CREATE, {**sender_input("Brand", smtp_port, imap), "credentials": None}))[
            "createSender"
        ]
        assert made["userErrors"] == [
            {
                "field": "credentials.mailboxPassword",
                "code": "INVALID_SENDER_CREDENTIALS",
                "message": "the mailbox needs a password",
            }
        ]
        in_url = sender_input("Brand", smtp_port, imap)
        in_url["settings"]["bounceMailbox"]["url"] = imap.url().split("?")[0] + "?tls=none"
        made = (await run(CREATE, in_url))["createSender"]
        assert [(e["field"], e["code"]) for e in made["userErrors"]] == [
            ("settings.bounceMailbox.url", "INVALID_SENDER_SETTINGS")
        ]
        folder = sender_input("Brand", smtp_port, imap, processedFolder="INBOX")
        made = (await run(CREATE, folder))["createSender"]
        assert [e["field"] for e in made["userErrors"]] == ["settings.bounceMailbox.processedFolder"]

        made = (await run(CREATE, sender_input("Brand", smtp_port, imap, processedFolder="Done")))[
            "createSender"
        ]
        assert made["userErrors"] == []
        sender = made["sender"]
        assert sender["settings"]["bounceMailbox"] == {"url": mailbox_url(imap), "processedFolder": "Done"}
        assert sender["hasCredentials"] is True
        tested = (await run(TEST, {"id": sender["id"]}))["testSender"]
        assert tested["ok"] is True, tested
        assert (
            tested["message"].startswith("250")
            and "bounce mailbox: imap://bounces%40example.org@" in tested["message"]
        )
        # Logging in changed nothing in the box: no folder made.
        assert imap.count("INBOX") == 0
        with imap.client() as client:
            assert [name for _, _, name in client.list_folders()] == ["INBOX"]

        # A wrong password: the configuration is fine, the server says no, and testSender says so.
        changed = (await run(UPDATE, {"id": sender["id"], "credentials": {"mailboxPassword": WRONG}}))[
            "updateSender"
        ]
        assert changed["userErrors"] == []
        refused = (await run(TEST, {"id": sender["id"]}))["testSender"]
        assert refused["ok"] is False
        assert (
            "bounce mailbox:" in refused["message"]
            and "refused the login of 'bounces@example.org'" in refused["message"]
        )
        assert "Authentication failed" in refused["message"]
        # Removing the mailbox: the password alone is refused.
        alone = (
            await run(
                UPDATE,
                {
                    "id": sender["id"],
                    "settings": {"url": f"smtp://127.0.0.1:{smtp_port}?tls=none"},
                    "credentials": {"mailboxPassword": PASSWORD},
                },
            )
        )["updateSender"]
        assert [e["field"] for e in alone["userErrors"]] == ["credentials.mailboxPassword"]
    assert sink.delivered == []
    for secret in (PASSWORD, WRONG):
        assert secret not in caplog.text
        assert not any(secret in answer for answer in answers)


@pytest.fixture
async def fleet(db: Database, caplog: pytest.LogCaptureFixture) -> AsyncIterator[MailboxFleet]:
    """The readers `emailkit bounce-mailbox` runs for the senders' mailboxes, refreshed every 0.2 s."""
    caplog.set_level(logging.DEBUG)
    receiver = Receiver(db, return_paths())

    def make_reader(config: MailboxConfig) -> MailboxReader:
        return MailboxReader(config, receiver, poll_seconds=1)

    async def load() -> dict[str, Any]:
        return dict(await senders_mailboxes(db, TEST_SECRET))

    fleet = MailboxFleet(make_reader, load, refresh_seconds=0.2)
    stop = asyncio.Event()
    # Outside the tests' workspace, as the command runs.
    with no_scope():
        task = asyncio.create_task(fleet.run(stop))
    try:
        yield fleet
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
    assert fleet.running == {}


async def refreshed(fleet: MailboxFleet) -> None:
    """Wait for a refresh that started after now."""
    fleet.refreshed.clear()
    await asyncio.wait_for(fleet.refreshed.wait(), WAIT)
    fleet.refreshed.clear()
    await asyncio.wait_for(fleet.refreshed.wait(), WAIT)


async def test_the_fleet_reads_each_senders_mailbox_and_follows_their_changes(
    db: Database, gql: GQL, imap: Dovecot, fleet: MailboxFleet, caplog: pytest.LogCaptureFixture
) -> None:
    seeded = await seed_sent_campaign(db, [A, B], provider="smtp")
    await refreshed(fleet)
    assert fleet.running == {}

    # A sender given a mailbox while the command runs: its reader starts, and a DSN delivered there is recorded.
    made = await create(gql, sender_input("Brand", 2525, imap))
    assert made["userErrors"] == []
    await refreshed(fleet)
    [key] = fleet.running
    imap.append(with_headers(dsn(A), Delivered_To=return_paths().bounce(seeded.deliveries[A])))

    async def suppressed(*emails: str) -> bool:
        return {e for _, e, _, _ in await suppressions(db)} == set(emails)

    await until(lambda: suppressed(A), "A's bounce recorded")
    assert await suppressions(db) == [(DEFAULT_WORKSPACE_ID, A, SuppressionReason.HARD_BOUNCE, "smtp")]
    await until(lambda: asyncio.to_thread(lambda: imap.count("Processed") == 1), "the DSN moved to Processed")

    # Changed (another processed folder): the reader is restarted with it.
    before = fleet.running[key]
    changed = data(
        await gql(
            UPDATE,
            {
                "i": {
                    "id": made["sender"]["id"],
                    "settings": sender_input("Brand", 2525, imap, processedFolder="Done")["settings"],
                }
            },
        )
    )["updateSender"]
    assert changed["userErrors"] == []
    await refreshed(fleet)
    assert fleet.running[key] is not before and fleet.running[key].source.config.processed_folder == "Done"
    assert before.task.done()
    imap.append(with_headers(dsn(B), Delivered_To=return_paths().bounce(seeded.deliveries[B])))
    await until(lambda: suppressed(A, B), "B's bounce recorded")
    await until(lambda: asyncio.to_thread(lambda: imap.count("Done") == 1), "the DSN moved to Done")

    # A wrong password: that reader says so in the log (without the password) and ends; the next refresh tries
    # it again.
    rotated = data(
        await gql(UPDATE, {"i": {"id": made["sender"]["id"], "credentials": {"mailboxPassword": WRONG}}})
    )["updateSender"]
    assert rotated["userErrors"] == []

    async def refusal_logged() -> bool:
        return "refused the login of 'bounces@example.org'" in caplog.text

    await until(refusal_logged, "the refusal logged")
    assert "sender " in caplog.text and "(Brand)" in caplog.text

    # Removed: its reader stops.
    deleted = data(await gql(DELETE, {"i": {"id": made["sender"]["id"]}}))["deleteSender"]
    assert deleted["userErrors"] == []
    await refreshed(fleet)
    assert fleet.running == {}
    assert PASSWORD not in caplog.text and WRONG not in caplog.text
