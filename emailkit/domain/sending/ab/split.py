"""Who tests which variant: a pure function of (campaign, subscriber), so every run of a batch (a rerun, a
redelivered message, a takeover after a crash) assigns the same, and nothing about it needs storing until the
ledger row is written with it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_RANGE = float(2**64)


def draw(campaign_id: int, subscriber_id: int) -> float:
    """A number in [0, 1), uniform over subscribers and fixed for the pair (the same in every process)."""
    digest = hashlib.blake2b(f"{campaign_id}:{subscriber_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _RANGE


def position_in_test(campaign_id: int, subscriber_id: int, test_share: float, variants: int) -> int | None:
    """The position of the variant this subscriber tests, or None outside the test share.

    The test share is the draws below `test_share`, cut into `variants` equal slices: each variant gets
    test_share / variants of the audience, evenly in expectation (within a few √n of it).
    """
    x = draw(campaign_id, subscriber_id)
    if x >= test_share:
        return None
    return min(int(x / test_share * variants), variants - 1)


@dataclass(frozen=True)
class Split:
    """What the recipients a batch materialises now get: in the test phase, the test share only, each with the
    variant they test; once the rest is being sent (`winner_id` set), everybody not materialised yet, with the
    winner."""

    campaign_id: int
    # By position: A, B, ...
    variant_ids: tuple[int, ...]
    test_share: float
    winner_id: int | None = None

    def variant_of(self, subscriber_id: int) -> int | None:
        """The variant of a recipient materialised now; None: not in this phase (they wait for the winner)."""
        if self.winner_id is not None:
            return self.winner_id
        position = position_in_test(self.campaign_id, subscriber_id, self.test_share, len(self.variant_ids))
        return None if position is None else self.variant_ids[position]
