"""How sending domains are checked and what they must publish; set once by a composition root from settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DomainConfig:
    # DNS servers for verification as (address, port); empty: the system's resolver (/etc/resolv.conf).
    nameservers: tuple[tuple[str, int], ...] = ()
    # Seconds a record's lookup may take in all (retries included) before it is reported TIMEOUT.
    dns_timeout: float = 5.0
    # The SPF include: the sending service requires (amazonses.com, sendgrid.net, ...); None asks for any SPF.
    spf_include: str | None = None
    # The bounce server's domain (EMAILKIT_BOUNCE_DOMAIN): bounces.<domain> is to point at it.
    bounce_domain: str | None = None
    # Where DMARC aggregate reports go in the suggested record; None: dmarc-reports@<domain>.
    dmarc_rua: str | None = None
    # New domains get an Ed25519 key too (a second DKIM signature, RFC 8463).
    ed25519: bool = False
    # Campaigns (and transactional mail, flows) may only send From a verified sending domain.
    require_verified: bool = False
    # Domains that count as verified in every workspace: EMAILKIT_DKIM_DOMAIN, the environment's own key.
    trusted_domains: frozenset[str] = frozenset()
