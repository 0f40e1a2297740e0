"""The intake outlier check: which of a round's updates lie far from the rest, by the round's own
robust statistics rather than a fixed constant.

Each update's score is its Fisher distance to the coordinate-wise median of the round,
sqrt(Σ F̄_i (δ_i − med_i)²) (basinvcs.metrics.distance, to the bit: _distances), F̄ the mean of
the round's Fisher diagonals on the common scale (metrics.mean_fisher; identity for an update
without one, and identity when none has one). One F̄ for the whole round: an update's own
diagonal is one voice in it, so it cannot shrink its own score by claiming no information where
it differs (cf. the merge check).

An update is flagged when its score exceeds median(scores) + c · spread, the spread being the
median absolute deviation times 1.4826 (which makes it the standard deviation for normal scores;
c = 10 by default, where Iglewicz & Hoaglin's modified z-score has 3.5: see DEFAULT_C); if more
than half the scores are equal (MAD 0), the mean absolute deviation times 1.2533 instead, and if
every score is equal nothing is flagged.
Only far updates are flagged, never close ones. With fewer than 3 updates there is no robust
statistic of the round: nothing is flagged, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..metrics import mean_fisher
from .rules import AggregationError, as_fishers, as_updates, column_median

# Iglewicz & Hoaglin's 3.5 (for modified z-scores over many values) flagged 7.1% of honest updates
# when each instance trains its own task (three per round, MiniLM); 10 flagged 2.5% and still every
# update scaled ×100 (docs/experiments/hive.md)
DEFAULT_C = 10.0
MAD_NORMAL = 1.4826  # MAD × this estimates σ for normal data
MEANAD_NORMAL = 1.2533  # mean absolute deviation × this (√(π/2)) estimates σ for normal data
MIN_UPDATES = 3


@dataclass(frozen=True)
class OutlierReport:
    """`scores[k]`: update k's Fisher distance to the round's median (input order); `outliers`:
    the indices flagged, ascending; `threshold`: the score above which an update is flagged (None
    when nothing could be); `note`: why nothing could be flagged, if so."""

    scores: list[float]
    outliers: list[int]
    threshold: float | None
    center: float | None  # median of the scores
    spread: float | None  # 1.4826 × MAD (or 1.2533 × mean absolute deviation when MAD is 0)
    note: str | None = None

    def flagged(self, k: int) -> bool:
        return k in self.outliers


def check(
    updates: Sequence[Sequence[float]],
    fishers: Sequence[Sequence[float] | None] | None = None,
    c: float = DEFAULT_C,
) -> OutlierReport:
    """Score each of the round's `updates` (dense changes of z, one length d) and flag the far
    ones. `fishers`: one diagonal or None per update, or None. Non-finite input is refused."""
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0):
        raise AggregationError(f"outlier factor c {c!r} must be a finite number > 0")
    if not isinstance(updates, np.ndarray) and len(updates) == 0:
        return OutlierReport([], [], None, None, None, "no updates: nothing flagged")
    x = as_updates(updates)
    n, d = x.shape
    as_fishers(fishers, n, d)  # refuses a malformed or non-finite diagonal before any arithmetic
    fbar = mean_fisher(list(fishers), d) if fishers is not None else None
    scores = _distances(x, column_median(x), fbar)
    if not all(math.isfinite(v) for v in scores):
        raise AggregationError("outlier check refused: a distance overflowed")
    if n < MIN_UPDATES:
        note = f"{n} update{'s' if n != 1 else ''}: fewer than {MIN_UPDATES}, nothing flagged"
        return OutlierReport(scores, [], None, None, None, note)
    s = np.array(scores)
    center = float(np.median(s))
    deviations = np.abs(s - center)
    spread = MAD_NORMAL * float(np.median(deviations))
    if spread == 0:
        spread = MEANAD_NORMAL * float(deviations.mean())
    if spread == 0:
        return OutlierReport(scores, [], None, center, 0.0, "every score is equal: nothing flagged")
    threshold = center + c * spread
    outliers = [k for k, v in enumerate(scores) if v > threshold]
    return OutlierReport(scores, outliers, threshold, center, spread)


def _distances(x: np.ndarray, median: np.ndarray, fbar: list[float] | None) -> list[float]:
    """metrics.distance of each row of x to `median`, to the same bits: the terms elementwise
    (one IEEE operation each, as metrics.distance does them), each row's sum exactly rounded
    (fsum), so every replica of a hive scores a round alike. Only a row's nonzero terms are
    summed (an exact sum does not change by adding zeros): top-k updates leave most of a row
    at the median, zero, so this reads an eighth of the terms. About 20 times faster than the
    plain loop at n = 1,000, and that again about 4 times for top-k rows (57 → 12 ms)."""
    with np.errstate(over="ignore", invalid="ignore"):
        diff = x - median
        terms = diff * diff if fbar is None else np.asarray(fbar) * (diff * diff)
    nonzero = terms != 0  # NaN included: it reaches fsum, as before
    flat = terms[nonzero].tolist()  # row by row, in order
    out, start = [], 0
    try:
        for count in nonzero.sum(axis=1).tolist():
            out.append(math.sqrt(math.fsum(flat[start : start + count])))
            start += count
    except (OverflowError, ValueError):  # fsum's intermediate sum, or inf − inf
        raise AggregationError("outlier check refused: a distance overflowed") from None
    return out
