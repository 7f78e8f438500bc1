"""The DNS records a sending domain publishes, as emailkit expects to find them.

- DKIM: ``<selector>._domainkey.<domain>`` TXT ``v=DKIM1; k=rsa; p=<public key>`` (and the Ed25519 key's, RFC
  8463, under its own selector). Required: without it receivers cannot check our signatures.
- SPF: a TXT ``v=spf1 ...`` on the domain, which is the envelope sender of its mail (the Return-Path) unless a
  bounce domain takes that role. With a known sending service (EMAILKIT_SPF_INCLUDE, or the provider's own:
  amazonses.com for ses, sendgrid.net for sendgrid) it must ``include:`` it. Required.
- DMARC: ``_dmarc.<domain>`` TXT, a suggestion (``p=none`` reports without affecting delivery); any DMARC record
  the domain already has is accepted. Recommended, not required.
- Return path: with EMAILKIT_BOUNCE_DOMAIN, ``bounces.<domain>`` CNAME to it, so that a return path under the
  domain reaches the bounce server (and SPF/DMARC can align on the domain). Recommended, not required.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from emailkit.db.tables.sending_domains import SendingDomain
from emailkit.domain.sending_domains.config import DomainConfig

RETURN_PATH_LABEL = "bounces"


class RecordKind(enum.StrEnum):
    DKIM = "DKIM"
    DKIM_ED25519 = "DKIM_ED25519"
    SPF = "SPF"
    DMARC = "DMARC"
    RETURN_PATH = "RETURN_PATH"


@dataclass(frozen=True)
class ExpectedRecord:
    kind: RecordKind
    # "TXT" or "CNAME".
    type: str
    name: str
    value: str
    # A verified domain has every required record as expected.
    required: bool
    # DKIM: the key type (k=) and public key (p=) a published record must carry.
    key_type: str | None = None
    public_key: str | None = None


def dkim_value(key_type: str, public_key: str) -> str:
    return f"v=DKIM1; k={key_type}; p={public_key}"


def expected_records(row: SendingDomain, config: DomainConfig) -> list[ExpectedRecord]:
    domain = row.domain
    records = [
        ExpectedRecord(
            RecordKind.DKIM,
            "TXT",
            f"{row.selector}._domainkey.{domain}",
            dkim_value("rsa", row.public_key),
            required=True,
            key_type="rsa",
            public_key=row.public_key,
        )
    ]
    if row.ed25519_selector and row.ed25519_public_key:
        records.append(
            ExpectedRecord(
                RecordKind.DKIM_ED25519,
                "TXT",
                f"{row.ed25519_selector}._domainkey.{domain}",
                dkim_value("ed25519", row.ed25519_public_key),
                required=True,
                key_type="ed25519",
                public_key=row.ed25519_public_key,
            )
        )
    spf = f"v=spf1 include:{config.spf_include} ~all" if config.spf_include else "v=spf1 mx a ~all"
    records.append(ExpectedRecord(RecordKind.SPF, "TXT", domain, spf, required=True))
    rua = config.dmarc_rua or f"dmarc-reports@{domain}"
    records.append(
        ExpectedRecord(
            RecordKind.DMARC, "TXT", f"_dmarc.{domain}", f"v=DMARC1; p=none; rua=mailto:{rua}", required=False
        )
    )
    if config.bounce_domain:
        records.append(
            ExpectedRecord(
                RecordKind.RETURN_PATH,
                "CNAME",
                f"{RETURN_PATH_LABEL}.{domain}",
                config.bounce_domain.rstrip(".").lower(),
                required=False,
            )
        )
    return records
