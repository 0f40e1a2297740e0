"""The conflict check: how much two sides' changes disagree where both changed, measured before
anything is combined (docs/merge.md). A packet without a Fisher diagonal counts as identity;
every diagonal is on the common scale (basinvcs.metrics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..metrics import common_scale, distance
from .sides import Side, delta, finite

DEFAULT_MAX_DISTANCE = 4.0
DEFAULT_MAX_INTERFERENCE = 0.8  # measured: honest specialist pairs 0.43-0.55, a sign flip 1.0


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


def assess(base: Sequence[float], ours: Side, theirs: Side, top: int = 5) -> Assessment:
    """The conflict check's measurements, taken twice: under F̄ (the mean of both diagonals) and
    under our own diagonal alone; the larger relative distance and interference count. Their
    diagonal may steer the merge's weights, but it is something their packet says about itself,
    so it cannot talk the check down (all its information piled on the few coordinates where it
    agrees with us would otherwise hide a sign flip everywhere else)."""
    d_o, d_t = delta(ours.z, base), delta(theirs.z, base)
    f_o, f_t = common_scale(ours.fisher, len(base)), common_scale(theirs.fisher, len(base))
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
    finite([found.distance, found.relative, found.interference], "the conflict assessment")
    return found


def _measure(
    d_o: Sequence[float], d_t: Sequence[float], f: dict[int, float]
) -> tuple[float, float, float]:
    """(distance, relative distance, interference) over the coordinates of `f`, weighted by it:
    the basin metric (basinvcs.metrics) restricted to the coordinates both sides changed."""
    weights, a, b = list(f.values()), [d_o[i] for i in f], [d_t[i] for i in f]
    zero = [0.0] * len(a)
    dist = distance(a, b, weights)
    smaller = min(distance(a, zero, weights), distance(b, zero, weights))
    mass = math.fsum(w * abs(x * y) for w, x, y in zip(weights, a, b, strict=True))
    opposed = math.fsum(w * abs(x * y) for w, x, y in zip(weights, a, b, strict=True) if x * y < 0)
    return dist, dist / smaller if smaller else 0.0, opposed / mass if mass else 0.0
