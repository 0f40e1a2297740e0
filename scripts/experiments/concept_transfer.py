"""Concept transfer: three specialists trained in three repositories, merged in a fourth.

See scripts/experiments/concept_transfer and docs/experiments/concept_transfer.md. Steps:

1. a base: `tiny` pretrained on `copy` (scripts/pretrain_base.py), registered as user substrate
   `ct-base` in every participant's BASIN_HOME (each participant has its own home, hence its own
   Ed25519 identity);
2. the hub repository (d = 1024, chart seed 0) is initialised and never trains;
3. each specialist repository is initialised, fetches the hub's `general` (basinvcs.transfer),
   forks it for its task, trains inside the basin (only z), and commits z with its Fisher diagonal;
4. the hub trusts the three keys and fetches the three branches; then, in a fresh copy of the hub
   per strategy, merges them into `general` one by one (the k-th with side weight 1/(k-1), so every
   specialist counts equally), with `force=True` only when the conflict check refuses;
5. every model is evaluated on every task's held-out test set.
"""

from __future__ import annotations

import argparse
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
from basinvcs.objects import Chart  # noqa: E402
from basinvcs.projection import Projection  # noqa: E402
from basinvcs.repository import Repository  # noqa: E402
from basinvcs.substrate import add_substrate, load_substrate  # noqa: E402
from basinvcs.tasks import TASKS, make_task  # noqa: E402
from basinvcs.train import BasinModel, commit_model_in_basin, fisher_diagonal, train  # noqa: E402
from basinvcs.transfer import fetch  # noqa: E402

SUBSTRATE = "ct-base"
STRATEGIES = ("fisher", "linear", "ties")
FISHER_BATCHES, FISHER_BATCH = 64, 4


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
    args = ap.parse_args()
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

    # 3. the specialists, each in its own repository with its own identity
    results: dict[str, dict[str, tuple[float, float]]] = {}
    results["base"] = evaluate(BasinModel(sub, chart, projection=proj))
    zs, keys, fishers = {}, {}, {}
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
    elapsed = time.perf_counter() - t0

    # 5. the table
    rows = ["base", *tasks, *STRATEGIES, "average"]
    labels = {"base": "base (copy-pretrained)", "average": "plain average of z"}
    labels |= {n: f"specialist {n}" for n in tasks}
    labels |= {s: f"merged: {s}" for s in STRATEGIES}
    print(f"## Held-out accuracy, exact / bytes ({len(tasks)} specialists, d = 1024)\n")
    print("| model | " + " | ".join(TASKS) + " |")
    print("|---" * (len(TASKS) + 1) + "|")
    for row in rows:
        cells = [f"{results[row][t][0]:.3f} / {results[row][t][1]:.3f}" for t in TASKS]
        print(f"| {labels[row]} | " + " | ".join(cells) + " |")
    print("\n## Normalised accuracy: merged on task k / specialist k on task k (exact; bytes)\n")
    print("| merge | " + " | ".join(tasks) + " | mean |")
    print("|---" * (len(tasks) + 2) + "|")
    for row in [*STRATEGIES, "average"]:
        exact = [results[row][t][0] / results[t][t][0] if results[t][t][0] else 0.0 for t in tasks]
        byte = [results[row][t][1] / results[t][t][1] for t in tasks]
        cells = [f"{e:.3f} ({b:.3f})" for e, b in zip(exact, byte, strict=True)]
        mean = f"**{sum(exact) / len(exact):.3f}** ({sum(byte) / len(byte):.3f})"
        print(f"| {labels[row]} | " + " | ".join(cells) + f" | {mean} |")
    print("\n## Merges\n")
    for strategy in STRATEGIES:
        print(f"- {strategy}: " + "; ".join(notes[strategy]))
    print(
        f"\nspecialists: {args.steps} steps, Adam lr {args.lr}, batch {args.batch}; "
        f"{torch.get_num_threads()} thread(s); total {elapsed:.0f} s"
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
