"""A sender's warm-up plan: the day's allowance, the day the rest will have gone, and what a plan may be."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from emailkit.domain.errors import ErrorCode, FieldError
from emailkit.domain.senders.warmup import WarmupPlan, check_plan

MONDAY = date(2026, 12, 7)


def day(n: int) -> date:
    return MONDAY + timedelta(days=n)


def test_the_allowance_grows_by_the_rate_each_day_up_to_the_ceiling() -> None:
    plan = WarmupPlan(500, 50.0, 5000, MONDAY)
    assert [plan.allowance(day(n)) for n in range(8)] == [500, 750, 1125, 1687, 2531, 3796, 5000, 5000]
    # Before the plan starts it allows its first day's; years later, the ceiling (no float overflow).
    assert plan.allowance(day(-3)) == 500
    assert plan.allowance(day(365 * 30)) == 5000
    assert WarmupPlan(7, 1000.0, 10**8, MONDAY).allowance(day(10_000)) == 10**8


def test_no_growth_keeps_the_start_and_a_start_at_the_ceiling_stays_there() -> None:
    assert {WarmupPlan(40, 0.0, 100, MONDAY).allowance(day(n)) for n in range(30)} == {40}
    assert WarmupPlan(100, 25.0, 100, MONDAY).allowance(day(5)) == 100
    # An exact product is not lost to rounding: 100 * 1.1^2 = 121.
    assert WarmupPlan(100, 10.0, 1000, MONDAY).allowance(day(2)) == 121


def test_the_eta_counts_the_days_the_rest_needs() -> None:
    plan = WarmupPlan(10, 50.0, 30, MONDAY)  # 10, 15, 22, 30, 30, ...
    # Nothing left, or all of it fits today.
    assert plan.last_day_for(0, day(0), 0) == day(0)
    assert plan.last_day_for(4, day(0), 4) == day(0)
    assert plan.last_day_for(15, day(0), 0) == day(1)
    assert plan.last_day_for(16, day(0), 0) == day(2)
    assert plan.last_day_for(15 + 22, day(0), 0) == day(2)
    # At the ceiling, whole days of 30: 15 + 22 + 30 + 30 + 1.
    assert plan.last_day_for(15 + 22 + 60 + 1, day(0), 0) == day(5)
    assert plan.last_day_for(15 + 22 + 60 + 1, day(0), 3) == day(4)


@pytest.mark.parametrize(
    ("start", "growth", "ceiling", "fields"),
    [
        (0, 50.0, 100, ["warmup.startPerDay"]),
        (10, -1.0, 100, ["warmup.growthPercent"]),
        (10, 1000.5, 100, ["warmup.growthPercent"]),
        (10, float("nan"), 100, ["warmup.growthPercent"]),
        (100, 10.0, 99, ["warmup.ceilingPerDay"]),
        (-5, 2000.0, -10, ["warmup.startPerDay", "warmup.growthPercent", "warmup.ceilingPerDay"]),
    ],
)
def test_bad_plans_are_out_of_range(start: int, growth: float, ceiling: int, fields: list[str]) -> None:
    errors: list[FieldError] = []
    check_plan(errors, start, growth, ceiling)
    assert [e.field for e in errors] == fields
    assert {e.code for e in errors} == {ErrorCode.OUT_OF_RANGE}


def test_good_plans_pass() -> None:
    errors: list[FieldError] = []
    check_plan(errors, 1, 0.0, 1)
    check_plan(errors, 500, 1000.0, 100_000)
    assert errors == []
