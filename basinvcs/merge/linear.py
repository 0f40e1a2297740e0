"""`linear`: weighted task arithmetic, Σ w δ / Σ w."""

from __future__ import annotations

from collections.abc import Sequence

from .strategy import Share, Strategy, register, weighted_mean


@register
class Linear(Strategy):
    name = "linear"
    summary = "weighted task arithmetic: Σ w δ / Σ w"

    def coordinate(self, shares: Sequence[Share]) -> float:
        return weighted_mean(shares)
