"""`ties`: TIES-merging (Yadav et al. 2023): trim each side to its largest changes, elect a sign
per coordinate by the weighted sum, average the sides that agree with it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .strategy import Deltas, Share, Strategy, Vectors, register, weighted_mean

KEEP = 0.2  # fraction of each side's changed coordinates TIES keeps (its paper's default k)


@register
class Ties(Strategy):
    name = "ties"
    summary = "trim to the largest 20% of each side's changes, elect signs, average the agreeing"

    def prepare(self, deltas: Deltas, weights: Sequence[float], fishers: Vectors) -> Deltas:
        return [_trim(d) for d in deltas]

    def coordinate(self, shares: Sequence[Share]) -> float:
        sign = math.copysign(1.0, math.fsum(w * d for w, _, d in shares))
        return weighted_mean([s for s in shares if s[2] * sign > 0])


def _trim(delta: list[float]) -> list[float]:
    """Keep a side's largest KEEP share of changed coordinates; zero the rest."""
    changed = sorted((abs(v) for v in delta if v), reverse=True)
    if not changed:
        return delta
    cut = changed[max(0, math.ceil(KEEP * len(changed)) - 1)]
    return [v if abs(v) >= cut else 0.0 for v in delta]
