"""What a sending domain may be called: a registrable-looking host name, stored lower-case in its ASCII (IDNA) form."""

from __future__ import annotations

import ipaddress
import re

import idna

from emailkit.domain.errors import DomainError, ErrorCode

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A top-level domain is letters, or an IDNA (xn--) label: never all digits, which is an address.
_TLD = re.compile(r"(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})")
MAX_LENGTH = 253


def _invalid(message: str) -> DomainError:
    return DomainError.single(ErrorCode.INVALID_DOMAIN, message, "domain")


def normalise_domain(text: str) -> str:
    """``text`` as stored and published (``Exämple.COM`` → ``xn--exmple-cua.com``); a DomainError
    (INVALID_DOMAIN, field ``domain``) naming what is wrong otherwise."""
    value = text.strip()
    if not value:
        raise _invalid("Give a domain name, e.g. example.com")
    if "@" in value or "/" in value or ":" in value:
        raise _invalid("Give the domain alone (example.com), not an address or a URL")
    if value.endswith("."):
        raise _invalid("Give the domain without the trailing dot")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        raise _invalid("An IP address is not a sending domain: give a domain name")
    try:
        ascii_form = idna.encode(value, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise _invalid(f"Not a valid domain name: {exc}") from None
    ascii_form = ascii_form.lower()
    if len(ascii_form) > MAX_LENGTH:
        raise _invalid(f"A domain name has at most {MAX_LENGTH} characters")
    labels = ascii_form.split(".")
    if len(labels) < 2:
        raise _invalid("Give a full domain name with its top-level domain, e.g. example.com")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise _invalid(
                f"{label!r} is not a valid label: letters, digits and inner hyphens, 1 to 63 characters"
            )
    if not _TLD.fullmatch(labels[-1]):
        raise _invalid(f"{labels[-1]!r} is not a top-level domain")
    return ascii_form


def ascii_domain(domain: str) -> str | None:
    """A From address's domain in the stored form, or None when it cannot be one (no exception: a caller
    matching a message's domain against the sending domains just finds no match)."""
    value = domain.strip().rstrip(".").lower()
    if value.isascii():
        return value
    try:
        return idna.encode(value, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        return None


def parents(domain: str) -> list[str]:
    """The domain and each parent with two labels or more, closest first: news.mail.example.com →
    [news.mail.example.com, mail.example.com, example.com]. DMARC's relaxed alignment accepts a signature of
    any of them (of the same organisational domain) for mail From the first."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(0, max(1, len(labels) - 1))]
