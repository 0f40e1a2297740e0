"""The basin metric: Fisher diagonals on a common scale, their mean, distance and cosine.

A packet's Fisher diagonal says where its basin holds information, but its overall size says how
converged training was (the empirical Fisher shrinks as the loss falls), and the packet itself
chooses it: a signer can put 1.8e308 there. So before a diagonal weighs anything it is brought to
the *common scale*: divided by its maximum, then by the mean of the result. Every value is then
in [0, dim] with mean 1, the same scale as the identity a packet without a Fisher stands for, and
no product or sum of a few thousand of them with float32 coordinates can overflow.

BRIEF §2: d(A, B) = sqrt(Σ_i F̄_i (z_A,i − z_B,i)²), F̄ the mean of the packets' diagonals (identity
for a packet without one), here each on the common scale. Links between concepts are the
F̄-weighted cosine. Merging (basinvcs.merge), `basin diff` and the concept graph all use these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def common_scale(fisher: Sequence[float] | None, dim: int) -> list[float]:
    """`fisher` divided by its maximum and then by its mean; identity for None or all zero."""
    if fisher is None:
        return [1.0] * dim
    top = max(fisher, default=0.0)
    if not (top > 0 and math.isfinite(top)):
        return [1.0] * dim
    unit = [f / top for f in fisher]  # in [0, 1], the maximum exactly 1: the mean is >= 1/dim
    mean = math.fsum(unit) / dim
    return [u / mean for u in unit]


def mean_fisher(fishers: Sequence[Sequence[float] | None], dim: int) -> list[float] | None:
    """F̄: the mean of the diagonals on the common scale, identity for each None; None if all are."""
    if all(f is None for f in fishers):
        return None
    scaled = [common_scale(f, dim) for f in fishers]
    return [math.fsum(v) / len(scaled) for v in zip(*scaled, strict=True)]


def distance(a: Sequence[float], b: Sequence[float], fbar: Sequence[float] | None) -> float:
    """sqrt(Σ F̄ (a − b)²); identity where `fbar` is None. Squares by multiplying, which IEEE
    rounds correctly everywhere (libm's pow(d, 2) differs from d·d in the last bit on about 0.1%
    of values), and sums exactly (fsum): the same bits on every machine."""
    f = fbar if fbar is not None else [1.0] * len(a)
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return math.sqrt(math.fsum(w * (d * d) for w, d in zip(f, diffs, strict=True)))


def cosine(
    u: Sequence[float], v: Sequence[float], fbar: Sequence[float] | None = None
) -> float | None:
    """F̄-weighted cosine of u and v, in [-1, 1]; None when either has zero F̄-norm."""
    f = fbar if fbar is not None else [1.0] * len(u)
    uv = math.fsum(w * x * y for w, x, y in zip(f, u, v, strict=True))
    uu = math.fsum(w * x * x for w, x in zip(f, u, strict=True))
    vv = math.fsum(w * y * y for w, y in zip(f, v, strict=True))
    if uu <= 0 or vv <= 0:
        return None
    return max(-1.0, min(1.0, uv / math.sqrt(uu * vv)))
