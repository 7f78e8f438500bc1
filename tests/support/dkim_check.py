"""Checking DKIM signatures in tests with dkimpy: the DNS answers it is given (from the keys, or asked of a DNS
server on loopback), each signature's tags, and every signature of a message verified."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import dkim
import dns.nameserver
import dns.resolver

from emailkit.db.tables.sending_domains import SendingDomain
from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.domain.sending_domains.records import expected_records


class Dns:
    """The DKIM records dkimpy is answered with (its dnsfunc): name -> TXT value."""

    def __init__(self) -> None:
        self.txt: dict[str, str] = {}

    def add_domain(self, row: SendingDomain) -> None:
        for record in expected_records(row, DomainConfig()):
            if record.kind.startswith("DKIM"):
                self.txt[record.name] = record.value

    def __call__(self, name: bytes | str, timeout: int = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        return self.txt.get(text.rstrip("."), "").encode()


def dns_lookup(port: int) -> Callable[..., bytes]:
    """dkimpy's DNS lookups (its dnsfunc), sent to the DNS server on 127.0.0.1:port."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns.nameserver.Do53Nameserver("127.0.0.1", port)]
    resolver.lifetime = 2

    def lookup(name: bytes | str, timeout: int = 5) -> bytes:
        text = name.decode() if isinstance(name, bytes) else name
        try:
            answer = resolver.resolve(text, "TXT")
        except dns.resolver.NXDOMAIN:
            return b""
        return b"".join(b"".join(r.strings) for r in answer)

    return lookup


def signatures(raw: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature, top first."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    found = []
    for value in message.get_all("DKIM-Signature") or []:
        flat = "".join(str(value).split())
        found.append({k: v for k, _, v in (p.partition("=") for p in flat.split(";") if p)})
    return found


def verify_all(raw: bytes, dns: Dns | Callable[..., bytes]) -> list[tuple[str, str]]:
    """(d=, a=) of each signature, having checked every one with dkimpy."""
    found = signatures(raw)
    checker = dkim.DKIM(raw)
    for index in range(len(found)):
        assert checker.verify(idx=index, dnsfunc=dns), (index, found[index])
    return [(s["d"], s["a"]) for s in found]
