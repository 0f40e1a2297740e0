"""Quarantine: a coordinator told which signers share a task stops the one working against it.

No aggregation rule tells a sign-flipped update from an honest update of another task, and within
one round two honest updates of one task are as unlike each other as a flipped one is unlike them
(docs/experiments/hive.md, probes 1 to 5). Summed over rounds they are not: an instance working
against its task points against every honest instance of that task, which agree with each other
(probe 4). The coordinator cannot know the tasks; its operator can, and says so per trusted key
(`basin key add --cohort NAME`, config.json's "cohort": never anything an update says).

So the coordinator keeps, per signer with a cohort, the sum of its updates each scaled to unit
norm (every round counts alike), in its journal: those taken and those refused as outliers (an
outlier too says where its signer pushes; only updates refused because their signer may not send
are left out); and as each round opens it quarantines a
signer whose sum points against the sum of every other judged signer of its cohort (cosine
below −τ) while those others agree with each other (every cosine above 0). Judged are the
signers with at least `after` summed updates, not quarantined, in a cohort with at least three
of them: with two, neither can be told from the other. A quarantined signer's updates are refused
(403, with the reason) until the operator releases it (`basin hive release`), which also starts
its sum again.

τ = 0.3 and 20 updates are what the sixth probe chose beforehand; measured on the coordinator
(ten MiniLM instances, three attacking, 120 local steps, six seeds): 0.93, 0.96, 0.91 of the
honest run under sign flips, inner-product manipulation and inflated counts, an honest instance
quarantined in 2 of 6 honest runs and 2 of 18 attacked ones; at 60 local steps 0.88, 0.87,
0.87 (the quarantines come too late in a shorter run). Attackers who know τ can evade it with
a milder flip, or by sending honestly until the sums settle; attackers who are half of a cohort
or more are not judged (each has a partner that agrees), and where they are all of it but one
honest signer, they have that one quarantined (two colluders in a cohort of three do).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..errors import BasinError
from .signers import cosines

DEFAULT_TAU = 0.3
DEFAULT_AFTER = 20  # summed updates before a signer is judged (or judges another)
MIN_COHORT = 3


def check(tau: float, after: int) -> None:
    if not (math.isfinite(tau) and 0 <= tau < 1):
        raise BasinError(f"quarantine threshold {tau} must be at least 0 and below 1")
    if not 1 <= after < 1 << 31:
        raise BasinError(f"quarantine after {after} updates: must be at least 1")


def judge(
    sums: Mapping[bytes, tuple[np.ndarray, int]],
    cohorts: Mapping[bytes, str],
    tau: float = DEFAULT_TAU,
    after: int = DEFAULT_AFTER,
) -> dict[bytes, str]:
    """The signers to quarantine now, each with why (one line, naming no key: the caller's
    message does). `sums`: per signer, its summed unit-norm updates and how many; `cohorts`:
    per signer to judge, its cohort (signers without one, or quarantined, are left out by the
    caller)."""
    judged = {
        k: v for k, (v, n) in sums.items() if k in cohorts and n >= after and np.linalg.norm(v) > 0
    }
    keys, cos = cosines(judged)
    at = {k: i for i, k in enumerate(keys)}
    out: dict[bytes, str] = {}
    for cohort in sorted({cohorts[k] for k in keys}):
        members = [at[k] for k in keys if cohorts[k] == cohort]
        if len(members) < MIN_COHORT:
            continue
        within = cos[np.ix_(members, members)]
        for a, m in enumerate(members):
            theirs = np.delete(within[a], a)
            if theirs.max() >= -tau:  # most signers: not against every other (O(n) each)
                continue
            others = np.delete(np.delete(within, a, 0), a, 1)
            agree = others[np.triu_indices(len(others), 1)].min()
            if agree > 0:
                out[keys[m]] = (
                    f"its updates point against every other signer of cohort {cohort} "
                    f"(cosines {theirs.min():+.2f} to {theirs.max():+.2f} over "
                    f"{sums[keys[m]][1]} updates; theirs agree, {agree:+.2f} or more)"
                )
    return out
