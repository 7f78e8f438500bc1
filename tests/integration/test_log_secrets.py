"""Secrets never reach the logs: a whole campaign, sent through an SMTP sender with a password (AUTH after
STARTTLS, against a real SMTP server on loopback), driven through the API with an API key, by an app with its
secret key set, logged at DEBUG with no secret given to the log scrubber: none of the three appears, and
neither does any recipient's address."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from tests.e2e.embedded import Api, embedded_app
from tests.e2e.test_embedded_sending import STATUS, setup_campaign, wait_until
from tests.integration.test_provider_smtp_security_and_url import self_signed
from tests.integration.test_senders_workers import CREATE_SENDER, UPDATE_CAMPAIGN
from tests.support.environment import TEST_SECRET
from tests.support.factories import make_key
from tests.support.logs import captured_logs, json_lines
from tests.support.smtp_provider import Sink, smtp_server

PASSWORD = "smtp-pass-7f3a9c1e-visible-nowhere"
RECIPIENTS = 25


def _check_password(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and data.login == b"mailer" and data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_with_auth(tmp_path: Path) -> Iterator[tuple[int, Sink]]:
    """An SMTP server requiring STARTTLS then AUTH, on its own event loop thread (the app runs on another)."""
    server_context, _ = self_signed(tmp_path)
    sink = Sink()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    port: list[int] = []
    stop = asyncio.Event()

    async def serve() -> None:
        async with smtp_server(
            sink,
            tls_context=server_context,
            require_starttls=True,
            auth_required=True,
            authenticator=_check_password,
        ) as bound:
            port.append(bound)
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30)
    try:
        yield port[0], sink
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


def _admin_key(tmp_path: Path) -> str:
    async def make() -> str:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'emailkit.db'}")
        try:
            return await make_key(db, Role.ADMIN, "ops")
        finally:
            await db.dispose()

    return asyncio.run(make())


def test_a_campaign_logged_at_debug_shows_no_secret_and_no_address(tmp_path: Path) -> None:
    with smtp_with_auth(tmp_path) as (port, sink), captured_logs(level="DEBUG") as out:
        with embedded_app(
            tmp_path, public_url="https://mail.example.com", batch_size=10, sender_allow_private=True
        ) as api:
            campaign_id = setup_campaign(api, RECIPIENTS)
            admin = Api(api.client, _admin_key(tmp_path), api.outbox)
            sender = admin(
                CREATE_SENDER,
                {
                    "i": {
                        "name": "Relay",
                        "type": "SMTP",
                        "settings": {"url": f"smtp://127.0.0.1:{port}?tls=starttls&verify=false&timeout=10"},
                        "credentials": {"username": "mailer", "password": PASSWORD},
                    }
                },
            )["createSender"]
            assert sender["userErrors"] == []
            updated = api(UPDATE_CAMPAIGN, {"i": {"id": campaign_id, "senderId": sender["sender"]["id"]}})
            assert updated["updateCampaign"]["userErrors"] == []
            started = api(
                "mutation Launch($i: CampaignIdInput!) { startCampaign(input: $i) { userErrors { code } } }",
                {"i": {"id": campaign_id}},
            )
            assert started["startCampaign"]["userErrors"] == []
            wait_until(lambda: api(STATUS, {"id": campaign_id})["campaign"]["status"] == "FINISHED")
            keys = (api.key, admin.key)
    assert sorted(sink.recipients()) == sorted(f"p{i}@example.com" for i in range(RECIPIENTS))
    assert all(p.session is None or p.session.authenticated for p in sink.protocols)
    text = out.getvalue()
    events = json_lines(text)
    # The logs are the campaign's: its requests, operations and batches, with their context.
    [launched] = [e for e in events if e.get("operation") == "Launch"]
    assert launched["operation_type"] == "mutation" and len(launched["request_id"]) == 32
    batches = [e for e in events if e.get("job") == "send_campaign_batch"]
    assert {e["batch"] for e in batches} == {1, 2, 3}, batches
    # The batch's outcome names its campaign too.
    assert {e["campaign"] for e in batches if e["event"].startswith("batch ")} == {1}
    for secret in (*keys, PASSWORD, TEST_SECRET):
        assert secret not in text
    for i in range(RECIPIENTS):
        assert f"p{i}@example.com" not in text
