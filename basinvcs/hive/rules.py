"""Robust aggregation rules: how a coordinator combines one round's updates into one change.

Each instance of a hive proposes a change δ of the shared basin's z (a dense vector of d floats),
with a weight (the samples it trained on, bounded by the caller) and optionally its Fisher diagonal.
A rule turns the round's changes into one aggregated change Δ, which the outer optimiser
(basinvcs.hive.outer) then applies. One interface, a registry, as basinvcs.merge.strategy:

- ``mean``: the weighted mean Σ w δ / Σ w (trusted hives; one update can move it anywhere);
- ``sender_mean``: per coordinate, the weighted mean of the updates that change it (nonzero), 0
  where none does: sparse (top-k) updates of instances on different tasks add up, as the steps of
  one training run would, while instances that change the same coordinates are averaged. A
  coordinate only one update changes is that update's alone, so each update is first clipped to
  `clip` (2) × the round's median norm. `power` p < 1 divides each coordinate's sum by its
  senders' weight to the power p instead (0: the plain sum of the clipped updates);
- ``trimmed_mean``: per coordinate, drop the ⌊β n⌋ smallest and largest values, weighted mean of
  the rest (Yin et al. 2018); within the honest range whenever ⌊β n⌋ ≥ the attackers;
- ``median``: the coordinate-wise median, by count: a weighted median would hand a coordinate to
  whoever claims the most samples;
- ``centered_clip``: centered clipping (Karimireddy, He & Jaggi 2021): v ← v + Σ p (δ − v)·
  min(1, τ/‖δ − v‖), a few iterations from the previous aggregate or the coordinate-wise median;
  each update moves v by at most p τ per iteration, whatever its size;
- ``fisher_mean``: Σ F w δ / Σ F w per coordinate, each F on the common scale
  (basinvcs.metrics.common_scale), the weighted mean where no update claims any information.

Every rule refuses non-finite or malformed input with one line (AggregationError) and returns
finite floats or refuses. Results are deterministic: the updates are first put in a canonical order
(by the caller's keys, e.g. author bytes, then by their bytes), so the same set of updates gives a
bit-identical Δ whatever order they arrived in.

`sender_mean` is the default, chosen by measurement on MiniLM (docs/experiments/hive.md), where
each instance trains its own task and sends the top 112–118 of 1,024 coordinates of its change
(as many as fit in 600 bytes): with three instances it kept 0.948 and 0.952 of joint training
over two seeds, with ten 0.919 on average over six at 120 local steps each and 0.874 at 60 (on
a second machine 0.951 and 0.858; at 52 coordinates: 0.922 and 0.941 with three, 0.842 with ten
at 60 steps; `mean` 0.912, 0.913 and, on two seeds, 0.674 and 0.688, since averaging ten
instances' single steps moves the basin about one step per round; `centered_clip` 0.877,
0.860). Summing instead (`mean` with the outer lr at N, or power 0) kept 0.906 and 0.844 with
ten over two seeds, and would take N steps at once from N instances of one task; the sender mean
sums only what no two updates share. No rule here survives sign flips of non-IID sparse updates
(the Byzantine table); scale is bounded before any rule by the outlier check (c = 10 refused
every ×100 update) and, in `sender_mean`, by its clip. On arithmetic alone
(scripts/bench/hive_rules.py, IID dense updates) `centered_clip` stays closest to the honest mean
under every attack.

A new rule is a `Rule` subclass decorated with `@register` in this module (or one imported by the
package), with its options and their defaults in `options`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import BasinError
from ..metrics import common_scale

DEFAULT_RULE = "sender_mean"  # measured on MiniLM: see above
DEFAULT_TRIM = 0.2  # β: ⌊β n⌋ values dropped on each side of every coordinate
DEFAULT_SENDER_CLIP = 2.0  # sender_mean: no update counts for more than 2 × the median norm
DEFAULT_SENDER_POWER = 1.0  # sender_mean: divide by the senders' weight itself (their mean)
DEFAULT_ITERATIONS = 3  # centered clipping: a few iterations from the median (or the last Δ)


class AggregationError(BasinError):
    """Updates a rule cannot combine: non-finite or malformed input, a bad option, or a result
    that left the finite numbers. Nothing is aggregated."""


class Rule:
    """How one round's updates combine. Subclasses set `name`, `summary` and `options` (the
    keyword options `combine` accepts, with their defaults) and implement `combine`."""

    name: str
    summary: str
    options: dict[str, Any] = {}

    def combine(
        self, x: np.ndarray, p: np.ndarray, fisher: np.ndarray | None, **options: Any
    ) -> np.ndarray:
        """The aggregated change of the (n, d) updates `x`, in canonical order, with weights `p`
        (> 0, summing to 1) and Fisher diagonals `fisher` on the common scale (n, d; None when no
        update has one). `options` holds every key of `self.options`."""
        raise NotImplementedError


REGISTRY: dict[str, Rule] = {}


def register(cls: type[Rule]) -> type[Rule]:
    REGISTRY[cls.name] = cls()
    return cls


def get(name: str) -> Rule:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(REGISTRY)
        raise AggregationError(f"unknown aggregation rule {name!r} (known: {known})") from None


def aggregate(
    rule: str,
    updates: Sequence[Sequence[float]],
    weights: Sequence[float] | None = None,
    fishers: Sequence[Sequence[float] | None] | None = None,
    keys: Sequence[Any] | None = None,
    **options: Any,
) -> list[float]:
    """One change Δ from the round's `updates` (each a dense change of z, all of one length d).

    `weights`: one per update, finite and > 0 (samples; the caller bounds them), equal if None;
    only their ratios count. `fishers`: one diagonal (or None: identity) per update, brought to
    the common scale here. `keys`: one sortable key per update (e.g. the author's bytes) fixing the
    order the updates are combined in; ties, and updates without keys, are ordered by their bytes.
    `options`: the rule's own (`get(rule).options`), e.g. ``trim=0.3`` or ``tau=0.5``.
    """
    chosen = get(rule)
    unknown = sorted(set(options) - set(chosen.options))
    if unknown:
        raise AggregationError(f"rule {rule} takes no option {unknown[0]!r}")
    x = as_updates(updates)
    n, d = x.shape
    w = as_weights(weights, n)
    f = as_fishers(fishers, n, d)
    order = canonical_order(x, w, f, keys)
    x, w = x[order], w[order]
    f = f[order] if f is not None else None
    p = w / w.max()  # in (0, 1]: no sum of them can overflow
    p = p / p.sum()
    with np.errstate(all="ignore"):
        out = chosen.combine(x, p, f, **{**chosen.options, **options})
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise AggregationError(f"aggregation refused: coordinate {bad[0]} of Δ is {out[bad[0]]}")
    return out.tolist()


# -- input ----------------------------------------------------------------------------------------


def as_updates(updates: Sequence[Sequence[float]], what: str = "update") -> np.ndarray:
    """The updates as an (n, d) float64 array, refused unless n >= 1, d >= 1, all finite."""
    if isinstance(updates, np.ndarray):
        plain = type(updates) is np.ndarray  # not a matrix or masked array: those are converted
        if plain and updates.dtype == np.float64 and updates.ndim == 2 and updates.size:
            _refuse_nonfinite(updates, what)  # no copy: the rules never write into their input
            return updates
        rows = updates
    else:
        if len(updates) == 0:
            raise AggregationError(f"no {what}s to combine")
        try:
            lengths = {len(u) for u in updates}
        except TypeError:
            raise AggregationError(f"{what}s must be vectors of numbers") from None
        if len(lengths) != 1:
            raise AggregationError(f"{what}s of different lengths: {sorted(lengths)}")
        rows = updates
    try:
        x = np.array(rows, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AggregationError(f"{what}s are not vectors of numbers: {exc}") from None
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise AggregationError(f"{what}s must be n >= 1 vectors of d >= 1 numbers, not {x.shape}")
    _refuse_nonfinite(x, what)
    return x


def as_fishers(
    fishers: Sequence[Sequence[float] | None] | None, n: int, d: int
) -> np.ndarray | None:
    """The Fisher diagonals on the common scale, (n, d); None if there are none at all. Each must
    be finite and >= 0; a missing one (None) stands for identity, as everywhere in basinvcs."""
    if fishers is None or all(f is None for f in fishers):
        if fishers is not None and len(fishers) != n:
            raise AggregationError(f"{len(fishers)} Fisher diagonals for {n} updates")
        return None
    if len(fishers) != n:
        raise AggregationError(f"{len(fishers)} Fisher diagonals for {n} updates")
    rows = []
    for k, f in enumerate(fishers):
        if f is None:
            rows.append([1.0] * d)
            continue
        try:
            a = np.array(f, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise AggregationError(f"Fisher diagonal {k} is not numbers: {exc}") from None
        if a.shape != (d,):
            raise AggregationError(f"Fisher diagonal {k} has shape {a.shape}, not ({d},)")
        _refuse_nonfinite(a[None, :], "Fisher diagonal", first=k)
        if (a < 0).any():
            raise AggregationError(f"Fisher diagonal {k} has a negative value")
        rows.append(common_scale(a.tolist(), d))
    return np.array(rows, dtype=np.float64)


def canonical_order(
    x: np.ndarray, w: np.ndarray, f: np.ndarray | None, keys: Sequence[Any] | None
) -> list[int]:
    """The order updates are combined in: by key, then by the bytes of (update, weight, Fisher),
    so that any arrival order of the same updates gives the same order (and the same result)."""
    n = x.shape[0]
    if keys is not None and len(keys) != n:
        raise AggregationError(f"{len(keys)} keys for {n} updates")

    def content(i: int) -> bytes:
        fb = f[i].tobytes() if f is not None else b""
        return x[i].tobytes() + w[i : i + 1].tobytes() + fb

    if keys is None:
        return sorted(range(n), key=content)
    try:
        return sorted(range(n), key=lambda i: (keys[i], _Content(i, content)))
    except TypeError as exc:
        raise AggregationError(f"update keys cannot be ordered: {exc}") from None


class _Content:
    """An update's bytes as a sort key, made only when compared: that is, only for updates
    whose keys are equal (a coordinator's keys, CIDs, are all distinct, and a round's bytes
    are megabytes)."""

    __slots__ = ("index", "make")

    def __init__(self, index: int, make: Callable[[int], bytes]):
        self.index, self.make = index, make

    def __lt__(self, other: _Content) -> bool:
        return self.make(self.index) < other.make(other.index)


def as_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """The `n` weights as floats, each finite and > 0 (equal if None)."""
    if weights is None:
        return np.ones(n)
    if len(weights) != n:
        raise AggregationError(f"{len(weights)} weights for {n} updates")
    for k, v in enumerate(weights):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise AggregationError(f"weight {k} ({v!r}) is not a number")
    try:
        w = np.array(weights, dtype=np.float64)
    except OverflowError:
        raise AggregationError("a weight is out of the float range") from None
    bad = np.flatnonzero(~(np.isfinite(w) & (w > 0)))
    if bad.size:
        raise AggregationError(f"weight {bad[0]} ({w[bad[0]]}) must be finite and > 0")
    return w


def _refuse_nonfinite(a: np.ndarray, what: str, first: int = 0) -> None:
    if np.isfinite(a).all():  # the common case: argwhere's index arrays cost 10 times as much
        return
    bad = np.argwhere(~np.isfinite(a))
    if bad.size:
        row, col = bad[0]
        raise AggregationError(f"{what} {first + row} has {a[row, col]} at coordinate {col}")


def _options_number(
    value: Any, what: str, low: float, high: float, *, open_low=False, open_high=False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AggregationError(f"{what} {value!r} is not a number")
    v = float(value)
    above = v > low if open_low else v >= low
    below = v < high if open_high else v <= high
    if not (math.isfinite(v) and above and below):
        lower = f"> {low:g}" if open_low else f">= {low:g}"
        upper = "finite" if high == math.inf else f"< {high:g}" if open_high else f"<= {high:g}"
        raise AggregationError(f"{what} {value} must be {lower} and {upper}")
    return v


# -- the rules ------------------------------------------------------------------------------------


def capped_samples(samples: Sequence[int]) -> list[float]:
    """The updates' sample counts as weights, each capped at the round's median: a count is the
    update's own claim, so inflating it buys nothing over a typical say (a cap at twice the
    median let three sign flippers claiming 10⁹ samples take the ten-instance hive to chance:
    docs/experiments/hive.md). Fewer samples than the median still count for less."""
    counts = sorted(samples)
    cap = counts[len(counts) // 2]
    return [float(min(s, cap)) for s in samples]


def column_median(x: np.ndarray) -> np.ndarray:
    """`np.median(x, axis=0)` (the same values; a zero's sign, which np.median leaves to the
    order its partition puts +0 and −0 in, is +), fast for the sparse rows a hive sends: a
    column whose two middle values (by rank) are both zero has median 0, known from its counts
    of negative and positive values; only the other columns are sorted. Top-k updates change
    an eighth of the coordinates each, so a round of 1,000 leaves a few columns to sort (21 →
    2 ms)."""
    n = x.shape[0]
    below = np.count_nonzero(x < 0, axis=0)
    above = np.count_nonzero(x > 0, axis=0)  # x is finite: the rest are zeros
    zero = (below <= (n - 1) // 2) & (n - above > n // 2)
    out = np.zeros(x.shape[1])
    columns = np.flatnonzero(~zero)
    if columns.size:
        out[columns] = np.median(x[:, columns], axis=0)
    return out


def weighted_mean(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Σ p δ, p summing to 1; the rows are added in their (canonical) order."""
    return (p[:, None] * x).sum(axis=0)


@register
class Mean(Rule):
    name = "mean"
    summary = "weighted mean Σ w δ / Σ w: for trusted hives, one update can move it anywhere"

    def combine(self, x, p, fisher, **options):
        return weighted_mean(x, p)


@register
class SenderMean(Rule):
    name = "sender_mean"
    summary = (
        "per coordinate, the weighted mean of the updates that change it (each clipped to `clip`"
        " × the round's median norm): the mean where they share coordinates, the sum where not;"
        " `power` < 1 divides by the senders' weight to that power (0: their sum)"
    )
    options = {"clip": DEFAULT_SENDER_CLIP, "power": DEFAULT_SENDER_POWER}

    def combine(self, x, p, fisher, **options):
        clip = _options_number(options["clip"], "clip factor", 0.0, math.inf, open_low=True)
        power = _options_number(options["power"], "power", 0.0, 1.0)
        # a coordinate only one update sends is that update's alone: bound how far it can go
        top = float(np.abs(x).max()) or 1.0
        norms = np.sqrt(((x / top) ** 2).sum(axis=1))  # in units of top: squares cannot overflow
        bound = clip * float(np.median(norms))
        scale = np.where(norms > bound, bound / np.where(norms > 0, norms, 1.0), 1.0)
        x = x * scale[:, None]
        sends = (x != 0) * p[:, None]
        mass = sends.sum(axis=0)
        # mass in units of the round's mean weight, so that `power` does not depend on its scale
        divisor = np.where(mass > 0, mass, 1.0) ** power * p.mean() ** (1.0 - power)
        return np.where(mass > 0, (sends * x).sum(axis=0) / divisor, 0.0)


@register
class TrimmedMean(Rule):
    name = "trimmed_mean"
    summary = "per coordinate, drop the ⌊β n⌋ lowest and highest values, weighted mean of the rest"
    options = {"trim": DEFAULT_TRIM}

    def combine(self, x, p, fisher, **options):
        beta = _options_number(options["trim"], "trim fraction", 0.0, 0.5, open_high=True)
        n = x.shape[0]
        k = math.floor(beta * n)  # 2k < n since beta < 0.5: something is always kept
        if k == 0:
            return weighted_mean(x, p)
        idx = np.argsort(x, axis=0, kind="stable")[k : n - k]
        kept = np.take_along_axis(x, idx, axis=0)
        pk = p[idx]
        return (pk * kept).sum(axis=0) / pk.sum(axis=0)


@register
class Median(Rule):
    name = "median"
    summary = "coordinate-wise median, by count (weights ignored: they are self-reported)"

    def combine(self, x, p, fisher, **options):
        return column_median(x)


@register
class CenteredClip(Rule):
    name = "centered_clip"
    summary = "centered clipping (Karimireddy et al. 2021): each update moves Δ by at most w τ"
    options = {"tau": None, "iterations": DEFAULT_ITERATIONS, "center": None}

    def combine(self, x, p, fisher, **options):
        iterations = options["iterations"]
        if type(iterations) is not int or not 1 <= iterations <= 100:
            raise AggregationError(f"iterations {iterations!r} must be an integer from 1 to 100")
        center = options["center"]
        if center is None:
            v = column_median(x)
        else:
            c = as_updates([center], "center")
            if c.shape[1] != x.shape[1]:
                raise AggregationError(f"center has {c.shape[1]} coordinates, updates {x.shape[1]}")
            v = c[0]
        tau = options["tau"]
        if tau is None:
            tau = default_tau(x, v)
        else:
            tau = _options_number(tau, "clipping radius tau", 0.0, math.inf, open_high=True)
        if tau == 0:
            return v
        for _ in range(iterations):
            diff = x - v
            norms = np.sqrt((diff * diff).sum(axis=1))
            scale = np.minimum(1.0, tau / np.maximum(norms, np.finfo(np.float64).tiny))
            v = v + ((p * scale)[:, None] * diff).sum(axis=0)
        return v


def default_tau(x: np.ndarray, center: np.ndarray) -> float:
    """The clipping radius when none is given: the median distance of the updates to the starting
    center, a statistic of the round an honest majority sets (so the radius scales with the
    updates' own size, and a minority far away cannot widen it)."""
    diff = x - center
    return float(np.median(np.sqrt((diff * diff).sum(axis=1))))


@register
class FisherMean(Rule):
    name = "fisher_mean"
    summary = "Σ F w δ / Σ F w per coordinate, F on the common scale: for fully trusted hives"

    def combine(self, x, p, fisher, **options):
        if fisher is None:
            return weighted_mean(x, p)
        pf = p[:, None] * fisher  # each F in [0, d], p <= 1: no overflow
        mass = pf.sum(axis=0)
        num = (pf * x).sum(axis=0)
        plain = weighted_mean(x, p)
        safe = np.where(mass > 0, mass, 1.0)
        return np.where(mass > 0, num / safe, plain)


RULES = tuple(REGISTRY)  # in registration order
