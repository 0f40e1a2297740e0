"""Training inside the basin, measured (see scripts/bench/train)."""

from __future__ import annotations

import sys
import time

import torch

from basinvcs.model.projection import Projection
from basinvcs.model.registry import load_substrate
from basinvcs.model.tasks import TASKS, make_task
from basinvcs.model.train import BasinModel, train
from basinvcs.objects import Chart

LR, BATCH = 0.05, 32


def main() -> None:
    names = sys.argv[1].split(",") if len(sys.argv) > 1 else list(TASKS)
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    sub, chart = load_substrate("tiny"), Chart(dim=1024)
    proj = Projection(chart, sub.specs)
    print(
        f"tiny, d = 1024, Adam lr {LR}, batch {BATCH}, {steps} steps, "
        f"{torch.get_num_threads()} thread(s); held-out test sets of 512 prompts"
    )
    print(
        f"{'task':<9}{'s':>6}  {'exact before':>12} {'after':>6}  {'bytes before':>12} {'after':>6}"
    )
    for name in names:
        task = make_task(name)
        model = BasinModel(sub, chart, projection=proj)
        before = task.accuracy(model), task.accuracy(model, per_token=True)
        start = time.perf_counter()
        train(model, task, steps, LR, BATCH, seed=0)
        took = time.perf_counter() - start
        after = task.accuracy(model), task.accuracy(model, per_token=True)
        print(
            f"{name:<9}{took:>6.0f}  {before[0]:>12.3f} {after[0]:>6.3f}  "
            f"{before[1]:>12.3f} {after[1]:>6.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
