"""Where ``emailkit bounce-mailbox`` reads bounces from: one IMAP mailbox, from a URL or a sender's settings.

``imaps://user:password@host:993/INBOX?processed=Processed`` (TLS from the start, port 993 by default) or
``imap://user:password@host/INBOX`` (STARTTLS, required, port 143; ``?tls=none`` for a plain connection to a
server on the same machine). Options: ``processed`` (the folder handled messages move to, default
``Processed``), ``unhandled`` (where messages that are no report about one of our deliveries go; default: the
processed folder), ``verify=false`` (skip certificate checks), ``cafile`` (trust this CA bundle instead).
The user name and password are percent-encoded in the URL, as in any URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from emailkit.domain.ports.provider import SenderConfigError

DEFAULT_PROCESSED = "Processed"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_OPTIONS = {"processed", "unhandled", "tls", "verify", "cafile"}


class Security(StrEnum):
    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"


@dataclass(frozen=True)
class MailboxConfig:
    host: str
    port: int
    security: Security
    username: str
    # Kept out of repr so that no log line or traceback shows it.
    password: str = field(repr=False)
    folder: str = "INBOX"
    processed_folder: str = DEFAULT_PROCESSED
    # None: the processed folder.
    unhandled_folder: str | None = None
    verify: bool = True
    cafile: str | None = None

    @property
    def unhandled(self) -> str:
        return self.unhandled_folder or self.processed_folder

    def describe(self) -> str:
        """The mailbox as a URL without its password, for logs and messages."""
        scheme = "imaps" if self.security is Security.TLS else "imap"
        return f"{scheme}://{quote(self.username, safe='')}@{self.host}:{self.port}/{self.folder}"

    @classmethod
    def from_url(cls, url: str, *, field_name: str = "url") -> MailboxConfig:
        """Raises :class:`SenderConfigError` (``field_name``) with a message that never repeats the URL, since
        the URL holds the password."""

        def bad(message: str) -> SenderConfigError:
            return SenderConfigError(field_name, message)

        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise bad("not a URL such as imaps://user:password@imap.example.com/INBOX") from None
        if parts.scheme not in ("imap", "imaps"):
            raise bad("the scheme must be imaps:// (TLS) or imap:// (STARTTLS, or ?tls=none)")
        if not parts.hostname:
            raise bad("the URL names no host")
        if not parts.username:
            raise bad("the URL names no user (imaps://user:password@host/INBOX)")
        options = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise bad(f"unknown option {unknown[0]!r} (known: {', '.join(sorted(_OPTIONS))})")
        security = _security(parts.scheme, options.get("tls"), bad)
        verify_text = options.get("verify", "true").lower()
        if verify_text not in _TRUE | _FALSE:
            raise bad("verify must be true or false")
        folder = unquote(parts.path.lstrip("/")) or "INBOX"
        processed = options.get("processed", DEFAULT_PROCESSED).strip()
        unhandled = options.get("unhandled", "").strip() or None
        if not processed:
            raise bad("processed must name a folder")
        if folder in (processed, unhandled):
            raise bad("the folder read and the folders messages move to must differ")
        return cls(
            host=parts.hostname,
            port=port or (993 if security is Security.TLS else 143),
            security=security,
            username=unquote(parts.username),
            password=unquote(parts.password or ""),
            folder=folder,
            processed_folder=processed,
            unhandled_folder=unhandled,
            verify=verify_text in _TRUE,
            cafile=options.get("cafile") or None,
        )

    @classmethod
    def from_sender(cls, settings: Mapping[str, Any], credentials: Mapping[str, str]) -> MailboxConfig | None:
        """A sender's bounce mailbox: settings ``bounceMailbox: {url, processedFolder?, unhandledFolder?}``
        (the URL without its password), credentials ``mailboxPassword``. None when the sender has none."""
        section = settings.get("bounceMailbox")
        if section is None:
            return None
        if not isinstance(section, Mapping) or not isinstance(section.get("url"), str):
            raise SenderConfigError("bounceMailbox", "must be an object with a url (imaps://user@host/INBOX)")
        unknown = sorted(set(section) - {"url", "processedFolder", "unhandledFolder"})
        if unknown:
            raise SenderConfigError(
                f"bounceMailbox.{unknown[0]}", "unknown key (allowed: url, processedFolder, unhandledFolder)"
            )
        config = cls.from_url(section["url"], field_name="bounceMailbox.url")
        # Settings are shown by the API: the password goes in the sealed credentials. And an API key must not
        # make the server read one of its own files as a CA bundle.
        if config.password:
            raise SenderConfigError(
                "bounceMailbox.url", "must not carry a password (it goes in credentials.mailboxPassword)"
            )
        if config.cafile is not None:
            raise SenderConfigError("bounceMailbox.url", "cafile is not allowed here; verify=false is")
        changes: dict[str, Any] = {}
        for key, attribute in (
            ("processedFolder", "processed_folder"),
            ("unhandledFolder", "unhandled_folder"),
        ):
            value = section.get(key)
            if value is not None:
                if not isinstance(value, str) or not value.strip() or value.strip() == config.folder:
                    raise SenderConfigError(
                        f"bounceMailbox.{key}", "must name a folder other than the one read"
                    )
                changes[attribute] = value.strip()
        password = credentials.get("mailboxPassword")
        if not password:
            raise SenderConfigError("mailboxPassword", "the mailbox needs a password")
        changes["password"] = password
        return replace(config, **changes)


def _security(scheme: str, tls: str | None, bad: Callable[[str], SenderConfigError]) -> Security:
    if scheme == "imaps":
        if tls not in (None, "tls"):
            raise bad("imaps:// is TLS from the start; use imap:// for tls=starttls or tls=none")
        return Security.TLS
    try:
        security = Security(tls or "starttls")
    except ValueError:
        raise bad("tls must be starttls or none with imap://") from None
    if security is Security.TLS:
        raise bad("use imaps:// for TLS from the start")
    return security
