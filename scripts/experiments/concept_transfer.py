"""Concept transfer: three specialists trained in three repositories, merged in a fourth.

See scripts/experiments/concept_transfer and docs/experiments/concept_transfer.md. Steps:

1. a base: `tiny` pretrained on `copy` (scripts/pretrain_base.py), registered as user substrate
   `ct-base` in every participant's BASIN_HOME (each participant has its own home, hence its own
   Ed25519 identity);
2. the hub repository (d = 1024, chart seed 0) is initialised and never trains;
3. each specialist repository is initialised, fetches the hub's `general` (basinvcs.ingest),
   forks it for its task, trains inside the basin (only z), and commits z with its Fisher diagonal;
4. the hub trusts the three keys and fetches the three branches; then, in a fresh copy of the hub
   per strategy, merges them into `general` one by one (the k-th with side weight 1/(k-1), so every
   specialist counts equally), with `force=True` only when the conflict check refuses;
5. every model is evaluated on every task's held-out test set, with the plain average of the three
   z and their sum (task arithmetic, λ = 1) for reference, and each specialist's own z is scanned
   along its line (α·z, α in ALPHAS), which shows how much of its move a skill survives losing.

With `--hive ROUNDS`, the same specialists also train as a hive, through the same kind of
repositories (a fresh hub and three fresh specialist repositories per strategy): each round, every
specialist fetches the hub's `general` into `refs/remotes/hub/general` and merges it (a
fast-forward), trains steps/ROUNDS steps from there (its Adam state kept across rounds), computes
its Fisher diagonal (fisher only: HIVE_FISHER_BATCHES batches of 4) and commits; the hub fetches the
three heads into `refs/remotes/<name>/<name>` and merges them into `general` as in step 4. Run for
the fisher and linear strategies. With `--joint`, one basin is trained on the three tasks at once
with the same data (steps × number of tasks steps, batch/number of tasks examples of each task per
step): no merge involved, the reference ceiling for merges of this budget in this basin.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pretrain_base import pretrain, write  # noqa: E402

from basinvcs import porcelain  # noqa: E402
from basinvcs.identity import format_key, load_identity  # noqa: E402
from basinvcs.ingest import apply_plan, fetch, plan_fetch  # noqa: E402
from basinvcs.model.projection import Projection  # noqa: E402
from basinvcs.model.registry import add_substrate, load_substrate  # noqa: E402
from basinvcs.model.tasks import TASKS, make_task  # noqa: E402
from basinvcs.model.train import (  # noqa: E402
    BasinModel,
    batch_loss,
    commit_model_in_basin,
    fisher_diagonal,
    train,
)
from basinvcs.objects import Chart  # noqa: E402
from basinvcs.refnames import remote_ref  # noqa: E402
from basinvcs.repository import Repository  # noqa: E402

SUBSTRATE = "ct-base"
STRATEGIES = ("fisher", "linear", "ties")
FISHER_BATCHES, FISHER_BATCH = 64, 4
HIVE_STRATEGIES = ("fisher", "linear")
ALPHAS = (1 / 3, 1 / 2, 2 / 3, 0.8, 0.9, 1.0, 1.2)  # the line scan's scales of each specialist's z
HIVE_FISHER_BATCHES = 16  # per specialist per round, of FISHER_BATCH examples


def use_home(home: Path) -> None:
    """Act as the participant whose config directory (identity, substrates) is `home`."""
    os.environ["BASIN_HOME"] = str(home)


def evaluate(model) -> dict[str, tuple[float, float]]:
    """Held-out (exact, bytes) accuracy on every task."""
    out = {}
    for name in TASKS:
        task = make_task(name)
        out[name] = (task.accuracy(model), task.accuracy(model, per_token=True))
    return out


def head_z(repo: Repository) -> list[float]:
    return list(repo.read_basin(repo.read_commit(repo.head_commit()).basin).z)


def exact(model, tasks: list[str]) -> dict[str, float]:
    """Held-out exact accuracy on `tasks` (the cheaper check made during the hive)."""
    return {name: make_task(name).accuracy(model) for name in tasks}


def pull(repo: Repository, source: Repository, branch: str, ref: str) -> None:
    """Bring `branch` of `source` into `repo` as the remote-tracking ref `ref` (validated fetch)."""
    head = source.branch_commit(branch)
    plan = plan_fetch(repo, [head], source.get_block)  # re-hashes every block
    apply_plan(repo, plan, [(ref, head, f"fetch: {branch} from {source.basin_dir.parent}")])


def merge_all(repo: Repository, refs: list[str], strategy: str) -> list[tuple[str, object, str]]:
    """Merge `refs` into HEAD one by one, the k-th with side weight 1/(k-1) so all count equally;
    forced when the conflict check refuses. Returns (kind, assessment, refusal or "") per ref."""
    out = []
    for k, ref in enumerate(refs, start=1):
        weight = 1.0 / (k - 1) if k > 1 else 1.0
        try:
            res = porcelain.merge(repo, ref, strategy=strategy, weight=weight)
            out.append((res.kind, res.assessment, ""))
        except porcelain.MergeRefused as exc:
            res = porcelain.merge(repo, ref, strategy=strategy, weight=weight, force=True)
            out.append((res.kind, res.assessment, str(exc)))
    return out


def line_scan(
    sub, chart: Chart, proj: Projection, zs: dict[str, torch.Tensor]
) -> dict[str, list[float]]:
    """Each specialist's exact accuracy on its own task at α·z, for α in ALPHAS: how much of its
    own move a skill survives being scaled to (a convex merge of three scales each move ~1/3)."""
    out = {}
    for name, z in zs.items():
        task = make_task(name)
        out[name] = [task.accuracy(BasinModel(sub, chart, a * z, projection=proj)) for a in ALPHAS]
    return out


def hive(
    work: Path,
    homes: dict[str, Path],
    keys: dict[str, str],
    tasks: list[str],
    strategy: str,
    rounds: int,
    args: argparse.Namespace,
    sub,
    chart: Chart,
    proj: Projection,
    log,
) -> tuple[torch.Tensor, dict]:
    """The hive: every round the specialists start from the hub's `general`, train a little and
    commit; the hub fetches and merges them. Returns the hub's final z and what happened."""
    root = work / f"hive-{strategy}"
    repos: dict[str, Repository] = {}
    use_home(homes["hub"])
    repos["hub"] = porcelain.init(root / "hub", dim=1024, seed=0, name="hub")
    for name in tasks:
        use_home(homes[name])
        repos[name] = porcelain.init(root / name, dim=1024, seed=0, name=name)
    for who, repo in repos.items():  # everyone trusts everyone (init already trusts its own key)
        for other in ["hub", *tasks]:
            if other != who:
                porcelain.trust(repo, keys[other], other)
    models = {n: BasinModel(sub, chart, projection=proj) for n in tasks}
    opts = {n: torch.optim.Adam([models[n].z], lr=args.lr) for n in tasks}
    gens = {n: torch.Generator().manual_seed(0) for n in tasks}  # the one-shot specialists' data
    task_of = {n: make_task(n) for n in tasks}
    hub_ref = remote_ref("hub", "general")
    merges: dict[str, list] = {n: [] for n in tasks}
    local: dict[str, float] = {}
    trajectory: list[tuple[int, dict[str, float]]] = []
    seconds = {"train": 0.0, "fisher": 0.0, "repositories": 0.0, "evaluation": 0.0}
    every = max(1, rounds // 5)
    try:
        for r in range(rounds):
            steps = args.steps // rounds + (1 if r < args.steps % rounds else 0)
            for name in tasks:
                use_home(homes[name])
                repo, model, task = repos[name], models[name], task_of[name]
                t = time.perf_counter()
                pull(repo, repos["hub"], "general", hub_ref)
                if r == 0:
                    porcelain.fork(repo, hub_ref, name)
                else:
                    kind = porcelain.merge(repo, hub_ref).kind
                    if kind != "fast-forward":
                        raise RuntimeError(f"{name}, round {r + 1}: not a fast-forward: {kind}")
                with torch.no_grad():
                    model.z.copy_(torch.tensor(head_z(repo), dtype=torch.float32))
                seconds["repositories"] += time.perf_counter() - t
                t = time.perf_counter()
                for _ in range(steps):
                    loss = batch_loss(model, task.batch(args.batch, gens[name]))
                    opts[name].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[name].step()
                seconds["train"] += time.perf_counter() - t
                fisher = None
                if strategy == "fisher":
                    t = time.perf_counter()
                    gen = torch.Generator().manual_seed(1 + r)
                    batches = [task.batch(FISHER_BATCH, gen) for _ in range(HIVE_FISHER_BATCHES)]
                    fisher = fisher_diagonal(model, batches)
                    seconds["fisher"] += time.perf_counter() - t
                if r == rounds - 1:
                    t = time.perf_counter()
                    local[name] = task.accuracy(model)
                    seconds["evaluation"] += time.perf_counter() - t
                t = time.perf_counter()
                commit_model_in_basin(repo, model, f"hive round {r + 1}: {steps} steps", fisher)
                seconds["repositories"] += time.perf_counter() - t
            use_home(homes["hub"])
            t = time.perf_counter()
            hub = repos["hub"]
            refs = [remote_ref(name, name) for name in tasks]
            for name, ref in zip(tasks, refs, strict=True):
                pull(hub, repos[name], name, ref)
            for name, outcome in zip(tasks, merge_all(hub, refs, strategy), strict=True):
                merges[name].append(outcome)
            seconds["repositories"] += time.perf_counter() - t
            if (r + 1) % every == 0 or r == rounds - 1:
                t = time.perf_counter()
                z = torch.tensor(head_z(hub), dtype=torch.float32)
                acc = exact(BasinModel(sub, chart, z, projection=proj), tasks)
                trajectory.append((r + 1, acc))
                seconds["evaluation"] += time.perf_counter() - t
                log(
                    f"hive {strategy}, round {r + 1}: |z| {float(z.norm()):.1f}, exact "
                    + ", ".join(f"{n} {a:.3f}" for n, a in acc.items())
                )
        z = torch.tensor(head_z(repos["hub"]), dtype=torch.float32)
    finally:
        for repo in repos.values():
            repo.close()
    return z, {"merges": merges, "local": local, "trajectory": trajectory, "seconds": seconds}


def joint(
    tasks: list[str], args: argparse.Namespace, sub, chart: Chart, proj: Projection, log
) -> tuple[BasinModel, int, int]:
    """One basin trained on all tasks at once: per step `per_task` examples of each task (one
    forward; the loss is the mean of the per-task mean losses), steps × len(tasks) steps."""
    per_task = round(args.batch / len(tasks))
    steps = args.steps * len(tasks)
    model = BasinModel(sub, chart, projection=proj)
    opt = torch.optim.Adam([model.z], lr=args.lr)
    gen = torch.Generator().manual_seed(0)
    task_of = [make_task(n) for n in tasks]
    for step in range(steps):
        parts = [task.batch(per_task, gen) for task in task_of]
        width = max(p[0].shape[1] for p in parts)
        inputs, targets, mask = (
            torch.cat([torch.nn.functional.pad(p[i], (0, width - p[i].shape[1])) for p in parts])
            for i in range(3)
        )
        logp = torch.nn.functional.cross_entropy(
            model(inputs).transpose(1, 2), targets, reduction="none"
        )
        # causal model, right padding: each row's answer positions see exactly what they would
        # alone, so this is the mean over tasks of each task's batch_loss
        rows = torch.arange(len(inputs)) // per_task
        loss = sum(logp[mask & (rows == i)[:, None]].mean() for i in range(len(tasks))) / len(tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % max(1, steps // 6) == 0:
            log(f"joint, step {step + 1}/{steps}: loss {loss.item():.3f}")
    return model, steps, per_task


def main() -> None:
    ap = argparse.ArgumentParser(description="concept-transfer experiment")
    ap.add_argument("--tasks", default="cipher,reverse,sort")
    ap.add_argument("--steps", type=int, default=600, help="specialist training steps")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pretrain-steps", type=int, default=1500)
    ap.add_argument("--base", type=Path, help="reuse a base from scripts/pretrain_base.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="work here (kept) instead of a temporary directory")
    ap.add_argument(
        "--hive",
        type=int,
        metavar="ROUNDS",
        help="also train the specialists as a hive: ROUNDS rounds of steps/ROUNDS steps, the hub "
        f"merging after each ({', '.join(HIVE_STRATEGIES)})",
    )
    ap.add_argument(
        "--joint", action="store_true", help="also train one basin on all the tasks at once"
    )
    args = ap.parse_args()
    if args.hive is not None and not 1 <= args.hive <= args.steps:
        ap.error("--hive needs 1 <= ROUNDS <= --steps")
    torch.set_num_threads(args.threads)
    tasks = args.tasks.split(",")
    t0 = time.perf_counter()
    work = args.keep or Path(tempfile.mkdtemp(prefix="concept-transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f} s] {msg}", file=sys.stderr)  # noqa: E731

    # 1. the base
    if args.base:
        weights_path, config_path = args.base, args.base.with_suffix(".json")
        log(f"base: {weights_path}")
    else:
        weights_path = work / "base.safetensors"
        config_path = write(pretrain(["copy"], args.pretrain_steps), weights_path)
        log(f"base: pretrained on copy, {args.pretrain_steps} steps")
    homes = {name: work / f"home-{name}" for name in ["hub", *tasks]}
    for home in homes.values():
        use_home(home)
        add_substrate(SUBSTRATE, weights_path, config_path)
    sub = load_substrate(SUBSTRATE)
    chart = Chart(seed=0, dim=1024)
    proj = Projection(chart, sub.specs)

    # 2. the hub, which never trains
    use_home(homes["hub"])
    hub_path = work / "hub"
    porcelain.init(hub_path, dim=1024, seed=0, name="hub").close()
    keys = {"hub": format_key(load_identity().public_key)}

    # 3. the specialists, each in its own repository with its own identity
    results: dict[str, dict[str, tuple[float, float]]] = {}
    results["base"] = evaluate(BasinModel(sub, chart, projection=proj))
    zs, fishers = {}, {}
    for name in tasks:
        use_home(homes[name])
        path = work / name
        with porcelain.init(path, dim=1024, seed=0, name=name) as repo:
            fetch(repo, hub_path, "general", "upstream")
            porcelain.fork(repo, "upstream", name)
            task = make_task(name)
            model = BasinModel(sub, chart, projection=proj)
            start = time.perf_counter()
            losses = train(model, task, args.steps, args.lr, args.batch, seed=0)
            gen = torch.Generator().manual_seed(1)
            batches = [task.batch(FISHER_BATCH, gen) for _ in range(FISHER_BATCHES)]
            fisher = fisher_diagonal(model, batches)
            commit_model_in_basin(repo, model, f"train {name}: {args.steps} steps", fisher)
            zs[name] = model.z.detach().clone()
            fishers[name] = fisher
            keys[name] = format_key(load_identity().public_key)
            results[name] = evaluate(model)
            log(
                f"{name}: trained {time.perf_counter() - start:.0f} s, final loss "
                f"{losses[-1]:.3f}, |z| {float(zs[name].norm()):.2f}, "
                f"exact {results[name][name][0]:.3f}, Fisher mean {float(fisher.mean()):.3g} "
                f"max {float(fisher.max()):.3g}"
            )

    scan = line_scan(sub, chart, proj, zs)
    # the offset P z has norm ‖z‖ (orthonormal columns, β ≡ 1): the move relative to the weights
    theta0_norm = math.sqrt(sum(float(sub.theta0(s).double().square().sum()) for s in sub.specs))

    top = torch.stack([fishers[n] for n in tasks]).argmax(0)
    shares = ", ".join(f"{n} {float((top == i).double().mean()):.2f}" for i, n in enumerate(tasks))
    log(f"share of coordinates where each specialist's Fisher is the largest: {shares}")

    # 4. the hub receives the three branches and merges them, one strategy per fresh copy
    use_home(homes["hub"])
    with Repository.open(hub_path) as hub:
        for name in tasks:
            porcelain.trust(hub, keys[name], name)
            fetch(hub, work / name, name, name)
        report = porcelain.verify(hub)
        log(f"hub fetched {', '.join(tasks)}; verify ok: {report.ok}")
    notes: dict[str, list[str]] = {}
    for strategy in STRATEGIES:
        copy = work / f"hub-{strategy}"
        shutil.copytree(hub_path, copy)
        notes[strategy] = []
        with Repository.open(copy) as repo:
            for k, name in enumerate(tasks, start=1):
                weight = 1.0 / (k - 1) if k > 1 else 1.0
                try:
                    res = porcelain.merge(repo, name, strategy=strategy, weight=weight)
                    how = res.kind
                    if res.assessment is not None:
                        a = res.assessment
                        how += (
                            f" (relative Fisher distance {a.relative:.2f}, "
                            f"interference {a.interference:.2f})"
                        )
                except porcelain.MergeRefused as exc:
                    res = porcelain.merge(repo, name, strategy=strategy, weight=weight, force=True)
                    how = f"refused ({exc}), then forced"
                notes[strategy].append(f"{name}: {how}")
            z = torch.tensor(head_z(repo), dtype=torch.float32)
        results[strategy] = evaluate(BasinModel(sub, chart, z, projection=proj))
        log(f"{strategy}: {'; '.join(notes[strategy])}")
    mean_z = torch.stack([zs[n].double() for n in tasks]).mean(0).float()
    results["average"] = evaluate(BasinModel(sub, chart, mean_z, projection=proj))
    sum_z = torch.stack([zs[n].double() for n in tasks]).sum(0).float()
    results["sum"] = evaluate(BasinModel(sub, chart, sum_z, projection=proj))
    phases = {"one-shot": time.perf_counter() - t0}

    # 6. optionally, the hive and joint training
    extra: list[str] = []
    hives: dict[str, dict] = {}
    if args.hive:
        for strategy in HIVE_STRATEGIES:
            start = time.perf_counter()
            z, hives[strategy] = hive(
                work, homes, keys, tasks, strategy, args.hive, args, sub, chart, proj, log
            )
            results[f"hive-{strategy}"] = evaluate(BasinModel(sub, chart, z, projection=proj))
            extra.append(f"hive-{strategy}")
            phases[f"hive {strategy}"] = time.perf_counter() - start
            spent = ", ".join(f"{k} {v:.0f} s" for k, v in hives[strategy]["seconds"].items())
            log(f"hive {strategy}: {phases[f'hive {strategy}']:.0f} s ({spent})")
    if args.joint:
        start = time.perf_counter()
        model, joint_steps, per_task = joint(tasks, args, sub, chart, proj, log)
        results["joint"] = evaluate(model)
        extra.append("joint")
        phases["joint"] = time.perf_counter() - start
        log(f"joint: {phases['joint']:.0f} s, |z| {float(model.z.detach().norm()):.1f}")
    elapsed = time.perf_counter() - t0

    # 5. the table
    rows = ["base", *tasks, *STRATEGIES, "average", "sum", *extra]
    labels = {"base": "base (copy-pretrained)", "average": "plain average of z"}
    labels["sum"] = "sum of the changes (task arithmetic, λ = 1)"
    labels |= {n: f"specialist {n}" for n in tasks}
    labels |= {s: f"merged: {s}" for s in STRATEGIES}
    if args.hive:
        labels |= {f"hive-{s}": f"hive ({args.hive} rounds): {s}" for s in HIVE_STRATEGIES}
    labels["joint"] = "joint training (one basin, all tasks)"
    print(f"## Held-out accuracy, exact / bytes ({len(tasks)} specialists, d = 1024)\n")
    print("| model | " + " | ".join(TASKS) + " |")
    print("|---" * (len(TASKS) + 1) + "|")
    for row in rows:
        cells = [f"{results[row][t][0]:.3f} / {results[row][t][1]:.3f}" for t in TASKS]
        print(f"| {labels[row]} | " + " | ".join(cells) + " |")
    print("\n## Normalised accuracy: merged on task k / specialist k on task k (exact; bytes)\n")
    print("| merge | " + " | ".join(tasks) + " | mean |")
    print("|---" * (len(tasks) + 2) + "|")
    for row in [*STRATEGIES, "average", "sum", *extra]:
        exact = [results[row][t][0] / results[t][t][0] if results[t][t][0] else 0.0 for t in tasks]
        byte = [results[row][t][1] / results[t][t][1] for t in tasks]
        cells = [f"{e:.3f} ({b:.3f})" for e, b in zip(exact, byte, strict=True)]
        mean = f"**{sum(exact) / len(exact):.3f}** ({sum(byte) / len(byte):.3f})"
        print(f"| {labels[row]} | " + " | ".join(cells) + f" | {mean} |")
    print("\n## Line scan: each specialist at α·z, exact on its own task\n")
    print("| specialist | ‖z‖ / ‖θ0‖ | " + " | ".join(f"α = {a:.2g}" for a in ALPHAS) + " |")
    print("|---" * (len(ALPHAS) + 2) + "|")
    for name in tasks:
        ratio = float(zs[name].norm()) / theta0_norm
        cells = " | ".join(f"{acc:.3f}" for acc in scan[name])
        print(f"| {name} | {ratio:.2f} | {cells} |")
    print("\n## Merges\n")
    for strategy in STRATEGIES:
        print(f"- {strategy}: " + "; ".join(notes[strategy]))
    if args.hive:
        print_hive(hives, tasks, args)
    if args.joint:
        print(
            f"\njoint training: {joint_steps} steps of {per_task} examples of each task "
            f"({joint_steps * per_task * len(tasks)} examples; the specialists together saw "
            f"{args.steps * args.batch * len(tasks)}), Adam lr {args.lr}"
        )
    print(
        f"\nspecialists: {args.steps} steps, Adam lr {args.lr}, batch {args.batch}; "
        f"{torch.get_num_threads()} thread(s); total {elapsed:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
        + ")"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def print_hive(hives: dict[str, dict], tasks: list[str], args: argparse.Namespace) -> None:
    """The hive's merges (over all rounds), the hub's accuracy over rounds, where time went."""
    fisher_note = f"{HIVE_FISHER_BATCHES} batches of {FISHER_BATCH}" if "fisher" in hives else ""
    print(
        f"\n## Hive: {args.hive} rounds of {args.steps / args.hive:g} steps per specialist "
        f"(Fisher per round: {fisher_note or 'none'}, fisher only)\n"
    )
    for strategy, h in hives.items():
        parts = []
        for name in tasks:
            kinds = [kind for kind, _, _ in h["merges"][name]]
            forced = sum(1 for _, _, why in h["merges"][name] if why)
            assessed = [a for _, a, _ in h["merges"][name] if a is not None]
            text = f"{name}: " + ", ".join(f"{kinds.count(k)} {k}" for k in dict.fromkeys(kinds))
            if assessed:
                rel = [a.relative for a in assessed]
                inter = [a.interference for a in assessed]
                text += (
                    f" (relative Fisher distance {min(rel):.2f}–{max(rel):.2f}, mean "
                    f"{sum(rel) / len(rel):.2f}; interference {min(inter):.2f}–{max(inter):.2f}, "
                    f"mean {sum(inter) / len(inter):.2f})"
                )
            text += f", {forced} refused then forced"
            parts.append(text)
        print(f"- {strategy}: " + "; ".join(parts))
        local = ", ".join(f"{n} {a:.3f}" for n, a in h["local"].items())
        print(f"  - last round, each specialist before the merge, exact on its task: {local}")
    print("\nThe hub's `general` over rounds (exact):\n")
    print("| hive | round | " + " | ".join(tasks) + " |")
    print("|---" * (len(tasks) + 2) + "|")
    for strategy, h in hives.items():
        for r, acc in h["trajectory"]:
            print(f"| {strategy} | {r} | " + " | ".join(f"{acc[n]:.3f}" for n in tasks) + " |")
    print()
    for strategy, h in hives.items():
        spent = ", ".join(f"{k} {v:.0f} s" for k, v in h["seconds"].items())
        print(f"- hive {strategy} time: {spent}")


if __name__ == "__main__":
    main()
