"""`emailkit bounce-mailbox` run as an operator would, against a throw-away Dovecot (tests/support/dovecot.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from emailkit.db.engine import Database
from emailkit.db.scope import workspace_scope
from emailkit.db.tables.senders import SenderType
from emailkit.db.tables.tenancy import DEFAULT_WORKSPACE_ID
from emailkit.domain.senders.store import SenderInput, create_sender
from emailkit.inbound.sender_mailboxes import SenderMailboxes
from emailkit.providers.senders import SenderProviderFactory
from tests.integration.test_bounce_mailbox import imap_server  # noqa: F401 (the module's Dovecot fixture)
from tests.integration.test_cli import (
    EMAILKIT,
    TIMEOUT,
    _base_env,
    assert_one_line_error,
    emailkit,
    stop_server,
)
from tests.integration.test_sender_mailboxes import mailbox_url
from tests.support.bounces import BOUNCE_DOMAIN, plain_mail
from tests.support.dovecot import PASSWORD, Dovecot
from tests.support.environment import TEST_SECRET


@pytest.fixture
def imap(imap_server: Dovecot) -> Dovecot:  # noqa: F811
    imap_server.empty()
    return imap_server


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **_base_env(tmp_path),
        "EMAILKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'mailbox.db'}",
        "EMAILKIT_SECRET_KEY": TEST_SECRET,
        "EMAILKIT_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
    }


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated database for the module (migrating takes seconds); each test gets a copy."""
    where = tmp_path_factory.mktemp("migrated")
    assert emailkit(where, _env(where), "migrate").returncode == 0
    return where / "mailbox.db"


@pytest.fixture
def env(tmp_path: Path, migrated: Path) -> dict[str, str]:
    shutil.copyfile(migrated, tmp_path / "mailbox.db")
    return _env(tmp_path)


def test_once_needs_a_mailbox(tmp_path: Path, env: dict[str, str]) -> None:
    # Neither the environment's mailbox nor any sender's: nothing to read. (Running on, it would wait for a
    # sender to be given one.)
    assert_one_line_error(
        emailkit(tmp_path, env, "bounce-mailbox", "--once"),
        "no mailbox to read",
        "EMAILKIT_BOUNCE_MAILBOX_URL",
        "settings.bounceMailbox",
    )


def test_a_bad_url_is_named_without_its_password(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["EMAILKIT_BOUNCE_MAILBOX_URL"] = f"pop3://me:{PASSWORD}@mail.example.org/INBOX"
    result = emailkit(tmp_path, env, "bounce-mailbox", "--once")
    assert_one_line_error(result, "EMAILKIT_BOUNCE_MAILBOX_URL", "imaps://")
    assert PASSWORD not in result.stdout + result.stderr


def test_a_wrong_password_exits_with_a_clear_error(
    tmp_path: Path, env: dict[str, str], imap: Dovecot
) -> None:
    wrong = "Wrong-pw-for-the-box"
    env["EMAILKIT_BOUNCE_MAILBOX_URL"] = imap.url(password=wrong)
    result = emailkit(tmp_path, env, "bounce-mailbox")
    assert result.returncode == 2
    assert_one_line_error(result, "refused the login of 'bounces@example.org'", "Authentication failed")
    assert wrong not in result.stdout + result.stderr


def test_once_moves_what_is_no_report_and_says_so(tmp_path: Path, env: dict[str, str], imap: Dovecot) -> None:
    imap.append(plain_mail())
    env["EMAILKIT_BOUNCE_MAILBOX_URL"] = imap.url(query="processed=Done&unhandled=Other")
    result = emailkit(tmp_path, env, "bounce-mailbox", "--once")
    assert result.returncode == 0, result.stderr
    assert "0 processed (0 events recorded), 1 unhandled, 0 left to retry" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert (imap.count("INBOX"), imap.count("Done"), imap.count("Other")) == (0, 0, 1)


def test_it_runs_until_sigterm(tmp_path: Path, env: dict[str, str], imap: Dovecot) -> None:
    env["EMAILKIT_BOUNCE_MAILBOX_URL"] = imap.url()
    log = tmp_path / "bounce-mailbox.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(EMAILKIT), "bounce-mailbox"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + TIMEOUT
        # Connected and logged in: the reader names the mode it waits in.
        while "(IDLE)" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bounce-mailbox did not start:\n{log.read_text()}")
            time.sleep(0.1)
    finally:
        returncode = stop_server(proc)
    text = log.read_text()
    assert returncode == 0, text
    assert "reading imap://bounces%40example.org@127.0.0.1" in text
    assert PASSWORD not in text


def test_once_reads_the_senders_mailboxes(tmp_path: Path, env: dict[str, str], imap: Dovecot) -> None:
    """No EMAILKIT_BOUNCE_MAILBOX_URL: a sender's mailbox (its password unsealed by the command) is read."""

    async def make_sender() -> None:
        db = Database(env["EMAILKIT_DATABASE_URL"])
        try:
            with workspace_scope(DEFAULT_WORKSPACE_ID):
                async with db.transaction() as session:
                    await create_sender(
                        session,
                        SenderInput(
                            name="Brand",
                            type=SenderType.OUTBOX,
                            settings={
                                "bounceMailbox": {"url": mailbox_url(imap), "unhandledFolder": "Other"}
                            },
                            credentials={"mailboxPassword": PASSWORD},
                        ),
                        instance_secret=TEST_SECRET,
                        build=SenderProviderFactory(outbox_root=tmp_path / "outbox"),
                        mailboxes=SenderMailboxes(),
                        allow_private=True,
                    )
        finally:
            await db.dispose()

    asyncio.run(make_sender())
    imap.append(plain_mail())
    result = emailkit(tmp_path, env, "bounce-mailbox", "--once")
    assert result.returncode == 0, result.stderr
    assert f"imap://bounces%40example.org@127.0.0.1:{imap.port}/INBOX: 0 processed" in result.stderr
    assert "1 unhandled" in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert (imap.count("INBOX"), imap.count("Other")) == (0, 1)
