"""Three-way merging of basins: the arithmetic, with no repository in sight.

Given a base and two sides (ours, theirs), each side's change is δ = z_side − z_base. As in a git
three-way merge, a coordinate only one side changed takes that side's change whole; coordinates
both sides changed are combined by the strategy:

- ``fisher`` (default): each side weighted by its Fisher information there and its side weight,
  δ = Σ w_s F_s,i δ_s,i / Σ w_s F_s,i (Matena & Raffel 2022, restricted to the shared coordinates),
  each side's diagonal first divided by its mean (the common scale);
- ``linear``: weighted task arithmetic, δ = Σ w_s δ_s,i / Σ w_s;
- ``ties``: TIES-merging (Yadav et al. 2023): trim each side to its largest-magnitude changes, elect
  a sign per coordinate by the weighted sum, average the sides that agree with it;
- ``ours`` / ``theirs``: take one side's basin, deliberately.

Before anything is combined, `assess` measures how much the sides disagree where both changed:
the Fisher distance between their changes, relative to the smaller change, and the interference
(the share of Fisher-weighted mass on coordinates where they pull in opposite directions). A
packet without a Fisher diagonal counts as identity. See docs/merge.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

STRATEGIES = ("fisher", "linear", "ties", "ours", "theirs")
TIES_KEEP = 0.2  # fraction of each side's changed coordinates TIES keeps (its paper's default k)
DEFAULT_MAX_DISTANCE = 4.0
DEFAULT_MAX_INTERFERENCE = 0.8  # measured: honest specialist pairs 0.44-0.56, a sign flip 1.0


@dataclass(frozen=True)
class Side:
    """One side of a merge: its coordinates, Fisher diagonal (None: identity), β and weight."""

    z: Sequence[float]
    fisher: Sequence[float] | None
    beta: Sequence[float]
    weight: float


@dataclass(frozen=True)
class Assessment:
    """How far apart the two sides' changes are, where both changed."""

    shared: int  # coordinates both sides changed
    distance: float  # sqrt(Σ F̄ (δ_ours − δ_theirs)²) over the shared coordinates
    relative: float  # distance / the smaller side's Fisher norm there (scale-free)
    interference: float  # Fisher mass on opposite-sign shared coordinates / on all shared
    worst: list[tuple[int, float, float, float]]  # (i, F̄_i, δ_ours_i, δ_theirs_i), worst first

    def refused(self, max_distance: float, max_interference: float) -> str | None:
        """Why these changes must not be merged automatically, or None."""
        if self.relative > max_distance:
            return f"Fisher distance {self.relative:.3g}x the smaller change > {max_distance:g}"
        if self.interference > max_interference:
            return f"interference {self.interference:.3g} > {max_interference:g}"
        return None


def capacity(num_params: int | None) -> float:
    """Weight of a substrate's capacity: 1 + log10(N / 1M) (tiny ≈ 1, 100M 3, 1B 4, 10B 5).

    Bigger substrates get more say, but only logarithmically: a 10B model's update should count,
    not drown every edge device's. Unknown substrates (or none) count 1.
    """
    if not num_params or num_params <= 1_000_000:
        return 1.0
    return 1.0 + math.log10(num_params / 1_000_000)


def _delta(z: Sequence[float], base: Sequence[float]) -> list[float]:
    return [a - b for a, b in zip(z, base, strict=True)]


def _fisher(side: Side, dim: int) -> Sequence[float]:
    """A side's Fisher diagonal on the common scale: divided by its mean, so it says where that
    side's information lies, not how converged it is (the empirical Fisher shrinks as training
    converges, and raw diagonals let the least-trained specialist outweigh the others). Identity
    where the packet has none, or where it is zero everywhere."""
    if side.fisher is None:
        return [1.0] * dim
    mean = math.fsum(side.fisher) / dim
    return [f / mean for f in side.fisher] if mean > 0 else [1.0] * dim


def assess(base: Sequence[float], ours: Side, theirs: Side, top: int = 5) -> Assessment:
    d_o, d_t = _delta(ours.z, base), _delta(theirs.z, base)
    f_o, f_t = _fisher(ours, len(base)), _fisher(theirs, len(base))
    rows, sq, norm_o, norm_t, opposed, mass = [], 0.0, 0.0, 0.0, 0.0, 0.0
    for i, (a, b) in enumerate(zip(d_o, d_t, strict=True)):
        if not (a and b):
            continue
        f = (f_o[i] + f_t[i]) / 2
        sq += f * (a - b) ** 2
        norm_o += f * a * a
        norm_t += f * b * b
        m = f * abs(a * b)
        mass += m
        if a * b < 0:
            opposed += m
        rows.append((f * (a - b) ** 2, i, f, a, b))
    smaller = math.sqrt(min(norm_o, norm_t))
    distance = math.sqrt(sq)
    rows.sort(reverse=True)
    return Assessment(
        shared=len(rows),
        distance=distance,
        relative=distance / smaller if smaller else 0.0,
        interference=opposed / mass if mass else 0.0,
        worst=[(i, f, a, b) for _, i, f, a, b in rows[:top]],
    )


def combine(base: Sequence[float], ours: Side, theirs: Side, strategy: str) -> list[float]:
    """The merged coordinates under `strategy` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown merge strategy {strategy!r} (known: {', '.join(STRATEGIES)})")
    if strategy == "ours":
        return list(ours.z)
    if strategy == "theirs":
        return list(theirs.z)
    d_o, d_t = _delta(ours.z, base), _delta(theirs.z, base)
    if strategy == "ties":
        d_o, d_t = _trim(d_o), _trim(d_t)
    f_o, f_t = _fisher(ours, len(base)), _fisher(theirs, len(base))
    w_o, w_t = ours.weight, theirs.weight
    out = []
    for i, (z0, a, b) in enumerate(zip(base, d_o, d_t, strict=True)):
        if not (a and b):
            out.append(z0 + a + b)  # one side changed it (or neither): its change, whole
        elif strategy == "fisher" and (w_o * f_o[i] + w_t * f_t[i]) > 0:
            out.append(z0 + (w_o * f_o[i] * a + w_t * f_t[i] * b) / (w_o * f_o[i] + w_t * f_t[i]))
        elif strategy == "ties":
            sign = math.copysign(1.0, w_o * a + w_t * b)
            agree = [(w, v) for w, v in ((w_o, a), (w_t, b)) if v * sign > 0]
            out.append(z0 + sum(w * v for w, v in agree) / sum(w for w, _ in agree))
        else:
            out.append(z0 + (w_o * a + w_t * b) / (w_o + w_t))
    return out


def _trim(delta: list[float]) -> list[float]:
    """Keep each side's largest TIES_KEEP share of changed coordinates; zero the rest."""
    changed = sorted((abs(v) for v in delta if v), reverse=True)
    if not changed:
        return delta
    cut = changed[max(0, math.ceil(TIES_KEEP * len(changed)) - 1)]
    return [v if abs(v) >= cut else 0.0 for v in delta]


def merge_beta(ours: Side, theirs: Side) -> tuple[float, ...]:
    """β coefficients merged by the side weights (the shorter polynomial padded with zeros)."""
    n = max(len(ours.beta), len(theirs.beta))
    a = list(ours.beta) + [0.0] * (n - len(ours.beta))
    b = list(theirs.beta) + [0.0] * (n - len(theirs.beta))
    total = ours.weight + theirs.weight
    return tuple((ours.weight * x + theirs.weight * y) / total for x, y in zip(a, b, strict=True))
