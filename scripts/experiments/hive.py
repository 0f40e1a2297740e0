"""The hive on MiniLM: N instances (3 by default) train inside one shared basin, each on one task,
and synchronise through a coordinator every H local steps with small signed updates.

See scripts/experiments/hive and docs/experiments/hive.md. One process, one seed S (chart seed =
data seed = S), one torch thread per Python thread. With --instances 10 the tasks go round in turn
(4 negation, 3 topic, 3 agent instances); --frozen-layers K leaves MiniLM's first K layers out of
the chart (fixed at θ0; a step 1.4× cheaper at K = 4, for many instances on 2 cores):

1. the substrate and chart of scripts/experiments/skill_transfer: all-MiniLM-L6-v2 as
   BertForSequenceClassification, one 8-way head at zero inside θ0 (negation 0-1, topic 2-5,
   agent 6-7), dropout off; d = 1024, the word-embedding table masked out;
2. references, side by side in four threads: the three specialists exactly as skill_transfer
   trains them (`train`, Adam lr 0.1, batch 32, T steps, seed S; Fisher diagonal on 16 batches of
   8; z rounded to float24 as a commit stores it), and joint training of one basin on all three
   tasks for N·T steps (the hive's total compute), each batch split over the tasks as the
   instances are (batch 32, N = 3: 11 + 11 + 10 sentences; batch 16, N = 10: 6 + 5 + 5); the
   one-shot merges of the three specialists (their plain average, which is the linear merge,
   and the three-way Fisher merge, `merge.combine`);
3. for every H and every (rule, outer optimiser): a fresh coordinator repository (its own
   `Coordinator`, round = the N instances' updates, the default outlier check) that trusts the
   N instance keys; N threads, each an ordinary training loop on its task (the specialist's
   optimiser, learning rate and batches; the k-th copy of a task with the data seed + 1000 k)
   calling `HiveTrainer.step()` after every optimiser step
   and `finish()` at the end: every H steps the change of z goes out as a signed update
   (top-k 8-bit with error feedback) through `Coordinator.submit` as bytes, and the instance
   restarts from the head the coordinator committed (its Adam state stays local);
4. the heads of the rounds are read back from the coordinator's repository and evaluated;
   normalised accuracy = accuracy on task k / the specialist k's (as in skill_transfer);
5. the default is the setting with the best mean normalised accuracy whose updates are all
   ≤ 600 bytes; it is run again with one instance (agent) poisoned: it sends --poison (−100 by
   default) times its change;
6. the outlier check is replayed on every honest round with one instance's update replaced by a
   poisoned one (sign flip, ×100, sign flip ×100), each instance in turn.

Prints markdown; writes the measurements as JSON (--json) and the plot (--plot).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from skill_transfer import (  # noqa: E402  (the same substrate, chart and tasks)
    EXCLUDE,
    FISHER_BATCH,
    FISHER_BATCHES,
    NUM_LABELS,
    OFFSETS,
    SUBSTRATE,
    TASKS,
    minilm_folder,
)

ROOT = Path(__file__).resolve().parents[2]
ATTACKS = {"sign flip": -1.0, "x100": 100.0, "sign flip x100": -100.0}
LAYERS = 6  # MiniLM's
BYTES_TARGET = 600
TARGET = 0.9  # of joint training's mean normalised accuracy


def instances(n: int) -> dict[str, tuple[str, int]]:
    """Instance name -> (its task, its data seed offset): the tasks in turn, so n = 10 is four
    negation instances and three each of topic and agent. With one instance per task the names
    are the tasks' and the offsets 0 (the specialists' batches); the k-th copy of a task draws
    its batches with seed + 1000 k."""
    if n == len(TASKS):
        return {name: (name, 0) for name in TASKS}
    return {f"{TASKS[i % 3]}{i}": (TASKS[i % 3], 1000 * (i // 3)) for i in range(n)}


def identity_for(name: str):
    from basinvcs.identity import Identity

    return Identity(hashlib.sha256(f"hive experiment {name}".encode()).digest(), name)


class Experiment:
    def __init__(self, args: argparse.Namespace):
        import transformers

        from basinvcs.model.registry import add_hf_substrate, load_substrate
        from basinvcs.model.texttasks import make_text_task
        from basinvcs.model.train import BasinModel
        from basinvcs.objects import Chart

        self.args = args
        self.t0 = time.perf_counter()
        self.work = Path(tempfile.mkdtemp(prefix="hive-", dir=args.work))
        os.environ["BASIN_HOME"] = str(self.work / "home")  # the coordinators' identity
        folder = minilm_folder()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        add_hf_substrate(
            SUBSTRATE,
            folder,
            architecture="BertForSequenceClassification",
            config_overrides={
                "num_labels": NUM_LABELS,
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            },
            zero_init=["classifier.*"],
        )
        self.sub = load_substrate(SUBSTRATE)
        # --frozen-layers K: the chart leaves MiniLM's first K layers out too (for many instances
        # on 2 cores: a step's backward pass stops above them)
        self.exclude = EXCLUDE + (
            (f"*layer.[0-{args.frozen_layers - 1}].*",) if args.frozen_layers else ()
        )
        self.chart = Chart.masked("srht", args.seed, 1024, self.exclude)
        self.tasks = {name: make_text_task(name, seed=args.seed) for name in TASKS}
        self.proj = BasinModel(self.sub, self.chart).projection
        self.evaluators = {
            name: BasinModel(self.sub, self.chart, projection=self.proj) for name in TASKS
        }
        self.instances = instances(args.instances)
        self.identities = {name: identity_for(name) for name in self.instances}

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.0f} s] {msg}", file=sys.stderr, flush=True)

    def model(self, z=None):
        from basinvcs.model.train import BasinModel

        return BasinModel(self.sub, self.chart, z, projection=self.proj)

    # -- tasks

    def loss_for(self, name: str):
        from basinvcs.model.texttasks import encode
        from basinvcs.model.train import logits_of

        lo, n = OFFSETS[name], len(self.tasks[name].labels)

        def loss(model, batch):
            sentences, labels = batch
            logits = logits_of(model(**encode(self.tokenizer, sentences)))
            return F.cross_entropy(logits[:, lo : lo + n], labels)

        return loss

    def evaluate(self, z) -> dict[str, float]:
        """Held-out accuracy of z on every task, the tasks in three threads."""
        from basinvcs.model.texttasks import accuracy
        from basinvcs.model.train import logits_of

        z = torch.as_tensor(z, dtype=torch.float32)
        out: dict[str, float] = {}

        def one(name: str) -> None:
            model = self.evaluators[name]
            with torch.no_grad():
                model.z.copy_(z)
            model.eval()
            lo, n = OFFSETS[name], len(self.tasks[name].labels)
            with torch.no_grad():
                out[name] = accuracy(
                    lambda inputs: logits_of(model(**inputs))[:, lo : lo + n],
                    self.tasks[name],
                    self.tokenizer,
                )

        run_threads({name: (lambda n=name: one(n)) for name in TASKS})
        return {name: out[name] for name in TASKS}

    # -- references

    def references(self) -> dict:
        from basinvcs import merge as mm
        from basinvcs.model.train import fisher_diagonal, train

        args = self.args
        spec_z, fishers, joint_z, seconds = {}, {}, {}, {}

        def specialist(name: str) -> None:
            model = self.model()
            start = time.perf_counter()
            train(
                model,
                self.tasks[name],
                args.steps,
                args.lr,
                args.batch,
                args.seed,
                loss_fn=self.loss_for(name),
            )
            seconds[name] = time.perf_counter() - start
            gen = torch.Generator().manual_seed(args.seed + 1)
            batches = [self.tasks[name].batch(FISHER_BATCH, gen) for _ in range(FISHER_BATCHES)]
            fishers[name] = fisher_diagonal(model, batches, self.loss_for(name)).tolist()
            model.snap_()  # as commit_model_in_basin stores it (skill_transfer evaluates this)
            spec_z[name] = model.z.detach().clone()

        def joint() -> None:
            from basinvcs.model.texttasks import encode
            from basinvcs.model.train import logits_of

            model = self.model()
            opt = torch.optim.Adam([model.z], lr=args.lr)
            gen = torch.Generator().manual_seed(args.seed)
            # one joint step per instance step: the hive's compute
            per = len(self.instances)
            sizes = joint_batch(args.batch, [t for t, _ in self.instances.values()])
            start = time.perf_counter()
            model.train()
            for step in range(1, per * args.steps + 1):
                parts = [self.tasks[n].batch(s, gen) for n, s in zip(TASKS, sizes, strict=True)]
                sentences = [s for part in parts for s in part[0]]
                logits = logits_of(model(**encode(self.tokenizer, sentences)))
                loss, row = 0.0, 0
                for name, (_, labels) in zip(TASKS, parts, strict=True):
                    lo, width = OFFSETS[name], len(self.tasks[name].labels)
                    rows = logits[row : row + len(labels), lo : lo + width]
                    loss = loss + F.cross_entropy(rows, labels, reduction="sum")
                    row += len(labels)
                loss = loss / row
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % (per * args.curve) == 0 or step == per * args.steps:
                    joint_z[step // per] = model.z.detach().clone()
            model.eval()
            seconds["joint"] = time.perf_counter() - start

        jobs = {name: (lambda n=name: specialist(n)) for name in TASKS}
        jobs["joint"] = joint
        run_threads(jobs)
        self.log(f"references trained: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}")
        results = {"base": self.evaluate(torch.zeros(1024))}
        for name in TASKS:
            results[name] = self.evaluate(spec_z[name])
        joint_curve = {str(s): self.evaluate(z) for s, z in sorted(joint_z.items())}
        results["joint"] = joint_curve[str(args.steps)]
        zero = [0.0] * 1024
        sides = [mm.Side(spec_z[n].tolist(), fishers[n], (1.0,), 1.0) for n in TASKS]
        results["one-shot average"] = self.evaluate(
            torch.stack([spec_z[n].double() for n in TASKS]).mean(0)
        )
        results["one-shot fisher"] = self.evaluate(mm.combine(zero, sides, "fisher"))
        for key, value in results.items():
            self.log(f"{key}: {value}")
        self.spec_z = spec_z
        return {
            "results": results,
            "joint_curve": joint_curve,
            "seconds": seconds,
            "z_norm": {n: float(spec_z[n].norm()) for n in TASKS},
        }

    # -- one hive

    def hive(
        self,
        every: int,
        rule: str,
        outer: str,
        k: int | None,
        c: float,
        poisoned: str | None = None,
        *,
        rule_options: dict | None = None,
        optimizer_options: dict | None = None,
        roles=None,
        label: str = "",
        round_updates: int | None = None,
        cohorts: bool = False,
        settings: dict | None = None,
    ) -> dict:
        """One hive run: a fresh coordinator, a thread per instance. `poisoned`: the instance
        sending --poison × its change. `roles(tap)`: instance name -> a HiveTrainer subclass to
        use for it (attackers; the tap sees every update taken in), evaluated like the others.
        `round_updates`: M (default: one update per instance). `cohorts`: each instance's key
        trusted with its task as cohort (`basin key add --cohort`), which the coordinator's
        quarantine judges by. `settings`: more of the coordinator's Settings."""
        from basinvcs import porcelain
        from basinvcs.hive.coordinator import Coordinator, Settings
        from basinvcs.hive.trainer import HiveTrainer, LocalTransport
        from basinvcs.identity import format_key

        args = self.args
        n = len(self.instances)
        options = {**(rule_options or {}), **(optimizer_options or {})}
        extra = "".join(f" {key}={v:g}" for key, v in options.items())
        label = label or f"H={every} {rule}+{outer}{extra} k={k or 'default'} c={c:g}"
        label += f" {poisoned} poisoned x{args.poison:g}" if poisoned else ""
        path = self.work / "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in label)
        repo = porcelain.init(path, dim=1024, seed=args.seed, exclude=self.exclude, name="hub")
        for name, ident in self.identities.items():
            cohort = self.instances[name][0] if cohorts else None
            porcelain.trust(repo, format_key(ident.public_key), ident.name, cohort=cohort)
        settings = Settings(
            round_updates=round_updates or n,
            round_seconds=1e5,
            rule=rule,
            optimizer=outer,
            outlier_c=c,
            rule_options=rule_options or {},
            optimizer_options=optimizer_options or {},
            **(settings or {}),
        )
        coordinator = Coordinator(repo, settings)
        genesis = coordinator.head()
        transport = Tap(LocalTransport(coordinator), self.identities)
        trainers: dict[str, HiveTrainer] = {}

        class Poisoned(HiveTrainer):
            def outgoing(self, change):
                return [args.poison * v for v in change]

        classes = {name: HiveTrainer for name in self.instances}
        if poisoned:
            classes[poisoned] = Poisoned
        classes.update(roles(transport) if roles else {})

        def instance(name: str) -> None:
            task, offset = self.instances[name]
            model = self.model()
            hive = classes[name](
                model,
                transport,
                self.identities[name],
                every=every,
                encoding=args.encoding,
                k=k,
                samples_per_step=args.batch,
                seq=0,  # counted from 0, not the clock: the same update bytes on every run
                timeout=3600,
            )
            trainers[name] = hive
            opt = torch.optim.Adam([model.z], lr=args.lr)
            gen = torch.Generator().manual_seed(args.seed + offset)  # the specialist's batches
            loss_fn = self.loss_for(task)
            model.train()
            for _ in range(args.steps):
                loss = loss_fn(model, self.tasks[task].batch(args.batch, gen))
                opt.zero_grad()
                loss.backward()
                opt.step()
                hive.step()
            hive.finish()
            model.eval()

        start = time.perf_counter()
        run_threads({name: (lambda n=name: instance(n)) for name in self.instances})
        seconds = time.perf_counter() - start
        # the heads, read back from the coordinator's repository
        heads = [coordinator.head()]
        while heads[-1] != genesis:
            heads.append(repo.read_commit(heads[-1]).parents[0])
        heads.reverse()  # heads[r]: the head after round r - 1 (heads[0]: genesis)
        # rounds as an instance that took part in every one saw them: an honest one (where
        # every instance may be stopped, the one with the longest history: never stopped)
        honest = [name for name in self.instances if classes[name] is HiveTrainer]
        first = max(
            (trainers[name] for name in honest or self.instances), key=lambda t: len(t.history)
        )
        rounds = len(first.history)
        steps_at = [0]
        for record in first.history:
            steps_at.append(steps_at[-1] + record.sent.steps)
        by_round: dict[int, dict[str, object]] = {r: {} for r in range(rounds)}
        for author, update, _ in transport.sent:
            by_round[update.round][author] = update
        taken = {name: [s.taken for s in trainers[name].history] for name in self.instances}
        # heads after each round: a round whose updates were all refused keeps the head
        head_after, moved = [], 0
        for r in range(rounds):
            moved += any(len(t) > r and t[r] for t in taken.values())
            head_after.append(heads[moved])
        points = [
            r
            for r in range(rounds)
            if steps_at[r + 1] % args.curve == 0 or every >= args.curve or r == rounds - 1
        ]
        curve = {}
        for r in points:
            z = repo.read_basin(repo.read_commit(head_after[r]).basin).z
            curve[str(steps_at[r + 1])] = self.evaluate(z)
        final = curve[str(steps_at[-1])]
        z_final = repo.read_basin(repo.read_commit(heads[-1]).basin).z
        sizes = [len(data) for _, _, data in transport.sent]
        out = {
            "label": label,
            "instances": n,
            "every": every,
            "rule": rule,
            "rule_options": rule_options or {},
            "optimizer_options": optimizer_options or {},
            "outer": outer,
            "k": k,
            "c": c,
            "poisoned": poisoned,
            "poison": args.poison if poisoned else None,
            "rounds": rounds,
            "steps": steps_at[-1],
            "seconds": seconds,
            "final": final,
            "z_norm": float(torch.tensor(z_final).norm()),
            "curve": curve,
            "bytes": {name: trainers[name].bytes_sent for name in self.instances},
            "max_update_bytes": max(sizes),
            "coordinates": max(u.change.k for _, u, _ in transport.sent),
            "taken": {name: sum(bool(t) for t in taken[name]) for name in self.instances},
            "refused": {name: sum(t is False for t in taken[name]) for name in self.instances},
            "intake_refused": dict(transport.refused),
            # name -> the round it was stopped at (removed or quarantined: hive_byzantine)
            "removed": dict(getattr(transport, "removed", {})),
            "status": coordinator.status(),
            "deltas": {
                str(r): {name: u.delta() for name, u in sorted(by_round[r].items())}
                for r in range(rounds)
            },
        }
        repo.close()
        self.log(
            f"{label}: {rounds} rounds, {seconds:.0f} s, final {final}, max update "
            f"{out['max_update_bytes']} B, refused {sum(out['refused'].values())}, intake "
            f"refusals {out['intake_refused']}"
            + (f", removed {out['removed']}" if out["removed"] else "")
        )
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
        return out


class Tap:
    """The transport, keeping (signer name, update, bytes) of every update taken in, in order,
    and counting refusals at intake by HTTP status; `updates(round, names)` waits for the given
    instances' updates of a round (what an omniscient attacker sees)."""

    def __init__(self, inner, identities: dict):
        self.inner, self.sent = inner, []
        self.refused: dict[int, int] = {}
        self.identities = identities
        self._names = {ident.public_key: name for name, ident in identities.items()}
        self._cond = threading.Condition()

    def submit(self, data: bytes) -> dict:
        from basinvcs.hive.trainer import HiveError
        from basinvcs.hive.update import Update

        try:
            update = Update.decode(data)
        except Exception:  # noqa: BLE001 - a forgery: the coordinator says why
            update = None
        try:
            answer = self.inner.submit(data)
        except HiveError as exc:
            found = re.search(r"HTTP (\d+)", str(exc))
            status = int(found.group(1)) if found else 0
            with self._cond:
                self.refused[status] = self.refused.get(status, 0) + 1
            raise
        with self._cond:
            self.sent.append((self._names.get(update.author, "?"), update, data))
            self._cond.notify_all()
        return answer

    def updates(self, round_: int, names: list[str], timeout: float = 3600) -> list:
        """The updates the instances `names` had taken in for `round_`, once all of them are."""

        def ready():
            got = {n: u for n, u, _ in self.sent if u.round == round_ and n in names}
            return got if len(got) == len(names) else None

        with self._cond:
            got = self._cond.wait_for(ready, timeout)
        if got is None:
            raise TimeoutError(f"round {round_}: the honest updates did not all arrive")
        return [got[n] for n in names]

    def __getattr__(self, name):
        return getattr(self.inner, name)


def add_frozen_layers(ap: argparse.ArgumentParser, default: int) -> None:
    ap.add_argument(
        "--frozen-layers",
        type=int,
        default=default,
        choices=range(LAYERS),
        help="leave MiniLM's first K layers out of the chart",
    )


def joint_batch(batch: int, tasks: list[str]) -> list[int]:
    """Joint training's batch split over TASKS in the instances' proportions (32 over three
    tasks: 11, 11, 10; 16 over 4 + 3 + 3 instances: 6, 5, 5)."""
    shares = [batch * tasks.count(t) / len(tasks) for t in TASKS]
    sizes = [int(s) for s in shares]
    for k in sorted(range(len(TASKS)), key=lambda k: sizes[k] - shares[k])[: batch - sum(sizes)]:
        sizes[k] += 1
    return sizes


def run_threads(jobs: dict) -> None:
    """Run each job in its own thread; re-raise the first failure."""
    errors: list[BaseException] = []

    def wrap(job):
        def run():
            try:
                job()
            except BaseException as exc:
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(job), daemon=True) for job in jobs.values()]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if errors:
            raise errors[0]  # the others may wait on a round that will not close
        time.sleep(0.2)
    if errors:
        raise errors[0]


# -- the outlier check, replayed ------------------------------------------------------------------


def replay(runs: list[dict], c: float) -> dict:
    """The coordinator's outlier check on every honest round, as taken, and with each instance's
    update in turn replaced by a poisoned version."""
    from basinvcs.hive import outliers

    honest = {"rounds": 0, "updates": 0, "flagged": 0}
    attacks = {a: {"rounds": 0, "accepted": 0, "honest flagged": 0} for a in ATTACKS}
    for run in runs:
        for deltas in run["deltas"].values():
            rows = list(deltas.values())
            report = outliers.check(rows, c=c)
            honest["rounds"] += 1
            honest["updates"] += len(rows)
            honest["flagged"] += len(report.outliers)
            for attack, factor in ATTACKS.items():
                for t in range(len(rows)):
                    poisoned = list(rows)
                    poisoned[t] = [factor * v for v in rows[t]]
                    report = outliers.check(poisoned, c=c)
                    attacks[attack]["rounds"] += 1
                    attacks[attack]["accepted"] += t not in report.outliers
                    attacks[attack]["honest flagged"] += sum(k != t for k in report.outliers)
    return {"honest": honest, "attacks": attacks}


# -- the report -----------------------------------------------------------------------------------


def normalised(acc: dict[str, float], spec: dict[str, dict[str, float]]) -> dict[str, float]:
    return {n: acc[n] / spec[n][n] for n in TASKS}


def machine() -> dict:
    """What the numbers were measured on. Runs are exact on one machine, but the hive's updates
    have thresholds (which coordinates, which 8-bit code) that turn last-bit differences of
    another CPU's float kernels into other updates: a seed's ratio moved by up to 0.05 between
    two machines (docs/experiments/hive.md)."""
    import platform

    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def machine_line(data: dict) -> str:
    m = data.get("machine")
    return "machine: " + (", ".join(f"{k} {v}" for k, v in m.items()) if m else "not recorded")


def references_from(path: Path, data: dict, log, same: tuple, defaults: dict | None = None) -> dict:
    """The references of an earlier --json, refused (exit) unless measured with the same
    `same` settings (`defaults` for runs from before a setting existed); a note when they were
    measured on another machine."""
    earlier = json.loads(path.read_text())
    defaults = defaults or {}
    if any(earlier["args"].get(key, defaults.get(key)) != data["args"][key] for key in same):
        sys.exit(f"error: {path} was measured with other {', '.join(same)}")
    if "machine" not in earlier:
        log(f"note: {path} does not say which machine measured it")
    elif earlier["machine"] != data["machine"]:
        log(f"note: {path} was measured on another machine ({machine_line(earlier)})")
    return earlier["references"]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def report(data: dict) -> str:
    res = data["references"]["results"]
    spec = {n: res[n] for n in TASKS}
    joint_mean = mean(normalised(res["joint"], spec).values())
    a = data["args"]
    lines = [
        f"seed {a['seed']}; {a['instances']} instances; MiniLM's first "
        f"{a.get('frozen_layers', 0)} layers out of the chart; "
        f"{a['steps']} local steps per instance (batch {a['batch']}, Adam lr {a['lr']}); "
        f"updates {a['encoding']}",
        "",
        "| model | " + " | ".join(TASKS) + " |",
        "|---|" + "---|" * len(TASKS),
    ]
    for key in ("base", *TASKS, "joint", "one-shot average", "one-shot fisher"):
        lines.append(f"| {key} | " + " | ".join(f"{res[key][t]:.3f}" for t in TASKS) + " |")
    lines += [
        "",
        "Normalised accuracy (task k ÷ specialist k on task k); ratio = mean ÷ joint's mean; "
        "bytes: sent per instance (the most of any), largest update:",
        "",
        "| model | H | k | c | rounds | " + " | ".join(TASKS) + " | mean | ratio | bytes |"
        " update | refused | ‖z‖ |",
        "|---|---|---|---|---|" + "---|" * len(TASKS) + "---|---|---|---|---|---|",
    ]
    for key in ("joint", "one-shot average", "one-shot fisher"):
        norm = normalised(res[key], spec)
        m = mean(norm.values())
        lines.append(
            f"| {key} | | | | | "
            + " | ".join(f"{norm[t]:.3f}" for t in TASKS)
            + f" | {m:.3f} | {m / joint_mean:.3f} | | | | |"
        )
    for run in data["hives"]:
        norm = normalised(run["final"], spec)
        m = mean(norm.values())
        refused = sum(run["refused"].values())
        lines.append(
            f"| {run['rule']}+{run['outer']}"
            + "".join(
                f" {key} {v:g}"
                for key, v in {
                    **run.get("rule_options", {}),
                    **run.get("optimizer_options", {}),
                }.items()
            )
            + (f", {run['poisoned']} poisoned ×{run['poison']:g}" if run["poisoned"] else "")
            + f" | {run['every']} | {run['coordinates']} | {run['c']:g} | {run['rounds']} | "
            + " | ".join(f"{norm[t]:.3f}" for t in TASKS)
            + f" | {m:.3f} | {m / joint_mean:.3f} | {max(run['bytes'].values())} |"
            f" {run['max_update_bytes']} | {refused} of {run['instances'] * run['rounds']} |"
            f" {run['z_norm']:.1f} |"
        )
    d = data["default"]
    lines += [
        "",
        f"default (best mean with every update ≤ {BYTES_TARGET} bytes): {d['label']}, mean "
        f"{d['mean']:.3f} = {d['ratio']:.3f} of joint training's {joint_mean:.3f} (target "
        f"≥ {TARGET}: {'met' if d['ratio'] >= TARGET else 'NOT met'})",
    ]
    first = next(iter(data["replay"].values()))["honest"]
    lines += [
        "",
        f"The outlier check replayed on the {first['rounds']} honest rounds of the runs above "
        "(each round's updates as the coordinator decoded them), at each c; then with one "
        "update of each round replaced by a poisoned one (each instance in turn):",
        "",
        "| c | honest updates flagged | " + " | ".join(f"{a} accepted" for a in ATTACKS) + " |",
        "|---|---|" + "---|" * len(ATTACKS),
    ]
    for c, rp in data["replay"].items():
        h = rp["honest"]
        row = [f"{h['flagged']} of {h['updates']} ({h['flagged'] / max(1, h['updates']):.1%})"]
        for r in rp["attacks"].values():
            row.append(f"{r['accepted']} of {r['rounds']} ({r['accepted'] / r['rounds']:.1%})")
        lines.append(f"| {float(c):g} | " + " | ".join(row) + " |")
    elapsed = data["elapsed"]
    lines += ["", f"wall clock: {elapsed:.0f} s; {machine_line(data)}"]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = data["references"]["results"]
    spec = {n: res[n] for n in TASKS}

    def m(acc):
        return mean(normalised(acc, spec).values())

    a = data["args"]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=110)
    colours = {"average": "tab:blue", "nesterov": "tab:orange", "fedadam": "tab:green"}
    styles = {1: "-", 10: "--", 50: ":"}
    base = m(res["base"])
    for run in data["hives"]:
        if run["poisoned"]:
            continue
        xs = [0] + [int(s) for s in run["curve"]]
        ys = [base] + [m(acc) for acc in run["curve"].values()]
        default = run["label"] == data["default"]["label"]
        ax.plot(
            xs,
            ys,
            styles.get(run["every"], "-."),
            color="tab:red" if default else colours.get(run["outer"], "tab:gray"),
            linewidth=2.5 if default else 1.3,
            marker="o" if run["every"] >= 50 else None,
            label=f"hive H={run['every']}, {run['rule']}+{run['outer']}, c={run['c']:g}"
            + (" (default)" if default else ""),
        )
    joint = data["references"]["joint_curve"]
    ax.plot(
        [0] + [int(s) for s in joint],
        [base] + [m(acc) for acc in joint.values()],
        "-",
        color="black",
        linewidth=2,
        label=f"joint training ({a['instances']} steps per instance step)",
    )
    for key, style in (("one-shot average", "gray"), ("one-shot fisher", "brown")):
        ax.axhline(m(res[key]), color=style, linestyle="-.", linewidth=1, label=key)
    ax.set_xlabel("local steps per instance (rounds × H)")
    ax.set_ylabel("mean normalised accuracy (÷ specialist)")
    ax.set_title(f"Hive on MiniLM: {a['instances']} instances, three tasks, d = 1024")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    from basinvcs.hive import rules

    ap = argparse.ArgumentParser(description="the hive on MiniLM")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--instances", type=int, default=3, help="N: the tasks in turn (10: 4 + 3 + 3)")
    add_frozen_layers(ap, 0)
    ap.add_argument("--steps", type=int, default=120, help="local steps per instance")
    ap.add_argument("--every", default="1,10,50", help="H values, comma-separated")
    ap.add_argument(
        "--settings",
        default="mean:average,mean:nesterov,mean:fedadam",
        help="rule:outer-optimiser[:hyper=value...] settings, comma-separated (e.g. "
        "mean:average:lr=3; an option the rule has goes to the rule, e.g. "
        "sender_mean:average:power=0.5)",
    )
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--encoding", default="topk-q8")
    ap.add_argument("--k", default="default", help="coordinates per update, comma-separated")
    ap.add_argument(
        "--outlier-c", default="3.5", help="the coordinator's outlier factor c, comma-separated"
    )
    ap.add_argument(
        "--replay-c", default="3.5,5,10,20,50", help="c values to replay the outlier check at"
    )
    ap.add_argument(
        "--extra",
        default="",
        help="more settings after the grid, comma-separated, each H:rule:outer:k:c",
    )
    ap.add_argument("--curve", type=int, default=20, help="evaluate every this many steps")
    ap.add_argument("--no-poison", action="store_true", help="skip the poisoned run")
    ap.add_argument(
        "--poison", type=float, default=-100.0, help="the poisoned instance sends this × its change"
    )
    ap.add_argument(
        "--references", type=Path, default=None, help="reuse the references of an earlier --json"
    )
    ap.add_argument("--json", type=Path, default=None, help="write every measurement here")
    ap.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    ap.add_argument("--work", type=Path, default=None, help="where scratch repositories go")
    ap.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    ks = [None if k == "default" else int(k) for k in args.k.split(",")]
    cs = [float(c) for c in args.outlier_c.split(",")]
    exp = Experiment(args)
    data: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    data["machine"] = machine()
    if args.references:
        data["references"] = references_from(
            args.references,
            data,
            exp.log,
            ("seed", "steps", "lr", "batch", "curve", "instances", "frozen_layers"),
            {"instances": 3, "frozen_layers": 0},  # runs from before these options
        )
        exp.log(f"references from {args.references}")
    else:
        data["references"] = exp.references()
    res = data["references"]["results"]
    spec = {n: res[n] for n in TASKS}
    joint_mean = mean(normalised(res["joint"], spec).values())
    data["hives"] = []
    for every in [int(h) for h in args.every.split(",")]:
        for pair in args.settings.split(","):
            rule, outer, *options = pair.split(":")
            hyper = {key: float(v) for key, v in (o.split("=") for o in options)}
            # an option the rule has is the rule's; the rest are the outer optimiser's
            ours = {key: v for key, v in hyper.items() if key in rules.get(rule).options}
            theirs = {key: v for key, v in hyper.items() if key not in ours}
            for k in ks:
                for c in cs:
                    data["hives"].append(
                        exp.hive(
                            every, rule, outer, k, c, rule_options=ours, optimizer_options=theirs
                        )
                    )
    for spec_text in filter(None, args.extra.split(",")):
        every, rule, outer, k, c = spec_text.split(":")
        k = None if k == "default" else int(k)
        data["hives"].append(exp.hive(int(every), rule, outer, k, float(c)))
    honest = [r for r in data["hives"] if not r["poisoned"]]
    fitting = [r for r in honest if r["max_update_bytes"] <= BYTES_TARGET] or honest
    best = max(fitting, key=lambda r: mean(normalised(r["final"], spec).values()))
    best_mean = mean(normalised(best["final"], spec).values())
    data["default"] = {
        **{key: best[key] for key in ("label", "every", "rule", "outer", "k", "c")},
        "mean": best_mean,
        "ratio": best_mean / joint_mean,
    }
    data["replay"] = {
        str(c): replay(honest, c) for c in [float(c) for c in args.replay_c.split(",")]
    }
    if not args.no_poison:
        d = data["default"]
        last = list(exp.instances)[-1]
        data["hives"].append(
            exp.hive(
                d["every"],
                d["rule"],
                d["outer"],
                d["k"],
                d["c"],
                last,
                rule_options=best["rule_options"],
                optimizer_options=best["optimizer_options"],
            )
        )
    data["elapsed"] = time.perf_counter() - exp.t0
    text = report(data)
    print(text)
    if args.json:
        slim = {
            **data,
            "hives": [{k: v for k, v in r.items() if k != "deltas"} for r in data["hives"]],
        }
        args.json.write_text(json.dumps(slim, indent=1))
    if args.plot:
        plot(data, args.plot)
    if not args.keep:
        shutil.rmtree(exp.work, ignore_errors=True)


if __name__ == "__main__":
    main()
