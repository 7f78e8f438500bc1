"""The rate and ETA a progress reader derives from a campaign's counters."""

from __future__ import annotations

from emailkit.domain.sending.progress import RateEstimator


def test_a_running_campaign_has_an_eta_from_its_recent_rate() -> None:
    estimator = RateEstimator()
    assert estimator.add(100.0, 0, 1000, True).eta_seconds is None  # no rate yet
    estimate = estimator.add(102.0, 200, 800, True)
    assert (estimate.rate_per_second, estimate.eta_seconds) == (100.0, 8.0)
    assert estimator.add(103.0, 1000, 0, True).eta_seconds == 0.0


def test_a_campaign_that_is_not_running_has_no_eta() -> None:
    for remaining in (0, 500):
        estimator = RateEstimator()
        estimator.add(100.0, 0, remaining, False)
        assert estimator.add(101.0, 10, remaining, False).eta_seconds is None
