"""The A/B test's split (deterministic, even) and its arithmetic (lift, two-proportion z-test) on known numbers."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime

import pytest

from emailkit.db.tables.sending import AbDecision, AbMetric, CampaignAbTest, CampaignVariant
from emailkit.domain.sending.ab.significance import Arm, compare
from emailkit.domain.sending.ab.split import Split, draw, position_in_test
from emailkit.domain.sending.ab.standings import Standings, VariantCounts
from emailkit.domain.sending.ab.state import duration

SUBSCRIBERS = range(1, 20_001)


def test_the_split_is_a_function_of_campaign_and_subscriber() -> None:
    first = [position_in_test(7, sid, 0.3, 3) for sid in SUBSCRIBERS]
    # Any order, any process: the same answer (blake2b of the pair, not Python's salted hash).
    assert [position_in_test(7, sid, 0.3, 3) for sid in reversed(SUBSCRIBERS)] == first[::-1]
    assert draw(7, 1) == draw(7, 1) and draw(7, 1) != draw(8, 1)
    assert position_in_test(7, 1, 0.3, 3) == position_in_test(7, 1, 0.3, 3)
    # Another campaign splits the same people differently.
    assert first != [position_in_test(8, sid, 0.3, 3) for sid in SUBSCRIBERS]


@pytest.mark.parametrize(("share", "variants"), [(0.2, 2), (0.3, 3), (0.5, 5), (1.0, 4)])
def test_the_test_share_is_split_evenly(share: float, variants: int) -> None:
    counts = Counter(position_in_test(42, sid, share, variants) for sid in SUBSCRIBERS)
    n = len(SUBSCRIBERS)
    tested = n - counts.pop(None, 0)
    # Binomial: within four standard deviations of what was asked for.
    assert abs(tested - share * n) <= 4 * math.sqrt(n * share * (1 - share)) + 1
    per_variant = tested / variants
    assert sorted(counts) == list(range(variants))
    for position in range(variants):
        assert abs(counts[position] - per_variant) <= 4 * math.sqrt(per_variant)


def test_the_split_gives_the_test_variant_until_the_rest_is_sent_then_the_winner() -> None:
    testing = Split(campaign_id=3, variant_ids=(31, 32), test_share=0.5)
    assigned = {sid: testing.variant_of(sid) for sid in range(1, 1001)}
    assert set(assigned.values()) == {31, 32, None}
    rest = Split(campaign_id=3, variant_ids=(31, 32), test_share=0.5, winner_id=32)
    assert {rest.variant_of(sid) for sid in range(1, 1001)} == {32}


def test_lift_and_significance_on_known_numbers() -> None:
    # 20% against 15% of 1,000 each: pooled 17.5%, z = 0.05 / √(0.175·0.825·0.002) ≈ 2.942, p ≈ 0.0033.
    clear = compare(Arm(200, 1000), Arm(150, 1000))
    assert clear.lift == pytest.approx(1 / 3)
    assert clear.z == pytest.approx(2.9424494, abs=1e-6)
    assert clear.p_value == pytest.approx(0.0032563, abs=1e-6)
    assert clear.significant
    # 11% against 10%: a lift of 10% that chance explains (z ≈ 0.729, p ≈ 0.466).
    close = compare(Arm(110, 1000), Arm(100, 1000))
    assert close.lift == pytest.approx(0.1)
    assert close.p_value == pytest.approx(0.4657436, abs=1e-6)
    assert not close.significant
    # The loser against the winner: the same test, the other sign.
    assert compare(Arm(150, 1000), Arm(200, 1000)).z == pytest.approx(-clear.z)  # type: ignore[operator]


def test_no_lift_or_test_without_numbers() -> None:
    nothing = compare(Arm(0, 0), Arm(5, 10))
    assert (nothing.lift, nothing.z, nothing.p_value, nothing.significant) == (None, None, None, False)
    # Nobody opened either: no rate to lift from, no variance to test.
    flat = compare(Arm(0, 100), Arm(0, 100))
    assert (flat.lift, flat.p_value, flat.significant) == (None, None, False)
    # Everybody opened the runner-up's is fine; a zero runner-up rate has no relative lift.
    assert compare(Arm(10, 100), Arm(0, 100)).lift is None


def _standings(metric: AbMetric, *counts: tuple[int, int, int, int]) -> Standings:
    """Variants A, B, ... with (sent, delivered, unique opens, unique clicks)."""
    test = CampaignAbTest(campaign_id=1, test_share=0.5, metric=metric, wait_seconds=60)
    return Standings(
        test,
        [
            VariantCounts(
                CampaignVariant(id=10 + i, campaign_id=1, position=i),
                sent=sent,
                delivered=delivered,
                unique_opens=opens,
                unique_clicks=clicks,
            )
            for i, (sent, delivered, opens, clicks) in enumerate(counts)
        ],
    )


def test_the_leader_by_the_metric_per_recipient_and_ties_to_the_first() -> None:
    by_opens = _standings(AbMetric.OPENS, (100, 0, 20, 9), (50, 0, 15, 1), (100, 0, 10, 2))
    assert not by_opens.per_delivered
    leader = by_opens.leader()
    assert leader is not None and leader.variant.position == 1  # 30% of 50 beats 20% of 100
    by_clicks = _standings(AbMetric.CLICKS, (100, 0, 20, 9), (50, 0, 15, 1), (100, 0, 10, 2))
    assert (by_clicks.leader() or leader).variant.position == 0
    tie = _standings(AbMetric.OPENS, (100, 0, 10, 0), (100, 0, 10, 0))
    assert (tie.leader() or leader).variant.position == 0
    # Once a provider reports deliveries for any variant, all are measured per delivered recipient.
    delivered = _standings(AbMetric.OPENS, (100, 50, 20, 0), (100, 100, 30, 0))
    assert delivered.per_delivered and (delivered.leader() or leader).variant.position == 0


def test_the_verdict_is_live_until_the_decision_then_as_it_was() -> None:
    standings = _standings(AbMetric.OPENS, (1000, 0, 200, 0), (1000, 0, 150, 0))
    live = standings.verdict()
    assert live is not None and live.lift == pytest.approx(1 / 3) and live.significant
    standings.test.decided_at = datetime(2026, 5, 1, tzinfo=UTC)
    standings.test.decided_by = AbDecision.AUTOMATIC
    standings.test.lift, standings.test.p_value, standings.test.z_score = 0.5, 0.2, 1.2
    frozen = standings.verdict()
    assert frozen is not None and (frozen.lift, frozen.p_value, frozen.significant) == (0.5, 0.2, False)


def test_durations_read_naturally() -> None:
    assert [duration(s) for s in (90, 600, 3600, 7200, 86400, 172800, 3601)] == [
        "90 s",
        "10 min",
        "1 h",
        "2 h",
        "1 day",
        "2 days",
        "3601 s",
    ]
