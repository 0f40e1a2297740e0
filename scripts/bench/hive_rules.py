"""The hive's aggregation rules under attack, and their cost (basinvcs.hive.rules).

Usage: .venv/bin/python scripts/bench/hive_rules.py [--seeds N]

A round of 10 instances at d = 1024, 3 of them attackers. Honest updates are a common direction
(norm 1) plus per-instance noise (norm 1): each honest update's cosine to the common direction is
about 0.7. Each attack replaces the 3 attackers' updates:

- sign flip: the attacker's own honest update, negated;
- x100: the attacker's own honest update, times 100; sign flip x100: both;
- noise: Gaussian noise, 10 times an honest update's per-coordinate spread;
- a little is enough (Baruch et al. 2019): every attacker sends μ_j − z_max σ_j sign(μ_j), μ and σ
  the honest updates' coordinate-wise mean and standard deviation, z_max = Φ⁻¹((n − s) / n),
  s = ⌊n/2 + 1⌋ − f (0.52 here): inside the honest spread, pulling every coordinate against the
  honest mean;
- inner product manipulation (Xie et al. 2020): every attacker sends −ε·(mean of the honest
  updates), ε = 0.1 (aimed at median-like rules) and ε = 10 (turns the mean around).

Printed per attack × rule: the cosine of the aggregate Δ to the honest mean (the mean of the 7
honest updates, what a round without the attackers would give; of all 10 in the row without an
attack) and the relative error ‖Δ − mean‖ / ‖mean‖, each the median over seeds. Then the time
to aggregate 1,000 updates at d = 1024 under each rule (given as lists of floats, as they come off
the wire; median of 5; target under a second).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from basinvcs.hive.rules import aggregate

N, F, D = 10, 3, 1024
NONE = "none (10 honest)"  # the cost of each rule's robustness when nobody attacks
RULES = [
    ("mean", {}),
    ("sender_mean", {}),  # dense updates here: the mean of updates clipped to 2 × the median norm
    ("trimmed_mean", {}),  # β = 0.2: trims 2 per side of 10
    ("trimmed_mean", {"trim": 0.3}),  # trims 3 per side: as many as the attackers
    ("median", {}),
    ("centered_clip", {}),
]


def honest_round(rng: np.random.Generator, n: int = N, d: int = D) -> np.ndarray:
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    noise = rng.standard_normal((n, d)) / np.sqrt(d)
    return direction + noise


def alie(honest: np.ndarray, n: int, f: int) -> np.ndarray:
    s = n // 2 + 1 - f
    z_max = statistics.NormalDist().inv_cdf((n - s) / n)
    mu, sigma = honest.mean(axis=0), honest.std(axis=0)
    return np.tile(mu - z_max * sigma * np.sign(mu), (f, 1))


def attacks(rng: np.random.Generator, updates: np.ndarray, f: int) -> dict[str, np.ndarray]:
    """Each attack's round: the honest updates with the first `f` replaced."""
    n, d = updates.shape
    honest = updates[f:]
    mean = honest.mean(axis=0)
    spread = float(honest.std(axis=0).mean())
    bad = {
        NONE: updates[:f],
        "sign flip": -updates[:f],
        "x100": 100 * updates[:f],
        "sign flip x100": -100 * updates[:f],
        "noise (10x spread)": 10 * spread * rng.standard_normal((f, d)),
        "a little is enough": alie(honest, n, f),
        "inner product eps=0.1": np.tile(-0.1 * mean, (f, 1)),
        "inner product eps=10": np.tile(-10 * mean, (f, 1)),
    }
    return {name: np.vstack([b, honest]) for name, b in bad.items()}


def label(rule: str, options: dict) -> str:
    return rule + "".join(f" {k}={v}" for k, v in options.items())


def quality(seeds: int) -> None:
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        updates = honest_round(rng)
        for attack, rows in attacks(rng, updates, F).items():
            honest = rows if attack == NONE else rows[F:]
            target = honest.mean(axis=0)
            for rule, options in RULES:
                agg = np.array(aggregate(rule, rows.tolist(), **options))
                cos = float(agg @ target / (np.linalg.norm(agg) * np.linalg.norm(target)))
                err = float(np.linalg.norm(agg - target) / np.linalg.norm(target))
                results.setdefault((attack, label(rule, options)), []).append((cos, err))
    names = [label(r, o) for r, o in RULES]
    print(f"{N} instances, {F} attackers, d = {D}; median over {seeds} seeds")
    print("cosine of Δ to the honest mean / relative error ‖Δ − honest mean‖ / ‖honest mean‖")
    width = 22
    print(f"{'attack':<24}" + "".join(f"{n:>{width}}" for n in names))
    attacks_seen = list(dict.fromkeys(a for a, _ in results))
    for attack in attacks_seen:
        cells = []
        for name in names:
            values = results[(attack, name)]
            cos = statistics.median(v[0] for v in values)
            err = statistics.median(v[1] for v in values)
            cells.append(f"{cos:+.3f} / {err:7.3f}")
        print(f"{attack:<24}" + "".join(f"{c:>{width}}" for c in cells))


def timing(n: int = 1000, runs: int = 5) -> None:
    rng = np.random.default_rng(0)
    rows = honest_round(rng, n).tolist()
    print(f"\ntime to aggregate {n} updates at d = {D} (lists of floats in, median of {runs}):")
    worst = 0.0
    for rule, options in [*RULES, ("fisher_mean", {})]:
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            aggregate(rule, rows, **options)
            samples.append(time.perf_counter() - start)
        took = statistics.median(samples)
        worst = max(worst, took)
        print(f"  {label(rule, options):<24} {took * 1000:8.1f} ms")
    fishers = np.abs(rng.standard_normal((n, D))).tolist()
    start = time.perf_counter()
    aggregate("fisher_mean", rows, fishers=fishers)
    took = time.perf_counter() - start
    worst = max(worst, took)
    print(f"  {'fisher_mean, n Fishers':<24} {took * 1000:8.1f} ms")
    print(f"target: under 1 s for every rule: {'met' if worst < 1 else 'MISSED'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    quality(args.seeds)
    timing()


if __name__ == "__main__":
    main()
