"""What each signer of a hive did, from the coordinator's journal: its updates taken, refused and
pending, and where its updates, summed over the rounds, point relative to every other signer's.

No aggregation rule tells a sign-flipped update from an honest update of another task (docs/
experiments/hive.md, the Byzantine section), but summed over enough rounds an instance that works
against its task-mates points against them (the fourth probe there: cosines of −0.45 to −0.89
against every honest task-mate by round 60, honest task-mates +0.30 to +0.87). The coordinator
does not know which instances share a task; its operator usually does. This report is what the
operator reads before `basin key remove`, which stops a signer on the running coordinator.

Each update is scaled to unit norm before it is summed, so every round counts alike (a few large
updates do not decide a signer's direction), as in the probe. Summed are the updates the
quarantine sums: those taken and those refused as outliers (an outlier too says where its signer
pushes), not those refused because their signer may not send (`CANNOT_SEND`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from ..errors import BasinError, RepositoryError
from ..objects import Chart
from .journal import PENDING, REFUSED, TAKEN
from .update import Update

# why the coordinator refuses an update whose signer may not send (or not in that round): such
# an update says nothing about where its signer pushes (the quarantine does not count it, nor
# does this report)
UNTRUSTED = "signer no longer trusted"
QUARANTINED = "signer quarantined"
ROUND_FULL = "round full: it took its M updates that arrived before this one"
CANNOT_SEND = frozenset({UNTRUSTED, QUARANTINED, ROUND_FULL})

K = TypeVar("K", bytes, str)  # a signer: its key (the coordinator) or a name (the experiments)


@dataclass(frozen=True)
class Signer:
    """One signer's part in the rounds the journal holds. `against` and `along`: the other signer
    whose summed direction has the lowest and the highest cosine with this one's, and that cosine;
    None where no other's points against (cosine < 0), or along (> 0), this one's, or this signer
    (or every other) has no counted update (taken, or refused as an outlier) with a nonzero
    change. With one other signer, that one is either the most against or the most along, not
    both."""

    author: bytes
    taken: int
    refused: int
    pending: int
    last_round: int
    against: tuple[bytes, float] | None
    along: tuple[bytes, float] | None


def unit_sums(updates: Iterable[tuple[K, np.ndarray]]) -> dict[K, np.ndarray]:
    """Per signer, the sum of its updates each scaled to unit norm (a zero change adds nothing)."""
    sums: dict[K, np.ndarray] = {}
    for author, delta in updates:
        norm = float(np.linalg.norm(delta))
        if norm > 0:
            sums[author] = sums.get(author, 0.0) + delta / norm
    return sums


def cosines(sums: dict[K, np.ndarray]) -> tuple[list[K], np.ndarray]:
    """The signers (in sorted order) and the cosine of every pair of their summed directions."""
    keys = sorted(k for k, v in sums.items() if np.linalg.norm(v) > 0)
    if not keys:
        return [], np.zeros((0, 0))
    unit = np.stack([sums[k] / np.linalg.norm(sums[k]) for k in keys])
    return keys, np.clip(unit @ unit.T, -1.0, 1.0)


def report(
    history: Iterable[tuple[bytes, int, str, str | None, bytes]],
    chart: Chart,
    progress: Callable[[int], None] = lambda n: None,
) -> list[Signer]:
    """Every signer of `history` (`Journal.history`: author, round, status, why refused,
    record), by its key. `progress(1)` after each update (a journal may hold 100,000 of them:
    each counted one is decoded and its signature checked again, about 0.1 ms). One pass,
    holding one summed direction per signer, not the updates."""
    counts: dict[bytes, dict[str, int]] = {}
    last: dict[bytes, int] = {}

    def counted() -> Iterator[tuple[bytes, np.ndarray]]:
        for author, round_, status, why, data in history:
            progress(1)
            counts.setdefault(author, {TAKEN: 0, REFUSED: 0, PENDING: 0})[status] += 1
            last[author] = max(round_, last.get(author, round_))
            if status == TAKEN or (status == REFUSED and why not in CANNOT_SEND):
                try:
                    update = Update.decode(data, chart=chart)
                except BasinError as exc:
                    raise RepositoryError(
                        f"the hive journal holds an update that is not one: {exc}"
                    ) from None
                yield author, np.asarray(update.delta())

    keys, cos = cosines(unit_sums(counted()))
    index = {k: i for i, k in enumerate(keys)}
    out = []
    for author in sorted(counts):
        against = along = None
        i = index.get(author)
        if i is not None and len(keys) > 1:
            others = [j for j in range(len(keys)) if j != i]
            low = min(others, key=lambda j: (cos[i, j], keys[j]))
            high = max(others, key=lambda j: (cos[i, j], keys[j]))
            if cos[i, low] < 0:
                against = (keys[low], float(cos[i, low]))
            if cos[i, high] > 0:
                along = (keys[high], float(cos[i, high]))
        c = counts[author]
        out.append(Signer(author, c[TAKEN], c[REFUSED], c[PENDING], last[author], against, along))
    return out
