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
(the share of Fisher-weighted mass on coordinates where they pull in opposite directions), under
F̄ and under our own diagonal, the worse counting. A packet without a Fisher diagonal counts as
identity. Every diagonal is on the common scale (basinvcs.metrics), side weights are bounded, and
a non-finite intermediate result refuses the merge. See docs/merge.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import BasinError
from .metrics import common_scale

STRATEGIES = ("fisher", "linear", "ties", "ours", "theirs")
TIES_KEEP = 0.2  # fraction of each side's changed coordinates TIES keeps (its paper's default k)
DEFAULT_MAX_DISTANCE = 4.0
DEFAULT_MAX_INTERFERENCE = 0.8  # measured: honest specialist pairs 0.44-0.56, a sign flip 1.0
# Trust weights and --weight: a side's say is bounded, so no weighting can silence the other side
# entirely or carry the arithmetic out of the float range.
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3


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


def _fisher(side: Side, dim: int) -> list[float]:
    """A side's Fisher diagonal on the common scale (basinvcs.metrics): it says where that side's
    information lies, not how converged it is (the empirical Fisher shrinks as training converges,
    and raw diagonals let the least-trained specialist outweigh the others), and nothing a packet
    claims about its size can overflow what it weighs."""
    return common_scale(side.fisher, dim)


def assess(base: Sequence[float], ours: Side, theirs: Side, top: int = 5) -> Assessment:
    """The conflict check's measurements, taken twice: under F̄ (the mean of both diagonals) and
    under our own diagonal alone; the larger relative distance and interference count. Their
    diagonal may steer the merge's weights, but it is something their packet says about itself,
    so it cannot talk the check down (all its information piled on the few coordinates where it
    agrees with us would otherwise hide a sign flip everywhere else)."""
    d_o, d_t = _delta(ours.z, base), _delta(theirs.z, base)
    f_o, f_t = _fisher(ours, len(base)), _fisher(theirs, len(base))
    shared = [i for i, (a, b) in enumerate(zip(d_o, d_t, strict=True)) if a and b]
    fbar = {i: (f_o[i] + f_t[i]) / 2 for i in shared}
    mean_view = _measure(d_o, d_t, fbar)
    own_view = _measure(d_o, d_t, {i: f_o[i] for i in shared})
    rows = sorted(((fbar[i] * (d_o[i] - d_t[i]) ** 2, i) for i in shared), reverse=True)
    found = Assessment(
        shared=len(shared),
        distance=mean_view[0],
        relative=max(mean_view[1], own_view[1]),
        interference=max(mean_view[2], own_view[2]),
        worst=[(i, fbar[i], d_o[i], d_t[i]) for _, i in rows[:top]],
    )
    _finite([found.distance, found.relative, found.interference], "the conflict assessment")
    return found


def _measure(
    d_o: Sequence[float], d_t: Sequence[float], f: dict[int, float]
) -> tuple[float, float, float]:
    """(distance, relative distance, interference) over the coordinates of `f`, weighted by it."""
    sq = math.fsum(w * (d_o[i] - d_t[i]) ** 2 for i, w in f.items())
    norm_o = math.fsum(w * d_o[i] ** 2 for i, w in f.items())
    norm_t = math.fsum(w * d_t[i] ** 2 for i, w in f.items())
    mass = math.fsum(w * abs(d_o[i] * d_t[i]) for i, w in f.items())
    opposed = math.fsum(w * abs(d_o[i] * d_t[i]) for i, w in f.items() if d_o[i] * d_t[i] < 0)
    smaller = math.sqrt(min(norm_o, norm_t))
    distance = math.sqrt(sq)
    return distance, distance / smaller if smaller else 0.0, opposed / mass if mass else 0.0


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
    _finite(out, "the merged coordinates")
    return out


class MergeArithmeticError(BasinError):
    """A merge whose arithmetic left the finite numbers: refused, nothing is written."""


def _finite(values: Sequence[float], what: str) -> None:
    """Refuse a non-finite intermediate result rather than let it pass a check or reach a packet."""
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise MergeArithmeticError(f"merge refused: value {i} of {what} is {v}")


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
    beta = tuple((ours.weight * x + theirs.weight * y) / total for x, y in zip(a, b, strict=True))
    _finite(beta, "the merged β")
    return beta
