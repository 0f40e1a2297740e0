"""`fisher` (the default): Fisher merging (Matena & Raffel 2022) on the shared coordinates,
Σ w F δ / Σ w F, each side's diagonal on the common scale; the weighted mean where no side
claims any information there."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .strategy import Share, Strategy, register, weighted_mean


@register
class Fisher(Strategy):
    name = "fisher"
    summary = "each side weighted by its Fisher information there: Σ w F δ / Σ w F"

    def coordinate(self, shares: Sequence[Share]) -> float:
        mass = math.fsum(w * f for w, f, _ in shares)
        if mass > 0:
            return math.fsum(w * f * d for w, f, d in shares) / mass
        return weighted_mean(shares)
