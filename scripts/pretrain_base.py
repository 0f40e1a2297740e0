"""Pretrain a base for `tiny`: full-parameter training of its GPT on the tasks' byte format.

    .venv/bin/python scripts/pretrain_base.py OUT.safetensors [--tasks copy] [--steps 1500]

Starts from `tiny`'s generated θ0 and trains every weight (AdamW) on a uniform mixture of the
given tasks (default: `copy` alone), then writes the weights (float32 safetensors, the `tiny`
tensor names) and `OUT.json`, the GPT config `add_substrate` takes. With `copy` alone the base
learns the format every task shares (a 3-5 letter word, a marker byte, an answer ended by a
newline) and one skill, copying, but none of cipher, reverse or sort; it has never seen digits.
It prints held-out accuracy on every task. Deterministic for a given torch build and thread count.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from basinvcs.model.registry import load_substrate
from basinvcs.model.tasks import TASKS, make_task
from basinvcs.model.train import batch_loss

LR, BATCH, WEIGHT_DECAY = 3e-3, 64, 0.01


def pretrain(tasks: list[str], steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """`tiny`'s weights after `steps` AdamW steps on batches drawn from the tasks in turn."""
    sub = load_substrate("tiny")
    model = sub.build()
    model.train()
    data = [make_task(name, seed=seed) for name in tasks]
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, LR, total_steps=steps, pct_start=0.1)
    for step in range(steps):
        loss = batch_loss(model, data[step % len(data)].batch(BATCH, gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    state = model.state_dict()
    return {s.name: state[s.name].detach().clone().contiguous() for s in sub.specs}


def config_json() -> str:
    return json.dumps(asdict(load_substrate("tiny").config), indent=1) + "\n"


def evaluate(weights: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Held-out (exact, bytes) accuracy of the weights on every task."""
    model = load_substrate("tiny").build()
    model.load_state_dict(weights, strict=True)
    model.eval()
    out = {}
    for name in TASKS:
        task = make_task(name)
        out[name] = (task.accuracy(model), task.accuracy(model, per_token=True))
    return out


def write(weights: dict[str, torch.Tensor], out: Path) -> Path:
    """The weights to `out` and the config to `out` with suffix .json; returns the config path."""
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out))
    config = out.with_suffix(".json")
    config.write_text(config_json())
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tasks", default="copy", help="comma-separated (default: copy)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    weights = pretrain(args.tasks.split(","), args.steps, args.seed)
    took = time.perf_counter() - start
    config = write(weights, args.out)
    print(f"pretrained tiny on {args.tasks} for {args.steps} steps in {took:.0f} s")
    print(f"wrote {args.out} and {config}")
    for name, (exact, per_byte) in evaluate(weights).items():
        print(f"  {name:<8} exact {exact:.3f}  bytes {per_byte:.3f}")


if __name__ == "__main__":
    main()
