"""A/B tests: the CampaignVariant, AbTest, VariantStats and AbTestStats types, and their request loaders.

`Campaign.variants` and `Campaign.abTest` describe the test; `CampaignStats.variants`, `.winner` and `.abTest`
how it goes (see :mod:`emailkit.domain.sending.ab.standings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import strawberry
from strawberry.dataloader import DataLoader

from emailkit.db.tables.content import ContentFormat
from emailkit.db.tables.sending import AbDecision, AbMetric, CampaignAbTest, CampaignVariant
from emailkit.domain.feedback.analytics import rate
from emailkit.domain.sending.ab import definition
from emailkit.domain.sending.ab.content import label
from emailkit.domain.sending.ab.significance import ALPHA
from emailkit.domain.sending.ab.standings import Standings, VariantCounts, standings_by_campaign
from emailkit.domain.sending.ab.state import AbPhase, phase
from emailkit.schema.context import Info
from emailkit.schema.loaders import Batched, load_one
from emailkit.schema.relay import Node, to_global_id
from emailkit.schema.types.templates import TemplateType

strawberry.enum(
    AbMetric,
    name="AbTestMetric",
    description="What decides an A/B test: unique OPENS or unique CLICKS per recipient of each variant.",
)
strawberry.enum(AbDecision, name="AbTestDecision", description="How the winner was chosen.")
strawberry.enum(
    AbPhase,
    name="AbTestPhase",
    description=(
        "PLANNED: the campaign has not started. TESTING: the test share is being sent. WAITING: it has been "
        "sent; the rest of the audience waits for the winner. WINNER_SENT: the winner goes (or went) to the "
        "rest."
    ),
)


@strawberry.type(
    name="CampaignVariant",
    description="One version of an A/B-tested campaign. subject and fromName are what it sends: its own, or the "
    "campaign's where it keeps them.",
)
class VariantType(Node):
    pk: strawberry.Private[int]
    template_pk: strawberry.Private[int | None]
    label: str = strawberry.field(description='"A", "B", ... in the order the variants were given.')
    subject: str
    from_name: str
    body: str | None = strawberry.field(
        description="Its own inline body; null: a template, or the campaign's."
    )
    format: ContentFormat | None
    uses_campaign_content: bool = strawberry.field(
        description="It sends the campaign's own body or template (it changes the subject or sender name)."
    )

    @strawberry.field(description="Its own template; null: an inline body, or the campaign's content.")
    async def template(self, info: Info) -> TemplateType | None:
        return await load_one(info.context.loaders.template_by_id, self.template_pk, TemplateType.from_model)

    @classmethod
    def of(cls, row: CampaignVariant, subject: str, from_name: str) -> VariantType:
        """`row`, with the campaign's `subject` and `from_name` where it keeps them."""
        return cls(
            id=to_global_id("CampaignVariant", row.id),
            pk=row.id,
            template_pk=row.template_id,
            label=label(row.position),
            subject=row.subject if row.subject is not None else subject,
            from_name=row.from_name if row.from_name is not None else from_name,
            body=row.body,
            format=row.format,
            uses_campaign_content=row.template_id is None and row.body is None,
        )


@strawberry.type(description="How a campaign's A/B test is set up, and where it stands.")
class AbTest:
    test_share: float = strawberry.field(description="The fraction of the audience that tests the variants.")
    metric: AbMetric
    wait_seconds: int = strawberry.field(description="How long after the test is sent the winner is chosen.")
    phase: AbPhase
    test_sent_at: datetime | None = strawberry.field(description="When the test share had all been sent.")
    decide_at: datetime | None = strawberry.field(description="When the winner is (or was) due.")
    decided_at: datetime | None
    decided_by: AbDecision | None
    winner: VariantType | None

    @classmethod
    def of(cls, test: CampaignAbTest, variants: Sequence[VariantType], *, started: bool) -> AbTest:
        return cls(
            test_share=test.test_share,
            metric=test.metric,
            wait_seconds=test.wait_seconds,
            phase=phase(test, started=started),
            test_sent_at=test.test_sent_at,
            decide_at=test.decide_at,
            decided_at=test.decided_at,
            decided_by=test.decided_by,
            winner=next((v for v in variants if v.pk == test.winner_variant_id), None),
        )


@strawberry.type(
    description="A variant's counters (after the decision the winner's include the rest of the audience). "
    "Rates are fractions of its recipients: delivered ones when the provider reports deliveries for the "
    "campaign's variants, else sent ones."
)
class VariantStats:
    variant: VariantType
    sent: int
    delivered: int
    bounced: int
    complained: int
    opens: int
    unique_opens: int
    clicks: int
    unique_clicks: int
    unsubscribed: int
    open_rate: float
    click_rate: float
    rate: float = strawberry.field(description="The rate by the test's metric (openRate or clickRate).")

    @classmethod
    def of(cls, standings: Standings, v: VariantCounts) -> VariantStats:
        base = standings.base(v)
        return cls(
            variant=VariantType.of(v.variant, standings.subject, standings.from_name),
            sent=v.sent,
            delivered=v.delivered,
            bounced=v.bounced,
            complained=v.complained,
            opens=v.opens,
            unique_opens=v.unique_opens,
            clicks=v.clicks,
            unique_clicks=v.unique_clicks,
            unsubscribed=v.unsubscribed,
            open_rate=rate(v.unique_opens, base),
            click_rate=rate(v.unique_clicks, base),
            rate=rate(v.hits(standings.test.metric), base),
        )


@strawberry.type(
    description="How the A/B test went: the leader (or winner) against the runner-up by the test's metric. "
    "lift is the relative difference of their rates ((winner - runner-up) / runner-up; 0.25 = 25% better); "
    f"significant: a two-proportion z-test, two-sided, gives p < {ALPHA}. Until a winner is chosen these "
    "compare the current leader; from then on they are fixed as they stood when it was chosen."
)
class AbTestStats:
    metric: AbMetric
    phase: AbPhase
    per_delivered: bool = strawberry.field(
        description="Rates are per delivered recipient (the provider reports deliveries), else per sent one."
    )
    decide_at: datetime | None
    decided_at: datetime | None
    decided_by: AbDecision | None
    leader: VariantStats | None = strawberry.field(
        description="The best rate now; a tie goes to the earlier."
    )
    lift: float | None = strawberry.field(
        description="Null when the runner-up's rate is 0 or nothing is known."
    )
    p_value: float | None
    z_score: float | None
    significant: bool

    @classmethod
    def of(cls, standings: Standings) -> AbTestStats:
        test = standings.test
        verdict = standings.verdict()
        leader = standings.leader()
        return cls(
            metric=test.metric,
            phase=phase(test, started=standings.started),
            per_delivered=standings.per_delivered,
            decide_at=test.decide_at,
            decided_at=test.decided_at,
            decided_by=test.decided_by,
            leader=VariantStats.of(standings, leader) if leader is not None else None,
            lift=_rounded(verdict.lift) if verdict is not None else None,
            p_value=_rounded(verdict.p_value) if verdict is not None else None,
            z_score=_rounded(verdict.z) if verdict is not None else None,
            significant=verdict is not None and verdict.significant,
        )


def _rounded(value: float | None) -> float | None:
    return round(value, 6) if value is not None else None


@dataclass(frozen=True)
class AbStatsParts:
    """What the A/B fields of CampaignStats show, built once per campaign from its standings."""

    variants: list[VariantStats]
    winner: VariantStats | None
    ab_test: AbTestStats | None

    @classmethod
    def of(cls, standings: Standings | None) -> AbStatsParts:
        if standings is None:
            return cls(variants=[], winner=None, ab_test=None)
        variants = [VariantStats.of(standings, v) for v in standings.variants]
        chosen = standings.winner()
        return cls(
            variants=variants,
            winner=next(
                (s for s in variants if chosen is not None and s.variant.pk == chosen.variant.id), None
            ),
            ab_test=AbTestStats.of(standings),
        )


class AbLoaders:
    """The request's loaders of A/B test rows (kept on the context, as the analytics loaders are)."""

    def __init__(self, info: Info) -> None:
        reads = info.context.loaders.session

        async def variants(ids: Sequence[int]) -> list[list[CampaignVariant]]:
            async with reads() as session:
                found = await definition.variants_by_campaign(session, ids)
            return [found.get(i, []) for i in ids]

        self.variants: DataLoader[int, list[CampaignVariant]] = DataLoader(load_fn=variants)
        self.variant_by_id: Batched[CampaignVariant | None] = Batched(
            reads, definition.variants_by_ids, lambda: None
        )
        self.test: Batched[CampaignAbTest | None] = Batched(reads, definition.tests_by_campaign, lambda: None)
        self.standings: Batched[Standings | None] = Batched(reads, standings_by_campaign, lambda: None)


def ab_loaders(info: Info) -> AbLoaders:
    loaders = info.context.extra.get("abtests")
    if not isinstance(loaders, AbLoaders):
        loaders = info.context.extra["abtests"] = AbLoaders(info)
    return loaders


async def campaign_variants(info: Info, campaign_pk: int, subject: str, from_name: str) -> list[VariantType]:
    rows = await ab_loaders(info).variants.load(campaign_pk)
    return [VariantType.of(r, subject, from_name) for r in rows]


async def campaign_ab_test(
    info: Info, campaign_pk: int, subject: str, from_name: str, *, started: bool
) -> AbTest | None:
    test = await ab_loaders(info).test.load(campaign_pk)
    if test is None:
        return None
    return AbTest.of(test, await campaign_variants(info, campaign_pk, subject, from_name), started=started)


async def variant_by_id(info: Info, pk: int) -> VariantType | None:
    """A variant by its id (with what it keeps of its campaign), through the request's loaders."""
    row = await ab_loaders(info).variant_by_id.load(pk)
    if row is None:
        return None
    campaign = await info.context.loaders.campaign_by_id.load(row.campaign_id)
    return VariantType.of(row, campaign.subject, campaign.from_name) if campaign is not None else None
