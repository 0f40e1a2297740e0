"""The sides of a merge: what each brings (coordinates, Fisher, β) and how much it counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import BasinError, MergeArithmeticError

# Trust weights and --weight: a side's say is bounded, so no weighting can silence the other side
# entirely or carry the arithmetic out of the float range.
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3


@dataclass(frozen=True)
class Side:
    """One side of a merge: its coordinates, Fisher diagonal (None: identity), β and weight."""

    z: Sequence[float]
    fisher: Sequence[float] | None
    beta: Sequence[float]
    weight: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise BasinError(f"side weight {self.weight} must be finite and > 0")


def capacity(num_params: int | None) -> float:
    """Weight of a substrate's capacity: 1 + log10(N / 1M) (tiny ≈ 1, 100M 3, 1B 4, 10B 5).

    Bigger substrates get more say, but only logarithmically: a 10B model's update should count,
    not drown every edge device's. Unknown substrates (or none) count 1.
    """
    if not num_params or num_params <= 1_000_000:
        return 1.0
    return 1.0 + math.log10(num_params / 1_000_000)


def check_weight(value: float, what: str) -> float:
    """`value` if it is a usable weight (finite, within [MIN_WEIGHT, MAX_WEIGHT]), else refused."""
    if not (math.isfinite(_number(value, what)) and MIN_WEIGHT <= value <= MAX_WEIGHT):
        raise BasinError(f"{what} {value} must be between {MIN_WEIGHT:g} and {MAX_WEIGHT:g}")
    return float(value)


def check_threshold(value: float, what: str) -> float:
    """`value` if it is a usable refusal threshold (finite, >= 0): NaN would refuse nothing."""
    if not (math.isfinite(_number(value, what)) and value >= 0):
        raise BasinError(f"{what} {value} must be a finite number >= 0")
    return float(value)


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BasinError(f"{what} {value!r} is not a number")
    try:
        return float(value)
    except OverflowError:  # an int beyond the float range
        raise BasinError(f"{what} is out of range") from None


def finite(values: Sequence[float], what: str) -> None:
    """Refuse a non-finite intermediate result rather than let it pass a check or reach a packet."""
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise MergeArithmeticError(f"merge refused: value {i} of {what} is {v}")


def delta(z: Sequence[float], base: Sequence[float]) -> list[float]:
    """A side's change: z − base."""
    return [a - b for a, b in zip(z, base, strict=True)]


def merge_beta(sides: Sequence[Side]) -> tuple[float, ...]:
    """β coefficients merged by the side weights (shorter polynomials padded with zeros)."""
    n = max(len(s.beta) for s in sides)
    total = sum(s.weight for s in sides)
    beta = tuple(
        sum(s.weight * (s.beta[k] if k < len(s.beta) else 0.0) for s in sides) / total
        for k in range(n)
    )
    finite(beta, "the merged β")  # plain sums: an overflow shows up here as inf, not a crash
    return beta
