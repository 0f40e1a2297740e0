"""`add`: the sides' changes added, what they share counted once.

On the coordinates several sides changed, the merged change is m = Σ_s a_s δ_s, the vector in
the span of the sides' changes that moves along each side's own direction exactly as far as that
side did: ⟨m, δ_s⟩ = ‖δ_s‖² for every s (over those coordinates). Sides whose changes are
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
from .strategy import Share, Strategy, register

RIDGE = 1e-12  # relative to the largest diagonal term of the normal equations


@register
class Add(Strategy):
    name = "add"
    summary = "add the changes, what they share once: orthogonal ones whole, equal ones once"

    def prepare(self, deltas: list[list[float]], weights: Sequence[float]) -> list[list[float]]:
        shared = [i for i in range(len(deltas[0])) if sum(1 for d in deltas if d[i]) > 1]
        if not shared:
            return deltas
        a = coefficients([[d[i] for i in shared] for d in deltas], weights)
        out = [list(d) for d in deltas]
        for k, d in enumerate(out):
            for i in shared:
                d[i] *= a[k]
        return out

    def coordinate(self, shares: Sequence[Share]) -> float:
        return math.fsum(d for _, _, d in shares)


def coefficients(deltas: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """a with ⟨Σ a_t δ_t, δ_s⟩ = ‖δ_s‖² for every side s, by weighted least squares: the normal
    equations (A W A + ρ I) a = A W g, A the sides' Gram matrix and g its diagonal."""
    n = len(deltas)
    # a does not change when every δ or every weight is scaled alike: scaled to at most 1 here,
    # no product below can overflow whatever the sides hold
    top = max(abs(x) for d in deltas for x in d)
    unit = [[x / top for x in d] for d in deltas]
    heaviest = max(weights)
    weights = [w / heaviest for w in weights]
    gram = [[math.fsum(x * y for x, y in zip(u, v, strict=True)) for v in unit] for u in unit]
    g = [gram[s][s] for s in range(n)]
    lhs = [
        [math.fsum(gram[r][s] * weights[s] * gram[s][c] for s in range(n)) for c in range(n)]
        for r in range(n)
    ]
    rhs = [math.fsum(gram[r][s] * weights[s] * g[s] for s in range(n)) for r in range(n)]
    ridge = RIDGE * max(lhs[r][r] for r in range(n))
    for r in range(n):
        lhs[r][r] += ridge
    return _solve(lhs, rhs)


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
