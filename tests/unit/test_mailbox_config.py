"""The bounce mailbox's configuration: from EMAILKIT_BOUNCE_MAILBOX_URL, or from a sender's settings."""

from __future__ import annotations

import pytest

from emailkit.domain.ports.provider import SenderConfigError
from emailkit.inbound.mailbox_config import MailboxConfig, Security

PW = "p@ss:w/rd"
PWQ = "p%40ss%3Aw%2Frd"


def test_imaps_with_defaults() -> None:
    config = MailboxConfig.from_url("imaps://bounces%40example.org:p%40ss%3Aw%2Frd@imap.example.org")
    assert config == MailboxConfig(
        host="imap.example.org",
        port=993,
        security=Security.TLS,
        username="bounces@example.org",
        password=PW,
        folder="INBOX",
        processed_folder="Processed",
    )
    assert config.unhandled == "Processed"
    assert PW not in repr(config) and "p%40ss" not in config.describe()
    assert config.describe() == "imaps://bounces%40example.org@imap.example.org:993/INBOX"


def test_imap_is_starttls_unless_told_otherwise() -> None:
    config = MailboxConfig.from_url("imap://u:pw@mail.local/Bounces?processed=Bounces.Done&unhandled=Other")
    assert (config.security, config.port, config.folder) == (Security.STARTTLS, 143, "Bounces")
    assert (config.processed_folder, config.unhandled) == ("Bounces.Done", "Other")
    plain = MailboxConfig.from_url("imap://u:pw@127.0.0.1:1143/INBOX?tls=none&verify=false&cafile=/ca.pem")
    assert (plain.security, plain.port, plain.verify, plain.cafile) == (Security.NONE, 1143, False, "/ca.pem")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"pop3://u:{PWQ}@host/INBOX", "scheme"),
        (f"imaps://u:{PWQ}@/INBOX", "no host"),
        ("imaps://host/INBOX", "no user"),
        (f"imaps://u:{PWQ}@host/INBOX?tls=none", "TLS from the start"),
        (f"imap://u:{PWQ}@host/INBOX?tls=tls", "imaps://"),
        (f"imap://u:{PWQ}@host/INBOX?tls=maybe", "starttls or none"),
        (f"imaps://u:{PWQ}@host/INBOX?verify=perhaps", "verify"),
        (f"imaps://u:{PWQ}@host/INBOX?procesed=Done", "unknown option 'procesed'"),
        (f"imaps://u:{PWQ}@host/INBOX?processed=INBOX", "must differ"),
        (f"imaps://u:{PWQ}@host:99999/INBOX", "not a URL"),
    ],
)
def test_bad_urls_are_refused_without_repeating_the_password(url: str, says: str) -> None:
    with pytest.raises(SenderConfigError) as raised:
        MailboxConfig.from_url(url)
    assert raised.value.field == "url"
    assert says in raised.value.message
    assert PW not in str(raised.value) and PWQ not in str(raised.value)


def test_from_a_senders_settings_and_credentials() -> None:
    settings = {"bounceMailbox": {"url": "imaps://bounces@imap.example.org/INBOX", "processedFolder": "Done"}}
    config = MailboxConfig.from_sender(settings, {"mailboxPassword": PW})
    assert config is not None
    assert (config.username, config.password, config.processed_folder) == ("bounces", PW, "Done")
    assert MailboxConfig.from_sender({"url": "smtp://relay"}, {}) is None


@pytest.mark.parametrize(
    ("settings", "credentials", "field"),
    [
        ({"bounceMailbox": "imaps://u@h/INBOX"}, {"mailboxPassword": PW}, "bounceMailbox"),
        ({"bounceMailbox": {"url": "http://u@h/"}}, {"mailboxPassword": PW}, "bounceMailbox.url"),
        ({"bounceMailbox": {"url": "imaps://u@h/INBOX"}}, {}, "mailboxPassword"),
        # In the settings (which the API shows) a password is refused, even with one in the credentials.
        (
            {"bounceMailbox": {"url": f"imaps://u:{PWQ}@h/INBOX"}},
            {"mailboxPassword": PW},
            "bounceMailbox.url",
        ),
        (
            {"bounceMailbox": {"url": "imaps://u@h/INBOX?cafile=/etc/shadow"}},
            {"mailboxPassword": PW},
            "bounceMailbox.url",
        ),
        (
            {"bounceMailbox": {"url": "imaps://u@h/INBOX", "folder": "x"}},
            {"mailboxPassword": PW},
            "bounceMailbox.folder",
        ),
        (
            {"bounceMailbox": {"url": "imaps://u@h/INBOX", "processedFolder": "INBOX"}},
            {"mailboxPassword": PW},
            "bounceMailbox.processedFolder",
        ),
    ],
)
def test_bad_sender_settings_name_their_field(
    settings: dict[str, object], credentials: dict[str, str], field: str
) -> None:
    with pytest.raises(SenderConfigError) as raised:
        MailboxConfig.from_sender(settings, credentials)
    assert raised.value.field == field
