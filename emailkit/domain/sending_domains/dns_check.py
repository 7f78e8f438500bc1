"""Looking a sending domain's records up (dnspython) and judging each one: FOUND, MISSING, WRONG (with what was
seen), or TIMEOUT / ERROR when the DNS gave no usable answer. A lookup never raises: a server that is down or
slow is a status of the records it could not answer for.

The nameservers are the system's (/etc/resolv.conf) unless EMAILKIT_DNS_NAMESERVERS names others (tests, split
horizons, a resolver that does not cache). No cache of our own: a check after publishing must see the change.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.domain.sending_domains.records import ExpectedRecord, RecordKind


class RecordStatus(enum.StrEnum):
    # Not looked up yet (or not since the record was added to what is expected).
    UNCHECKED = "UNCHECKED"
    FOUND = "FOUND"
    MISSING = "MISSING"
    WRONG = "WRONG"
    # No answer within EMAILKIT_DNS_TIMEOUT.
    TIMEOUT = "TIMEOUT"
    # The servers answered with a failure (SERVFAIL, REFUSED) or could not be reached.
    ERROR = "ERROR"


# These say nothing about the record itself: a domain keeps its verified state through them.
INCONCLUSIVE = frozenset({RecordStatus.TIMEOUT, RecordStatus.ERROR})


@dataclass(frozen=True)
class RecordCheck:
    kind: RecordKind
    name: str
    type: str
    status: RecordStatus
    # The record(s) found at the name, as published.
    seen: list[str] = field(default_factory=list)
    detail: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "name": self.name,
            "type": self.type,
            "status": self.status.value,
            "seen": self.seen,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> RecordCheck:
        seen = data.get("seen")
        detail = data.get("detail")
        return cls(
            kind=RecordKind(str(data["kind"])),
            name=str(data["name"]),
            type=str(data["type"]),
            status=RecordStatus(str(data["status"])),
            seen=[str(s) for s in seen] if isinstance(seen, list) else [],
            detail=str(detail) if detail is not None else None,
        )


@dataclass(frozen=True)
class _Answer:
    values: list[str]
    status: RecordStatus | None = None  # MISSING, TIMEOUT or ERROR when there are no values to judge
    detail: str | None = None


def resolver(config: DomainConfig) -> dns.asyncresolver.Resolver:
    if config.nameservers:
        res = dns.asyncresolver.Resolver(configure=False)
        res.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in config.nameservers]
    else:
        res = dns.asyncresolver.Resolver()
    # One budget per lookup, retries included; a server that answers nothing is given up on in it.
    res.lifetime = config.dns_timeout
    res.timeout = min(config.dns_timeout, 2.0)
    return res


def _text(rdata: object) -> str:
    strings = getattr(rdata, "strings", None)
    if strings is not None:
        # A long TXT record is published as several strings, read as one (RFC 7208 3.3, RFC 6376 3.6.2.2).
        return b"".join(strings).decode("utf-8", "replace")
    return str(rdata).rstrip(".").lower()


async def _lookup(res: dns.asyncresolver.Resolver, name: str, rdtype: str) -> _Answer:
    try:
        answer = await res.resolve(name, rdtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return _Answer([], RecordStatus.MISSING)
    except dns.exception.Timeout:
        return _Answer([], RecordStatus.TIMEOUT, "no answer from the DNS servers in time")
    except dns.resolver.NoNameservers as exc:
        return _Answer([], RecordStatus.ERROR, f"the DNS servers answered with an error: {exc}")
    except (dns.exception.DNSException, OSError) as exc:
        return _Answer([], RecordStatus.ERROR, f"lookup failed: {exc}")
    return _Answer([_text(r) for r in answer])


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip().lower()] = "".join(value.split())
    return tags


def _judge_dkim(expected: ExpectedRecord, values: list[str]) -> tuple[RecordStatus, str | None]:
    keys = [_tags(v) for v in values]
    keys = [t for t in keys if "p" in t]
    if not keys:
        return RecordStatus.MISSING if not values else RecordStatus.WRONG, "no DKIM key (p=) at this name"
    for tags in keys:
        if tags.get("p") == expected.public_key and tags.get("k", "rsa").lower() == expected.key_type:
            return RecordStatus.FOUND, None
    return RecordStatus.WRONG, "the published key (p=) is not this domain's key"


def _judge_spf(values: list[str], include: str | None) -> tuple[RecordStatus, str | None]:
    spf = [v for v in values if v.lower().split(" ", 1)[0] == "v=spf1"]
    if not spf:
        return RecordStatus.MISSING, None
    if len(spf) > 1:
        return RecordStatus.WRONG, "more than one SPF record: receivers treat that as an error (RFC 7208 3.2)"
    if include:
        terms = {t.lower().lstrip("+") for t in spf[0].split()}
        if f"include:{include.lower()}" not in terms:
            return RecordStatus.WRONG, f"the SPF record does not include:{include}"
    return RecordStatus.FOUND, None


def _judge_dmarc(values: list[str]) -> tuple[RecordStatus, str | None]:
    dmarc = [v for v in values if v.replace(" ", "").upper().startswith("V=DMARC1")]
    if not dmarc:
        return RecordStatus.MISSING, None
    if len(dmarc) > 1:
        return RecordStatus.WRONG, "more than one DMARC record: receivers ignore them all (RFC 7489 6.6.3)"
    return RecordStatus.FOUND, None


def judge(
    expected: ExpectedRecord, values: list[str], config: DomainConfig
) -> tuple[RecordStatus, str | None]:
    if expected.kind in (RecordKind.DKIM, RecordKind.DKIM_ED25519):
        return _judge_dkim(expected, values)
    if expected.kind is RecordKind.SPF:
        return _judge_spf(values, config.spf_include)
    if expected.kind is RecordKind.DMARC:
        return _judge_dmarc(values)
    if expected.value in values:
        return RecordStatus.FOUND, None
    return RecordStatus.WRONG, f"points to {', '.join(values)} instead of {expected.value}"


async def check_records(expected: Sequence[ExpectedRecord], config: DomainConfig) -> list[RecordCheck]:
    """Each expected record as found in DNS, in the same order (the lookups run concurrently)."""
    res = resolver(config)
    answers = await asyncio.gather(*(_lookup(res, r.name, r.type) for r in expected))
    checks = []
    for record, answer in zip(expected, answers, strict=True):
        if answer.status is not None:
            status, detail = answer.status, answer.detail
        else:
            status, detail = judge(record, answer.values, config)
        seen = answer.values
        if record.kind is RecordKind.SPF:
            # The domain's other TXT records (site verifications, ...) are no business of this check.
            seen = [v for v in seen if v.lower().split(" ", 1)[0] == "v=spf1"]
        checks.append(RecordCheck(record.kind, record.name, record.type, status, seen, detail))
    return checks
