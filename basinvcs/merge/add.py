"""`add`: the sides' changes added, what they share counted once.

On the coordinates several sides changed, the merged change is m = Σ_s a_s δ_s, the vector in
the span of the sides' changes that moves along each side's own direction exactly as far as that
side did: ⟨m, δ_s⟩ = ‖δ_s‖² for every s, over those coordinates, in the Fisher metric
⟨u, v⟩ = Σ F̄_i u_i v_i (F̄ the mean of the sides' diagonals on the common scale, identity for a
side without one), so that "orthogonal" and "the same change" mean what they mean to the model. A
side whose change there carries no Fisher information at all is kept whole. Sides whose changes are
orthogonal add up whole (a = 1: task arithmetic at λ = 1, which keeps specialists trained to
change little besides their skill, docs/results.md); identical changes count once (a = 1/n: the
mean); in between, a_s = 1/(1 + cos) for two sides of equal size. Changes that cannot all be met
(one side undoing another) are met as nearly as possible by least squares weighted by the side
weights, with a ridge 10⁻¹² of the largest term so that n linearly dependent sides still solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .sides import MergeArithmeticError
from .strategy import Deltas, Share, Strategy, Vectors, register

RIDGE = 1e-12  # relative to the largest diagonal term of the normal equations


@register
class Add(Strategy):
    name = "add"
    summary = "add the changes, what they share once: orthogonal ones whole, equal ones once"

    def prepare(self, deltas: Deltas, weights: Sequence[float], fishers: Vectors) -> Deltas:
        shared = [i for i in range(len(deltas[0])) if sum(1 for d in deltas if d[i]) > 1]
        if not shared:
            return deltas
        fbar = [math.fsum(f[i] for f in fishers) / len(fishers) for i in shared]
        a = coefficients([[d[i] for i in shared] for d in deltas], weights, fbar)
        out = [list(d) for d in deltas]
        for k, d in enumerate(out):
            for i in shared:
                d[i] *= a[k]
        return out

    def coordinate(self, shares: Sequence[Share]) -> float:
        return math.fsum(d for _, _, d in shares)


def coefficients(
    deltas: Sequence[Sequence[float]], weights: Sequence[float], metric: Sequence[float]
) -> list[float]:
    """a with ⟨Σ a_t δ_t, δ_s⟩ = ‖δ_s‖² for every side s in the metric Σ metric_i u_i v_i, by
    weighted least squares: the normal equations (A W A + ρ I) a = A W g, A the sides' Gram
    matrix and g its diagonal. A side with g_s = 0 (no information where it changed) keeps a = 1."""
    # a does not change when every δ, every weight or the metric is scaled alike: scaled to at
    # most 1 here, no product below can overflow whatever the sides hold
    top = max(abs(x) for d in deltas for x in d)
    unit = [[x / top for x in d] for d in deltas]
    heaviest = max(weights)
    weights = [w / heaviest for w in weights]
    largest = max(metric)
    if not largest > 0:
        return [1.0] * len(unit)  # no side's change carries information: each kept whole
    metric = [m / largest for m in metric]
    gram = [
        [math.fsum(m * x * y for m, x, y in zip(metric, u, v, strict=True)) for v in unit]
        for u in unit
    ]
    seen = [s for s in range(len(unit)) if gram[s][s] > 0]
    a = [1.0] * len(unit)
    if not seen:
        return a
    g = [gram[s][s] for s in seen]
    sub = [[gram[r][c] for c in seen] for r in seen]
    w = [weights[s] for s in seen]
    n = len(seen)
    lhs = [[math.fsum(sub[r][k] * w[k] * sub[k][c] for k in range(n)) for c in range(n)]
           for r in range(n)]  # fmt: skip
    rhs = [math.fsum(sub[r][k] * w[k] * g[k] for k in range(n)) for r in range(n)]
    ridge = RIDGE * max(lhs[r][r] for r in range(n))
    for r in range(n):
        lhs[r][r] += ridge
    for s, value in zip(seen, _solve(lhs, rhs), strict=True):
        a[s] = value
    return a


def _solve(m: list[list[float]], b: list[float]) -> list[float]:
    """m x = b by Gaussian elimination with partial pivoting (m symmetric positive definite here;
    n is the number of sides, so a few)."""
    n = len(b)
    rows = [[*m[r], b[r]] for r in range(n)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(rows[r][c]))
        if rows[p][c] == 0:
            raise MergeArithmeticError("merge refused: the sides' changes are all zero")
        rows[c], rows[p] = rows[p], rows[c]
        for r in range(c + 1, n):
            f = rows[r][c] / rows[c][c]
            rows[r] = [x - f * y for x, y in zip(rows[r], rows[c], strict=True)]
    x = [0.0] * n
    for r in reversed(range(n)):
        x[r] = (rows[r][n] - math.fsum(rows[r][c] * x[c] for c in range(r + 1, n))) / rows[r][r]
    return x
