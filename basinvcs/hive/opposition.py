"""The opposition check: which of a round's updates point against the rest of the round.

The outlier check (basinvcs.hive.outliers) bounds an update's size; it cannot see an update of
ordinary size that points the wrong way: a sign-flipped change, or the inner-product attack's
−εμ (Xie et al. 2020). When each instance trains its own task the updates barely share
coordinates, so no coordinate-wise statistic sees them either (docs/experiments/hive.md). What
does is direction: an honest update agrees with the rest of its round or is unrelated to it
(instances of its task point its way, other tasks are near orthogonal), while a flipped one
points against its own task's instances and −εμ against everyone.

Each update's score is the cosine between it and the weighted sum of the others, every update
first clipped to the round's median norm, so that a few large updates cannot make "the others"
theirs. The lowest-scoring update is refused while its score is below −τ, and the scores are
computed again without it, at most ⌈n/2⌉ − 1 times: a strict majority is always kept. The
repetition matters: inner-product attackers all send −εμ, which drags the sum every honest update
is compared with; once the first of them is gone the others stand out.

What one round cannot tell: a coordinated group that outnumbers the honest instances of one task
(three attackers sending −δ against two honest instances of that task) is that task's majority,
and the check sides with it. And an update that keeps its score above −τ moves the result against
the others by at most τ times the median norm.

With fewer than 3 updates nothing is refused: there is no "rest of the round" to speak of.
Results are deterministic: the updates are put in the canonical order of basinvcs.hive.rules
(by key, then by bytes) before any arithmetic, so every replica refuses the same updates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rules import AggregationError, as_updates, as_weights, canonical_order

DEFAULT_TAU = 1.0  # off: measured on MiniLM it refused honest updates under collusion (docs)
MIN_UPDATES = 3


@dataclass(frozen=True)
class OppositionReport:
    """`scores[k]`: update k's cosine with the (clipped, weighted) sum of the others, when it was
    refused or, for a kept one, at the end (input order); `refused`: the indices refused,
    ascending; `note`: why nothing could be refused, if so."""

    scores: list[float]
    refused: list[int]
    tau: float
    note: str | None = None


def check(
    updates: Sequence[Sequence[float]],
    weights: Sequence[float] | None = None,
    keys: Sequence[Any] | None = None,
    tau: float = DEFAULT_TAU,
) -> OppositionReport:
    """Score the round's `updates` (dense changes of z, one length d) and refuse those that
    oppose the rest. `weights`: one per update (> 0; equal if None), as the rule will weigh them;
    `keys`: the canonical order's keys (rules.aggregate). Non-finite input is refused."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 <= tau <= 1:
        raise AggregationError(f"opposition threshold tau {tau!r} must be a number from 0 to 1")
    if not isinstance(updates, np.ndarray) and len(updates) == 0:
        return OppositionReport([], [], tau, "no updates: nothing refused")
    x = as_updates(updates)
    n = x.shape[0]
    w = as_weights(weights, n)
    order = canonical_order(x, w, None, keys)
    x, w = x[order], w[order]
    top = float(np.abs(x).max())
    if top > 0:  # cosines and clipping do not see scale; squares of values near 1e308 would
        x = x / top
    norms = np.sqrt((x * x).sum(axis=1))
    radius = float(np.median(norms))
    with np.errstate(all="ignore"):
        clip = np.where(norms > radius, radius / np.where(norms > 0, norms, 1.0), 1.0)
        y = (w / w.max())[:, None] * clip[:, None] * x  # weighted, clipped: sums cannot overflow
    if n < MIN_UPDATES:
        note = f"{n} update{'s' if n != 1 else ''}: fewer than {MIN_UPDATES}, nothing refused"
        return _report(_scores(x, y, list(range(n))), [], order, tau, note)
    kept = list(range(n))
    refused: list[int] = []
    scores = _scores(x, y, kept)
    while len(refused) < math.ceil(n / 2) - 1:
        worst = min(kept, key=lambda i: (scores[i], i))
        if not scores[worst] < -tau:
            break
        kept.remove(worst)
        refused.append(worst)
        scores.update(_scores(x, y, kept))
    return _report(scores, refused, order, tau, None)


def _scores(x: np.ndarray, y: np.ndarray, kept: list[int]) -> dict[int, float]:
    """Cosine of each kept update with the sum of the other kept ones (0 where either is 0)."""
    total = y[kept].sum(axis=0)
    out = {}
    for i in kept:
        others = total - y[i]
        a = float(np.sqrt((x[i] * x[i]).sum()))
        b = float(np.sqrt((others * others).sum()))
        out[i] = float(x[i] @ others) / (a * b) if a > 0 and b > 0 else 0.0
    return out


def _report(
    scores: dict[int, float], refused: list[int], order: list[int], tau: float, note: str | None
) -> OppositionReport:
    """The report in the caller's order (`order[k]`: the input index of canonical row k)."""
    back = [0.0] * len(order)
    for k, v in scores.items():
        back[order[k]] = v
    return OppositionReport(back, sorted(order[k] for k in refused), tau, note)
