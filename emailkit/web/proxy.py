"""The client's address and scheme behind trusted reverse proxies (EMAILKIT_TRUSTED_PROXIES).

Forwarding headers are believed only when the direct peer is a trusted proxy. The chain is then walked from
the right (the hop nearest to us) past every trusted proxy; the first address that is not one is the client.
Anything left of it was written by the client and is ignored, so a client cannot choose its own address by
sending ``X-Forwarded-For``.

``X-Forwarded-For`` is read when present, ``Forwarded`` (RFC 7239) otherwise: a proxy must set the header it
uses and not pass a client's copy of the other one through.

The result replaces the ASGI scope's ``client`` (and ``scheme``), so everything downstream that reads the
client address (the ``/subscribe`` per-IP limit, recorded opens, clicks and unsubscribes, logs) sees the client,
not the proxy.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# What a proxy may say the client used; WebSocket proxies sometimes say ws/wss.
_SECURE = {"https": True, "wss": True, "http": False, "ws": False}


def parse_address(text: str) -> IPAddress | None:
    """An IP address from a forwarding header value: ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:80``,
    ``2001:db8::1``; None for anything else (``unknown``, RFC 7239 obfuscated identifiers, garbage)."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
        text = host
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _split_quoted(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside quoted strings (RFC 7230 quoted-string, with backslash escapes)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return value


def parse_forwarded(values: Iterable[str]) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded`` header lines as a list of elements (left to right), parameter names lowered."""
    elements: list[dict[str, str]] = []
    for value in values:
        for element in _split_quoted(value, ","):
            if not element.strip():
                continue
            pairs: dict[str, str] = {}
            for pair in _split_quoted(element, ";"):
                name, eq, raw = pair.partition("=")
                if eq:
                    pairs[name.strip().lower()] = _unquote(raw)
            elements.append(pairs)
    return elements


@dataclass(frozen=True)
class Hop:
    """One entry of a forwarding chain: the address it names and, if the header says, the scheme it used."""

    address: IPAddress | None
    proto: str | None = None


def _forwarded_for_chain(headers: Sequence[tuple[bytes, bytes]]) -> list[Hop] | None:
    xff = [v.decode("latin-1") for n, v in headers if n == b"x-forwarded-for"]
    if xff:
        entries = [item for line in xff for item in line.split(",")]
        protos = [
            item.strip().lower()
            for n, v in headers
            if n == b"x-forwarded-proto"
            for item in v.decode("latin-1").split(",")
        ]
        hops = [Hop(parse_address(entry)) for entry in entries]
        if len(protos) == len(hops):
            # One proto per hop (each proxy appended): the client's is the one at its own position.
            return [Hop(h.address, p) for h, p in zip(hops, protos, strict=True)]
        if protos:
            # A single value (or a list that does not line up): set by the proxy nearest the client and
            # passed on, as most proxies do; it describes the client's connection.
            return [Hop(h.address, protos[-1]) for h in hops]
        return hops
    forwarded = [v.decode("latin-1") for n, v in headers if n == b"forwarded"]
    if forwarded:
        return [
            Hop(parse_address(e.get("for", "")), e.get("proto", "").lower() or None)
            for e in parse_forwarded(forwarded)
        ]
    return None


def _scheme(proto: str | None) -> str | None:
    """``https`` or ``http`` for a forwarded proto; None when absent or not one we know."""
    secure = _SECURE.get(proto or "")
    return None if secure is None else ("https" if secure else "http")


class TrustedProxies:
    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks = tuple(networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def resolve(
        self, peer: str | None, headers: Sequence[tuple[bytes, bytes]]
    ) -> tuple[str | None, str | None]:
        """The client address and scheme to use, or (None, None) to keep the connection's own."""
        if not self.trusts(parse_address(peer) if peer else None):
            return None, None
        chain = _forwarded_for_chain(headers)
        if not chain:
            return None, None
        client: Hop | None = None
        for hop in reversed(chain):
            if hop.address is None:
                # Unknown or obfuscated: nothing further left can be believed; the last trusted hop stands.
                break
            client = hop
            if not self.trusts(hop.address):
                break
        if client is None or client.address is None:
            return None, _scheme(chain[-1].proto)
        return str(client.address), _scheme(client.proto)


class ProxyHeadersMiddleware:
    """Rewrites ``scope["client"]`` and ``scope["scheme"]`` from the forwarding headers of trusted proxies.

    With no trusted proxies it changes nothing, and says once in the log when forwarding headers arrive, so
    an operator behind a proxy learns why every client has the proxy's address.
    """

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        self._hinted = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.proxies:
            if not self._hinted and scope["type"] != "lifespan":
                for name, _ in scope["headers"]:
                    if name == b"x-forwarded-for" or name == b"forwarded":
                        self._hint(scope)
                        break
            await self.app(scope, receive, send)
            return
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address, proto = self.proxies.resolve(client[0] if client else None, scope["headers"])
        if address is None and proto is None:
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        if address is not None:
            scope["client"] = (address, 0)
        if proto is not None:
            if scope["type"] == "websocket":
                scope["scheme"] = "wss" if proto == "https" else "ws"
            else:
                scope["scheme"] = proto
        await self.app(scope, receive, send)

    def _hint(self, scope: Scope) -> None:
        self._hinted = True
        client = scope.get("client")
        peer = client[0] if client else None
        suggestion = f"{peer}/128" if peer and ":" in peer else f"{peer}/32"
        log.warning(
            "a request from %s carries X-Forwarded-For/Forwarded, ignored because EMAILKIT_TRUSTED_PROXIES "
            "is empty; if %s is your reverse proxy, trust it (e.g. EMAILKIT_TRUSTED_PROXIES=%s)",
            peer,
            peer,
            suggestion,
        )
