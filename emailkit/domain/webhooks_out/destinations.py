"""Where webhooks may go: the SSRF rule, checked when an endpoint is saved and again at every connection.

An endpoint URL is chosen by an API caller, and emailkit's workers sit inside someone's network: a URL naming
``localhost``, a private address or a cloud metadata service would turn the deliverer into a way to reach
them. So a destination is refused when its host is, or resolves to, any address that is not public: loopback,
private (RFC 1918, unique-local IPv6), link-local, shared (CGNAT), multicast, reserved or unspecified, and always
the metadata services (169.254.169.254, fd00:ec2::254 and their kin). A name can change its answer after it was
checked (DNS rebinding), so the connection resolves again, checks every answer and connects to the checked
address itself (``providers.webhook_client``); the name stays the TLS server name and the Host header.

``EMAILKIT_WEBHOOK_ALLOW_PRIVATE=true`` lifts the rule for development and tests (a receiver on this machine or
in the same private network); the metadata addresses stay refused even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeAlias
from urllib.parse import quote, urlsplit

import idna

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH: Final = 2048

METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean…
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)


class InvalidUrl(ValueError):
    """Not a URL a webhook can be sent to (scheme, host, credentials, length)."""


class DestinationRefused(Exception):
    """The destination is, or resolves to, an address webhooks may not reach."""


@dataclass(frozen=True)
class Target:
    """A checked URL, cut into what a connection needs."""

    scheme: str
    # ASCII (IDNA) host name or IP literal, without brackets.
    host: str
    port: int
    # Path and query, as sent in the request line.
    target: str
    # The Host header: the host, and the port when it is not the scheme's default.
    host_header: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def _ascii_host(host: str) -> str:
    try:
        host.encode("ascii")
        return host.lower()
    except UnicodeEncodeError:
        pass
    try:
        return idna.encode(host, uts46=True).decode()
    except idna.IDNAError as exc:
        raise InvalidUrl(f"invalid host name: {exc}") from None


def parse_url(url: str) -> Target:
    """The parts of an endpoint URL, or InvalidUrl saying what is wrong with it."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidUrl(f"longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise InvalidUrl("contains whitespace or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidUrl("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidUrl("credentials in the URL are not supported")
    try:
        port = parts.port
    except ValueError:
        raise InvalidUrl("invalid port") from None
    if not parts.hostname:
        raise InvalidUrl("has no host")
    host = _ascii_host(parts.hostname)
    port = port or (443 if parts.scheme == "https" else 80)
    default = (parts.scheme, port) in (("http", 80), ("https", 443))
    shown = f"[{host}]" if ":" in host else host
    # The request line is ASCII: other characters are percent-encoded, existing escapes kept.
    target = quote(
        (parts.path or "/") + (f"?{parts.query}" if parts.query else ""), safe="/?&=%:;@!$'()*+,~-._"
    )
    return Target(parts.scheme, host, port, target, shown if default else f"{shown}:{port}")


def _unwrapped(ip: IPAddress) -> IPAddress:
    # An IPv4 address inside IPv6 (::ffff:127.0.0.1, 6to4) reaches the IPv4 host: judge that one.
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
    return ip


def refusal(ip: IPAddress, *, allow_private: bool) -> str | None:
    """Why `ip` may not receive webhooks, or None when it may."""
    ip = _unwrapped(ip)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    for test, what in (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved, "a reserved address"),
    ):
        if test:
            return what
    return None if ip.is_global else "not a public address"


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


Resolver: TypeAlias = Callable[[str, int], Awaitable[list[str]]]


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (raises OSError when it gives none)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# Replaced in tests (a name that resolves to 127.0.0.1 without a DNS server).
resolve: Resolver = system_resolve


def _check(host: str, ip: IPAddress, *, allow_private: bool) -> IPAddress:
    why = refusal(ip, allow_private=allow_private)
    if why is not None:
        named = str(ip) if host == str(ip) else f"{host} resolves to {ip},"
        raise DestinationRefused(f"{named} {why}: webhooks are not sent there")
    return ip


async def connectable(host: str, port: int, *, allow_private: bool) -> list[IPAddress]:
    """The addresses to connect to for `host`, every one of them checked; DestinationRefused when any answer is
    refused (a name with one private answer among public ones is refused whole), OSError when none resolves."""
    literal = ip_literal(host)
    if literal is not None:
        return [_check(host, literal, allow_private=allow_private)]
    answers = await resolve(host, port)
    if not answers:
        raise OSError(f"{host} has no address")
    return [_check(host, ipaddress.ip_address(a), allow_private=allow_private) for a in answers]


async def check_endpoint_url(url: str, *, allow_private: bool) -> Target:
    """The check of an endpoint's URL when it is saved: InvalidUrl or DestinationRefused, else its parts.

    A name that does not resolve now is accepted: its deliveries fail (and say why) until it does, and every
    connection checks its answers anyway.
    """
    target = parse_url(url)
    try:
        await connectable(target.host, target.port, allow_private=allow_private)
    except OSError:
        pass
    return target
