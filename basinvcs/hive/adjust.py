"""What a round does to a basin besides z: its β and its concept links, as most of the round says.

An update may carry a change of β's coefficients and the concept links (entanglements) its signer
measured. They are few numbers that weigh a lot (β scales every coordinate's effect on the model),
so they move only by what more than half of the round's taken updates agree on, a rule three
attackers of ten cannot steer:

- β: each coefficient moves by the median of the taken updates' changes of it, an update without
  a β change counting as no change (so β stays put unless most of the round moves it, and then
  moves by no more than the honest middle); a change that would leave β non-finite is dropped.
- links: a pair's strength becomes the median of the strengths reported for it, when more than
  half of the taken updates report it; other pairs keep theirs. The weakest links are dropped
  until the packet fits its size limit (`concepts.fit_links`, as a merge's links are).

The coordinator and every replica apply this to the same updates and get the same basin (medians
of the same floats: no arithmetic that depends on the machine but the mean of two middle values).
Both also leave out, the same way, updates whose round cannot be stored (`storable`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..concepts import fit_links
from ..errors import BasinError
from ..objects import MAX_ENTANGLEMENTS, Basin, Entanglement
from .update import Update

T = TypeVar("T")


def storable(
    kept: Sequence[int], size: Callable[[int], Any], combine: Callable[[list[int]], T]
) -> tuple[T | None, list[int], list[tuple[int, BasinError]]]:
    """`combine(kept)` (a round's updates, by index, into the basin they make), refusing the
    kept update of the largest `size` (a sortable key: its norm, then its CID) each time the
    result cannot be stored, until one can or none is left: (the result or None, the updates
    kept, each refused with why). Valid updates can add up to a z past float24's range, over one
    round or several; this way no update can keep a round from closing."""
    kept, refused = list(kept), []
    while kept:
        try:
            return combine(kept), kept, refused
        except BasinError as exc:  # arithmetic on valid updates: nothing was written
            largest = max(kept, key=size)
            kept.remove(largest)
            refused.append((largest, exc))
    return None, kept, refused


def refusal(update: Update, basin: Basin) -> str | None:
    """Why `update`'s adjustments cannot apply to `basin` (the head it is checked against), or
    None: a β change must have as many coefficients as the basin's β."""
    if update.beta is not None and len(update.beta) != len(basin.beta):
        return (
            f"update changes {len(update.beta)} β coefficients; the basin's β has {len(basin.beta)}"
        )
    return None


def apply(basin: Basin, z: Sequence[float], updates: Sequence[Update]) -> Basin:
    """`basin` at `z`, with β and links moved as the round's taken `updates` agree (see above).
    Every update must have passed `refusal` against `basin`."""
    moved = basin.with_z(z)
    if not updates:
        return moved
    beta = _beta(basin.beta, updates)
    if beta != basin.beta:
        moved = moved.with_beta(beta)
    links = _links(basin.entanglements, updates)
    if links is None:
        return moved
    strongest = sorted(links, key=lambda e: (-abs(e.strength), e.a, e.b))
    return fit_links(moved, strongest[:MAX_ENTANGLEMENTS])


def _beta(beta: tuple[float, ...], updates: Sequence[Update]) -> tuple[float, ...]:
    changes = [u.beta if u.beta is not None else (0.0,) * len(beta) for u in updates]
    moved = tuple(b + statistics.median(c[j] for c in changes) for j, b in enumerate(beta))
    return moved if all(math.isfinite(b) for b in moved) else beta


def _links(current: Sequence[Entanglement], updates: Sequence[Update]) -> list[Entanglement] | None:
    """The links after the round, or None when it changes none: a pair more than half of the
    updates report takes the median of their strengths."""
    reports: dict[tuple[str, str], list[float]] = {}
    for u in updates:
        for e in u.links or ():
            reports.setdefault((e.a, e.b), []).append(e.strength)
    agreed = {p: statistics.median(v) for p, v in reports.items() if 2 * len(v) > len(updates)}
    strengths = {(e.a, e.b): e.strength for e in current}
    if all(strengths.get(pair) == w for pair, w in agreed.items()):
        return None
    strengths.update(agreed)
    return [Entanglement(a, b, w) for (a, b), w in strengths.items()]
