"""What the hive's update encodings cost in accuracy, measured without a model.

For each encoding (basinvcs/hive/update.py) at d = 1024, with two k: the encoding's fixed default
(`default_k`: what fits even the largest record, with Fisher codes, 8 β coefficients and the
largest integers) and what a hive sender sends by default (`fitting_k` of a record with neither
Fisher codes nor β, as the trainer, `basin hive submit` and replicas send; seed-0 chart, small
round/seq/samples):

- bytes: the encoded size of the signed update record (with Fisher codes for the sent coordinates
  and a one-coefficient β change for the fixed k; with neither for the sender's);
- one update: relative L2 error ‖decode(encode(x)) − x‖ / ‖x‖ of one Gaussian change x, and of
  the sent coordinates alone (the quantisation error);
- 50 rounds: relative L2 error of the cumulative sum, ‖Σ decoded − Σ x‖ / ‖Σ x‖, after rounds
  1, 10, 25 and 50 of independent Gaussian changes, with error feedback (Compressor) and
  without (each change encoded on its own), and the cosine of Σ decoded with Σ x at round 50.

Means over TRIALS seeds; everything is deterministic. Usage:
    .venv/bin/python scripts/bench/update_codec.py [TRIALS]
"""

from __future__ import annotations

import math
import random
import statistics
import sys

from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.hive.update import (
    ENCODINGS,
    Compressor,
    SentFisher,
    Update,
    encode_change,
    fitting_k,
)
from basinvcs.identity import Identity
from basinvcs.objects import Chart

DIM = 1024
ROUNDS = 50
CHECKPOINTS = (1, 10, 25, 50)
SIGNER = Identity(bytes(range(32)), "bench")
PARENT = CID.for_block(dagcbor.encode({"bench": 1}))


def norm(v: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


def rel_error(approx: list[float], exact: list[float]) -> float:
    return norm([a - e for a, e in zip(approx, exact, strict=True)]) / norm(exact)


def gaussian(rng: random.Random) -> list[float]:
    return [rng.gauss(0.0, 1.0) for _ in range(DIM)]


def record(encoding: str, k: int, extras: bool) -> Update:
    """An update sending k coordinates of a Gaussian change; with `extras`, Fisher codes for them
    and a one-coefficient β change."""
    rng = random.Random(0)
    change = encode_change(gaussian(rng), encoding, k)
    fisher = SentFisher.for_change(change, [rng.random() for _ in range(DIM)]) if extras else None
    beta = (0.01,) if extras else None
    return Update(Chart(dim=DIM), PARENT, 3, 7, change, 32, SIGNER.public_key, fisher, beta)


def one_update(encoding: str, k: int, rng: random.Random) -> tuple[float, float]:
    x = gaussian(rng)
    change = encode_change(x, encoding, k)
    sent = [x[i] for i in change.indices]
    return rel_error(change.decode(), x), rel_error(change.values(), sent)


def rounds(
    encoding: str, k: int, rng: random.Random, feedback: bool
) -> tuple[dict[int, float], float]:
    compressor = Compressor(DIM, encoding, k)
    total = [0.0] * DIM
    sent = [0.0] * DIM
    errors = {}
    for r in range(1, ROUNDS + 1):
        x = gaussian(rng)
        change = compressor.compress(x) if feedback else encode_change(x, encoding, k)
        total = [t + v for t, v in zip(total, x, strict=True)]
        sent = [s + v for s, v in zip(sent, change.decode(), strict=True)]
        if r in CHECKPOINTS:
            errors[r] = rel_error(sent, total)
    cosine = math.fsum(s * t for s, t in zip(sent, total, strict=True)) / (norm(sent) * norm(total))
    return errors, cosine


def main() -> None:
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    print(f"d = {DIM}, {trials} trials, {ROUNDS} rounds of N(0, 1) changes per trial")
    for name, encoding in ENCODINGS.items():
        sender = fitting_k(record(name, 0, extras=False), name)
        for k, extras in ((encoding.default_k(DIM), True), (sender, False)):
            size = len(record(name, k, extras).signed(SIGNER.sign).encode())
            what = "default_k; Fisher codes, β of 1" if extras else "a sender's; fitting_k"
            print(f"\n{name}: k = {k} ({what}), record {size} bytes")
            report(name, k, trials)


def report(name: str, k: int, trials: int) -> None:
    """One encoding at k: one update's error, and 50 rounds' with and without feedback."""
    singles = [one_update(name, k, random.Random(seed)) for seed in range(trials)]
    whole = statistics.fmean(e for e, _ in singles)
    quant = statistics.fmean(q for _, q in singles)
    print(f"  one update: rel. L2 error {whole:.4f} (sent coordinates alone {quant:.4f})")
    for feedback in (True, False):
        runs = [rounds(name, k, random.Random(1000 + seed), feedback) for seed in range(trials)]
        label = "with error feedback   " if feedback else "without error feedback"
        points = ", ".join(
            f"r{r} {statistics.fmean(e[r] for e, _ in runs):.4f}" for r in CHECKPOINTS
        )
        cosine = statistics.fmean(c for _, c in runs)
        print(f"  cumulative, {label}: {points}; cosine at r{ROUNDS} {cosine:.4f}")


if __name__ == "__main__":
    main()
