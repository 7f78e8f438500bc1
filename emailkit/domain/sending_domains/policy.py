"""The rule EMAILKIT_REQUIRE_VERIFIED_DOMAINS sets: mail goes out only From a verified sending domain of its
workspace (or of a parent domain, which DMARC's relaxed alignment accepts), or From EMAILKIT_DKIM_DOMAIN, which
counts as verified everywhere so that set-ups from before sending domains keep working.

Checked where a From address is set (createCampaign, updateCampaign, sendTransactional, a flow's SEND step when
it is published) and again where mail is about to go (startCampaign, scheduleCampaign, the ticker starting a scheduled
campaign), since a domain can be deleted or fail its check in between.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.tables.sending import Campaign
from emailkit.domain.errors import DomainError, ErrorCode
from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.domain.sending_domains.names import ascii_domain, parents
from emailkit.domain.sending_domains.service import verified_domains


def _covered(domain: str, verified: set[str]) -> bool:
    return any(candidate in verified for candidate in parents(domain))


async def require_verified_from(
    session: AsyncSession, from_email: str | None, config: DomainConfig, field: str = "fromEmail"
) -> None:
    """Nothing when the rule is off or the address's domain is covered; DOMAIN_NOT_VERIFIED otherwise. An
    address without a domain is left to the caller's own validation."""
    if not config.require_verified or not from_email or "@" not in from_email:
        return
    domain = ascii_domain(from_email.rpartition("@")[2])
    if domain is None:
        return
    if _covered(domain, set(config.trusted_domains)):
        return
    if _covered(domain, set(await verified_domains(session))):
        return
    raise DomainError.single(
        ErrorCode.DOMAIN_NOT_VERIFIED,
        f"{domain} is not a verified sending domain of this workspace: add it (createSendingDomain), publish "
        "its DNS records and verify it (verifySendingDomain), or send from a verified domain",
        field,
    )


async def require_verified_campaign(session: AsyncSession, campaign_id: int, config: DomainConfig) -> None:
    """The rule for a campaign about to start or be scheduled (a missing campaign is left to the caller)."""
    if not config.require_verified:
        return
    from_email = await session.scalar(select(Campaign.from_email).where(Campaign.id == campaign_id))
    await require_verified_from(session, from_email, config)
