"""By how much one variant beat another, and whether that is more than chance.

The rate of a variant is its unique opens (or clicks) per recipient. The lift is the relative difference of
the two rates; the test is the two-proportion z-test with a pooled standard error, two-sided: the difference
is significant when p < ALPHA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ALPHA = 0.05


@dataclass(frozen=True)
class Arm:
    """What one variant scored: `hits` of `base` recipients."""

    hits: int
    base: int

    @property
    def rate(self) -> float:
        return self.hits / self.base if self.base > 0 else 0.0


@dataclass(frozen=True)
class Comparison:
    """`lift`: (rate - other rate) / other rate; None when the other rate is 0. `z`, `p_value`: None when the
    test cannot be made (a variant without recipients, or both rates 0 or 1)."""

    lift: float | None
    z: float | None
    p_value: float | None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < ALPHA


def lift(arm: Arm, other: Arm) -> float | None:
    if other.base <= 0 or other.hits <= 0 or arm.base <= 0:
        return None
    return (arm.rate - other.rate) / other.rate


def z_test(arm: Arm, other: Arm) -> tuple[float, float] | None:
    """(z, two-sided p-value) of the two-proportion z-test, or None when it is undefined."""
    if arm.base <= 0 or other.base <= 0:
        return None
    pooled = (arm.hits + other.hits) / (arm.base + other.base)
    variance = pooled * (1 - pooled) * (1 / arm.base + 1 / other.base)
    if variance <= 0:
        return None
    z = (arm.rate - other.rate) / math.sqrt(variance)
    # 2 · (1 - Φ(|z|)), computed without the cancellation of 1 - Φ for large |z|.
    return z, math.erfc(abs(z) / math.sqrt(2))


def compare(arm: Arm, other: Arm) -> Comparison:
    tested = z_test(arm, other)
    return Comparison(
        lift=lift(arm, other),
        z=tested[0] if tested is not None else None,
        p_value=tested[1] if tested is not None else None,
    )
