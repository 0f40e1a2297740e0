"""Do signers' updates, summed over rounds, tell the attackers from their honest task-mates?

A probe of a reputation defence against sign flips before building one (docs/experiments/hive.md,
"Defences against sign flips"): reads the updates `hive_byzantine --deltas DIR` saved (one npz
per run, keys "round/signer", each the dense change an update sent), sums each signer's updates
over the rounds so far (each scaled to unit norm, so every round counts alike) and prints, at the
rounds asked, the cosine of every pair of signers of the same task (the task is the signer's name
without its number: topic7 is topic's), attackers marked with *.

    .venv/bin/python scripts/experiments/hive_agreement.py deltas/sign_flip-sender_mean.npz \
        --attackers topic7,agent8,negation9 --rounds 5,10,20,60

With `--cohort-free TAU`, the seventh probe instead: a quarantine that does not know the tasks,
replayed on the run's updates. As each round opens, among the signers with at least `--after`
summed updates not yet quarantined, each signer's score is how many others point against it
(cosine below −TAU) less how many point along it (above TAU) and itself; the highest score, if
above 0, is quarantined and the scores counted again, until none is. It prints the round each
signer was quarantined at. (A replay: the updates after a quarantine are the run's own, made
with the quarantined signer still in.)
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


def cohort_free(rounds: dict[int, dict[str, np.ndarray]], tau: float, after: int) -> dict[str, int]:
    """Signer → the round the seventh probe's rule quarantines it at (see the module's doc)."""
    out: dict[str, int] = {}
    for stop in range(after, max(rounds) + 2):
        sent = [(s, u) for r in sorted(rounds) if r < stop for s, u in rounds[r].items()]
        count = defaultdict(int)
        for s, _ in sent:
            count[s] += 1
        sums = signers.unit_sums((s, u) for s, u in sent if s not in out and count[s] >= after)
        keys, cos = signers.cosines(sums)
        alive = list(range(len(keys)))
        while alive:
            scores = {
                i: sum(1 for j in alive if j != i and cos[i, j] < -tau)
                - sum(1 for j in alive if j == i or cos[i, j] > tau)
                for i in alive
            }
            worst = max(alive, key=lambda i: (scores[i], keys[i]))
            if scores[worst] <= 0:
                break
            out[keys[worst]] = stop
            alive.remove(worst)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deltas", type=Path, help="an npz of hive_byzantine --deltas")
    ap.add_argument("--attackers", default="topic7,agent8,negation9")
    ap.add_argument("--rounds", default="5,10,20,60", help="comma-separated")
    ap.add_argument("--cohort-free", type=float, default=None, metavar="TAU")
    ap.add_argument("--after", type=int, default=20, help="with --cohort-free")
    args = ap.parse_args()
    attackers = set(args.attackers.split(","))
    if args.cohort_free is not None:
        held = cohort_free(load(args.deltas), args.cohort_free, args.after)
        for signer, at in sorted(held.items(), key=lambda kv: (kv[1], kv[0])):
            print(f"round {at}: {signer}{'*' if signer in attackers else ''}")
        print(f"quarantined {len(held)}: {len(set(held) & attackers)} of the attackers")
        return
    table = agreement(load(args.deltas), [int(r) for r in args.rounds.split(",")])
    pairs = sorted({p for by in table.values() for p in by}, key=lambda p: (task(p[0]), p))
    print("| pair | " + " | ".join(f"round {r}" for r in table) + " |")
    print("|---" * (len(table) + 1) + "|")
    for a, b in pairs:
        name = " · ".join(s + ("*" if s in attackers else "") for s in (a, b))
        print(f"| {name} | " + " | ".join(f"{by[(a, b)]:+.2f}" for by in table.values()) + " |")


if __name__ == "__main__":
    main()
