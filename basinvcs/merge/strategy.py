"""Merge strategies: one interface, a registry, and the rule they all share.

As in a git merge, a coordinate only one side changed takes that side's change whole (so sides
that changed disjoint coordinates merge to exactly all their changes, under every strategy); a
strategy decides only the coordinates several sides changed, from each such side's weight, Fisher
value (on the common scale, basinvcs.metrics) and change. Any number of sides may take part.

A new strategy is a new module in this package: a `Strategy` subclass decorated with `@register`,
imported by the package's `__init__`; the CLI offers whatever is registered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import BasinError
from ..metrics import common_scale
from .sides import MergeArithmeticError, Side, delta, finite

# (weight, Fisher value on the common scale, change) of each side that changed one coordinate
Share = tuple[float, float, float]
Deltas = list[list[float]]  # every side's change, a list of d floats each
Vectors = Sequence[Sequence[float]]

# `add` keeps each skill whole where specialists changed little besides it, which the averaging
# strategies halve (docs/results.md, "Skill transfer on a pretrained base"; docs/merge.md)
DEFAULT_STRATEGY = "add"


class Strategy:
    """How the coordinates several sides changed combine. Subclasses set `name` and `summary`
    and implement `coordinate`; `picks` strategies take one side's basin whole instead."""

    name: str
    summary: str
    picks: bool = False

    def prepare(self, deltas: Deltas, weights: Sequence[float], fishers: Vectors) -> Deltas:
        """The changes as this strategy counts them, from all sides' changes, weights and Fisher
        diagonals (on the common scale) at once (TIES trims them, `add` scales the shared
        coordinates); as they are by default."""
        return deltas

    def coordinate(self, shares: Sequence[Share]) -> float:
        """The merged change of one coordinate that two or more sides changed."""
        raise NotImplementedError

    def pick(self, sides: Sequence[Side]) -> list[float]:
        """For `picks` strategies: the chosen side's coordinates."""
        raise NotImplementedError


def weighted_mean(shares: Sequence[Share]) -> float:
    """Σ w δ / Σ w: the plain weighted average of the changes."""
    return math.fsum(w * d for w, _, d in shares) / math.fsum(w for w, _, _ in shares)


REGISTRY: dict[str, Strategy] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Strategy:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise BasinError(f"unknown merge strategy {name!r} (known: {known})") from None


def combine(base: Sequence[float], sides: Sequence[Side], strategy: str) -> list[float]:
    """The merged coordinates of `sides` (ours first) against `base` under `strategy`."""
    rule = get(strategy)
    if rule.picks:
        return list(rule.pick(sides))
    fishers = [common_scale(s.fisher, len(base)) for s in sides]
    out: list[float] = []
    try:
        deltas = rule.prepare([delta(s.z, base) for s in sides], [s.weight for s in sides], fishers)
        for i, z0 in enumerate(base):
            changed = [k for k, d in enumerate(deltas) if d[i]]
            if len(changed) <= 1:
                out.append(z0 + sum(deltas[k][i] for k in changed))  # one side's change, whole
            else:
                shares = [(sides[k].weight, fishers[k][i], deltas[k][i]) for k in changed]
                out.append(z0 + rule.coordinate(shares))
    except (OverflowError, ZeroDivisionError) as exc:  # fsum's overflow; weights API callers set
        raise MergeArithmeticError(f"merge refused: coordinate {len(out)}: {exc}") from None
    finite(out, "the merged coordinates")
    return out
