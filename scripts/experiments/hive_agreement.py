"""Do signers' updates, summed over rounds, tell the attackers from their honest task-mates?

A probe of a reputation defence against sign flips before building one (docs/experiments/hive.md,
"Defences against sign flips"): reads the updates `hive_byzantine --deltas DIR` saved (one npz
per run, keys "round/signer", each the dense change an update sent), sums each signer's updates
over the rounds so far (each scaled to unit norm, so every round counts alike) and prints, at the
rounds asked, the cosine of every pair of signers of the same task (the task is the signer's name
without its number: topic7 is topic's), attackers marked with *.

    .venv/bin/python scripts/experiments/hive_agreement.py deltas/sign_flip-sender_mean.npz \
        --attackers topic7,agent8,negation9 --rounds 5,10,20,60
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

from basinvcs.hive import signers


def load(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """round → signer → the change its update sent."""
    rounds: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(path) as data:
        for key in data.files:
            r, signer = key.split("/")
            rounds[int(r)][signer] = data[key]
    return dict(rounds)


def task(signer: str) -> str:
    return re.sub(r"\d+$", "", signer)


def agreement(
    rounds: dict[int, dict[str, np.ndarray]], stops: list[int]
) -> dict[int, dict[tuple[str, str], float]]:
    """At each stop (a number of rounds), the cosine of every same-task pair's summed updates
    (`basinvcs.hive.signers`: each update at unit norm, as `basin hive signers` sums them)."""
    out: dict[int, dict[tuple[str, str], float]] = {}
    for stop in stops:
        sent = ((s, u) for r in sorted(rounds) if r < stop for s, u in rounds[r].items())
        keys, cos = signers.cosines(signers.unit_sums(sent))
        out[stop] = {
            (keys[i], keys[j]): float(cos[i, j])
            for i, j in combinations(range(len(keys)), 2)
            if task(keys[i]) == task(keys[j])
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deltas", type=Path, help="an npz of hive_byzantine --deltas")
    ap.add_argument("--attackers", default="topic7,agent8,negation9")
    ap.add_argument("--rounds", default="5,10,20,60", help="comma-separated")
    args = ap.parse_args()
    attackers = set(args.attackers.split(","))
    table = agreement(load(args.deltas), [int(r) for r in args.rounds.split(",")])
    pairs = sorted({p for by in table.values() for p in by}, key=lambda p: (task(p[0]), p))
    print("| pair | " + " | ".join(f"round {r}" for r in table) + " |")
    print("|---" * (len(table) + 1) + "|")
    for a, b in pairs:
        name = " · ".join(s + ("*" if s in attackers else "") for s in (a, b))
        print(f"| {name} | " + " | ".join(f"{by[(a, b)]:+.2f}" for by in table.values()) + " |")


if __name__ == "__main__":
    main()
