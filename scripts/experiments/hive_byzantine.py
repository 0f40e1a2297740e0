"""Byzantine instances in the hive: 3 of 10 instances attack, for every attack and every rule.

See scripts/experiments/hive_byzantine and docs/experiments/hive.md. The hive of
scripts/experiments/hive.py (its substrate, chart, tasks, coordinator and training loops; 10
instances: 4 negation, 3 topic, 3 agent) at H = 1 with the outer step `average`, once per
(attack, rule). The attackers are the last three instances (topic7, agent8, negation9: one per
task, so every task keeps honest instances); they train like the others and send instead:

- sign flip: −1 × their own change (error feedback kept, as an honest instance's);
- x100: 100 × their own change;
- x3: 3 × their own change (a scale the outlier check may let through);
- noise: a fresh N(0, σ²) vector every round (σ = --noise, 1.0: ten Adam steps of lr 0.1);
- a little is enough (Baruch et al. 2019): μ − z σ, μ and σ the coordinate-wise mean and standard
  deviation of the round's honest updates (omniscient attackers: they see the 7 honest updates
  before sending), z = Φ⁻¹((n − s)/n) with s = ⌊n/2 + 1⌋ − m (n = 10, m = 3: z = 0.524);
- inner product (Xie et al. 2020): −ε μ, ε = --ipm-eps (4: the smallest whole ε for which the
  mean of 7 honest and 3 such updates points against μ, 7 − 3ε < 0);
- replay: an honest instance's update of the same round, resent byte for byte;
- forged signature: an update in an honest instance's name (its key as author, the round's
  parent, a fresh sequence number, −100 × the attacker's change), signed with the attacker's key;
- inflated counts: −1 × their own change claiming 10⁹ samples per step.

Replays and forgeries are refused at intake (409 and 400), so their rounds close with the seven
updates the coordinator can take (M = 7, what the round timer would close with); every other
round closes at M = 10. The crafted attacks (noise, a little, inner product) are sent as top-k of
the crafted vector, without error feedback. The rules: sender_mean (the coordinator's default),
mean, trimmed_mean (trim --trim, 0.3: ⌊0.3 · 10⌋ = 3 values cut on each side), median,
centered_clip (default options);
the outlier check at c = --outlier-c in every run. Accuracy is normalised by the specialists of
the references (--references, a JSON of scripts/experiments/hive.py or of this script with the
same seed, instances, frozen layers, batch, learning rate; or trained here), and each run's mean
is compared with the same rule's run without attack (ratio; target ≥ 0.9 for the coordinator's
default rule).

Two ways of stopping the attackers, measured beside the rules: --remove-at R, the operator
removing their keys as round R opens (`basin key remove`); and --cohorts, the operator giving
each instance's task as its cohort (`basin key add --cohort`), so that the coordinator's
quarantine (basinvcs/hive/quarantine.py; --quarantine τ and --quarantine-after N, its defaults
otherwise) stops a signer whose summed updates point against all its cohort's others while those
agree — whoever it is, so the run without attack measures its false quarantines. A stopped
instance's own updates are refused (403) from then on, and it waits for each round.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hive import (  # noqa: E402
    TASKS,
    Experiment,
    add_frozen_layers,
    machine,
    machine_line,
    mean,
    normalised,
    references_from,
)

ATTACKS = (
    "none",
    "sign flip",
    "x100",
    "x3",
    "noise",
    "a little is enough",
    "inner product",
    "replay",
    "forged signature",
    "inflated counts",
)
REFUSED_AT_INTAKE = ("replay", "forged signature")
RULES = ("sender_mean", "mean", "trimmed_mean", "median", "centered_clip")
ATTACKERS = 3
TARGET = 0.9


def alie_z(n: int, m: int) -> float:
    """Baruch et al.'s z_max: the largest shift still inside the spread of the majority."""
    s = math.floor(n / 2 + 1) - m
    return statistics.NormalDist().inv_cdf((n - s) / n)


def roles(attack: str, names: list[str], args: argparse.Namespace):
    """roles(tap) for Experiment.hive: the last ATTACKERS instances play `attack`."""
    from basinvcs import porcelain
    from basinvcs.hive.trainer import HiveError, HiveTrainer
    from basinvcs.hive.update import next_update
    from basinvcs.repository import Repository

    attackers, honest = names[-ATTACKERS:], names[:-ATTACKERS]
    n = len(names)

    def make(tap) -> dict:
        def honest_updates() -> np.ndarray:
            round_ = tap.inner.head().round  # open until the attackers send: M counts them
            return np.array([u.delta() for u in tap.updates(round_, honest)])

        class Crafted(HiveTrainer):
            """Sends `craft()` instead of its change, without error feedback."""

            def outgoing(self, change):
                self.compressor.reset()
                return self.craft(np.array(change)).tolist()

            def craft(self, change: np.ndarray) -> np.ndarray:
                raise NotImplementedError

        class SignFlip(HiveTrainer):
            def outgoing(self, change):
                return [-v for v in change]

        class Scaled(HiveTrainer):
            factor = 100.0

            def outgoing(self, change):
                return [self.factor * v for v in change]

        class ScaledUnder(Scaled):
            factor = 3.0  # within the outlier check's reach of an honest round's spread

        class Inflated(SignFlip):
            def __init__(self, *a, **kw):
                super().__init__(*a, **{**kw, "samples_per_step": 10**9})

        class Noise(Crafted):
            def craft(self, change):
                rng = np.random.default_rng([args.seed, self.seq, *self.identity.public_key[:4]])
                return rng.normal(0.0, args.noise, change.shape)

        class ALittle(Crafted):
            def craft(self, change):
                x = honest_updates()
                return x.mean(0) - alie_z(n, ATTACKERS) * x.std(0)

        class InnerProduct(Crafted):
            def craft(self, change):
                return -args.ipm_eps * honest_updates().mean(0)

        def signed(trainer, head, factor: float, author: bytes, offset: int = 0) -> bytes:
            """`trainer`'s change times `factor` as an update of `head`'s round in `author`'s
            name, sequence number offset + its own, signed with `trainer`'s key."""
            return (
                next_update(
                    trainer.compressor,
                    [factor * v for v in trainer.change()],
                    chart=trainer.model.chart,
                    parent=head.cid,
                    round=head.round,
                    seq=offset + trainer.seq,
                    samples=trainer.samples_per_step,
                    author=author,
                )
                .signed(trainer.identity.sign)
                .encode()
            )

        class Refused(HiveTrainer):
            """Sends a record the coordinator must refuse, then waits for the round."""

            def round(self):
                # H = 1: the round the honest instances are in at this step (the rounds close
                # without this instance, so it may be behind or ahead of them)
                target = self.steps - 1
                head = self.transport.wait(target - 1, self.timeout) if target else tap.head()
                if head.round == target:  # else that round closed before this one could send
                    try:
                        self.transport.submit(self.record(head))
                    except HiveError:
                        pass
                    else:
                        raise AssertionError(f"{attack}: the coordinator took it in")
                self._move_to(self.transport.wait(target, self.timeout), carry=None)
                self._since = self.steps
                return None

        class Replay(Refused):
            def record(self, head):
                victim = honest[names.index(self.identity.name) % len(honest)]
                (update,) = tap.updates(head.round, [victim])
                return update.encode()

        class Forged(Refused):
            def record(self, head):
                victim = honest[names.index(self.identity.name) % len(honest)]
                self.seq += 1
                # the victim's key as author, signed with the attacker's
                return signed(self, head, -100.0, tap.identities[victim].public_key, 10**6)

        cls = {
            "none": HiveTrainer,
            "sign flip": SignFlip,
            "x100": Scaled,
            "x3": ScaledUnder,
            "noise": Noise,
            "a little is enough": ALittle,
            "inner product": InnerProduct,
            "replay": Replay,
            "forged signature": Forged,
            "inflated counts": Inflated,
        }[attack]
        coordinator = tap.inner.coordinator
        stopped: dict[str, int] = {}  # name -> the round its key was removed or quarantined at
        tap.removed = stopped
        name_of = {tap.identities[m].public_key: m for m in names}

        def stoppable(base):
            class Stoppable(base):
                """`base` until it is stopped (its key removed or quarantined), then its own
                update, signed, is refused with 403 (Refused.round), and it waits for each
                round. (The coordinator's rounds close with the signers left: M is at most the
                number of trusted signers not quarantined.)"""

                def round(self):
                    if self.identity.name in stopped:
                        return Refused.round(self)
                    return super().round()

                def record(self, head):
                    self.seq += 1
                    return signed(self, head, 1.0, self.identity.public_key)

            return Stoppable

        def remove(head) -> None:
            """--remove-at R: the operator, as round R opens, runs `basin key remove` for each
            attacker (another process saving the config: the coordinator takes it up at its
            next update)."""
            if coordinator.round != args.remove_at:
                return
            with Repository.open(coordinator.repo.basin_dir.parent) as operator:
                for name in attackers:
                    porcelain.untrust(operator, name)
                    stopped[name] = coordinator.round

        def quarantined(head) -> None:
            """--cohorts: who the coordinator quarantined as this round opened."""
            for key, (round_, _) in coordinator.journal.quarantined().items():
                if name_of[key] not in stopped:
                    stopped[name_of[key]] = round_
                    print(f"round {round_}: quarantined {name_of[key]}", file=sys.stderr)

        if args.cohorts:
            coordinator.on_head = quarantined
            return {m: stoppable(cls if m in attackers else HiveTrainer) for m in names}
        if args.remove_at is None:
            return {name: cls for name in attackers}
        coordinator.on_head = remove
        return {name: stoppable(cls) for name in attackers}

    return make


def report(data: dict) -> str:
    spec = {n: data["references"]["results"][n] for n in TASKS}
    runs = data["runs"]
    a = data["args"]

    def m(run) -> float:
        return mean(normalised(run["final"], spec).values())

    rules = list(dict.fromkeys(r["rule"] for r in runs))  # in the order they ran
    base = mean(normalised(data["references"]["results"]["base"], spec).values())

    honest = {r["rule"]: m(r) for r in runs if r["attack"] == "none"}
    lines = [
        f"seed {a['seed']}; {a['instances']} instances ({ATTACKERS} attack); MiniLM's first "
        f"{a['frozen_layers']} layers out of the chart; {a['steps']} local steps per instance, "
        f"H = 1, batch {a['batch']},"
        f" Adam lr {a['lr']}; outer step average; outlier factor c = {a['outlier_c']:g}; "
        f"trimmed_mean trim {a['trim']:g}"
        + (
            ""
            if a.get("remove_at") is None
            else f"; the attackers' keys removed as round {a['remove_at']} opens"
        )
        + (
            f"; cohorts given (each instance's task): quarantine τ {a['quarantine']} after "
            f"{a['quarantine_after']} updates (None: the coordinator's default)"
            if a.get("cohorts")
            else ""
        ),
        "",
        f"Mean normalised accuracy after the run (÷ specialists; the base, nothing learned, is "
        f"{base:.3f}); in brackets its ratio to the same rule's run without attack, and the part "
        "of that run's gain over the base it kept:",
        "",
        "| attack | " + " | ".join(rules) + " |",
        "|---|" + "---|" * len(rules),
    ]
    for attack in data["attacks"]:
        cells = []
        for rule in rules:
            run = next((r for r in runs if r["attack"] == attack and r["rule"] == rule), None)
            if run is None:
                cells.append("")
                continue
            v = m(run)
            ratio = ""
            if rule in honest and attack != "none":
                gain = honest[rule] - base  # none: the part kept is undefined
                kept = f"{(v - base) / gain:.2f}" if gain else "–"
                ratio = f" ({v / honest[rule]:.2f}; {kept})"
            cells.append(f"{v:.3f}{ratio}")
        lines.append(f"| {attack} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Refusals per run: intake (HTTP status: count) and outlier check (attackers' / honest "
        "updates):",
        "",
        "| attack | rule | intake | outliers: attackers | outliers: honest | per task "
        "| stopped at round |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        attackers = set(run["attackers"])
        bad = sum(v for k, v in run["refused"].items() if k in attackers)
        good = sum(v for k, v in run["refused"].items() if k not in attackers)
        norm = normalised(run["final"], spec)
        honest_updates = (run["instances"] - ATTACKERS) * run["rounds"]
        intake = ", ".join(f"{k}: {v}" for k, v in sorted(run["intake_refused"].items())) or "-"
        lines.append(
            f"| {run['attack']} | {run['rule']} | {intake} | {bad} of "
            f"{ATTACKERS * run['rounds']} | {good} of {honest_updates} | "
            + ", ".join(f"{t} {norm[t]:.3f}" for t in TASKS)
            + " | "
            + (", ".join(f"{m} {r}" for m, r in sorted(run["removed"].items())) or "-")
            + " |"
        )
    lines += ["", f"wall clock: {data['elapsed']:.0f} s; {machine_line(data)}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="Byzantine instances in the hive")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--instances", type=int, default=10)
    add_frozen_layers(ap, 4)
    ap.add_argument("--steps", type=int, default=60, help="local steps per instance")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated")
    ap.add_argument("--trim", type=float, default=0.3, help="trimmed_mean's trim fraction")
    ap.add_argument(
        "--k", type=int, default=None, help="coordinates per update (default: as many as fit)"
    )
    ap.add_argument("--outlier-c", type=float, default=10.0)
    ap.add_argument("--noise", type=float, default=1.0, help="σ of the noise attack")
    ap.add_argument("--ipm-eps", type=float, default=4.0, help="ε of the inner-product attack")
    ap.add_argument("--references", type=Path, default=None, help="a JSON of hive.py (--json)")
    ap.add_argument("--json", type=Path, default=None, help="write every measurement here")
    ap.add_argument(
        "--deltas", type=Path, default=None, help="save every run's updates here (npz per run)"
    )
    ap.add_argument(
        "--remove-at",
        type=int,
        default=None,
        help="the operator removes the attackers' keys as this round opens (basin key remove)",
    )
    ap.add_argument(
        "--cohorts",
        action="store_true",
        help="trust each instance with its task as cohort: the coordinator's quarantine judges",
    )
    ap.add_argument(
        "--quarantine", type=float, default=None, metavar="TAU", help="with --cohorts: its τ"
    )
    ap.add_argument(
        "--quarantine-after",
        type=int,
        default=None,
        metavar="N",
        help="with --cohorts: updates summed before a signer is judged",
    )
    ap.add_argument("--work", type=Path, default=None, help="where scratch repositories go")
    ap.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    args = ap.parse_args()
    # what Experiment.hive reads besides
    args.encoding, args.poison, args.curve = "topk-q8", 1.0, args.steps  # evaluated at the end
    if args.instances <= 2 * ATTACKERS:
        sys.exit(f"error: need more than {2 * ATTACKERS} instances")
    attacks, rules = args.attacks.split(","), args.rules.split(",")
    if not args.cohorts and (args.quarantine is not None or args.quarantine_after is not None):
        sys.exit("error: --quarantine and --quarantine-after go with --cohorts")
    given = (("quarantine_tau", args.quarantine), ("quarantine_after", args.quarantine_after))
    quarantine = {k: v for k, v in given if v is not None}
    for name in attacks:
        if name not in ATTACKS:
            sys.exit(f"error: unknown attack {name!r} (known: {', '.join(ATTACKS)})")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    exp = Experiment(args)
    data: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    data["machine"] = machine()
    if args.references:
        data["references"] = references_from(
            args.references, data, exp.log, ("seed", "lr", "batch", "instances", "frozen_layers")
        )
    else:
        data["references"] = exp.references()
    names = list(exp.instances)
    data["attacks"], data["runs"] = attacks, []
    for attack in attacks:
        for rule in rules:
            run = exp.hive(
                1,
                rule,
                "average",
                args.k,
                args.outlier_c,
                rule_options={"trim": args.trim} if rule == "trimmed_mean" else None,
                roles=roles(attack, names, args) if attack != "none" or args.cohorts else None,
                label=f"{attack} {rule}"
                + ("" if args.remove_at is None else f" removed at {args.remove_at}")
                + (" cohorts" if args.cohorts else ""),
                round_updates=len(names) - ATTACKERS if attack in REFUSED_AT_INTAKE else None,
                cohorts=args.cohorts,
                settings=quarantine,
            )
            deltas = run.pop("deltas")
            if args.deltas:  # every update taken in, by round and signer, for analysis afterwards
                args.deltas.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(
                    args.deltas / f"{attack}-{rule}.npz".replace(" ", "_"),
                    **{
                        f"{r}/{name}": np.array(u)
                        for r, by in deltas.items()
                        for name, u in by.items()
                    },
                )
            run["attack"] = attack
            run["attackers"] = names[-ATTACKERS:] if attack != "none" else []
            data["runs"].append(run)
            if args.json:  # after every run: a long measurement keeps what it has
                data["elapsed"] = time.perf_counter() - exp.t0
                args.json.write_text(json.dumps(data, indent=1))
    data["elapsed"] = time.perf_counter() - exp.t0
    print(report(data))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    if not args.keep:
        shutil.rmtree(exp.work, ignore_errors=True)


if __name__ == "__main__":
    main()
