"""`basin merge` of two long branches, timed (see scripts/bench/merge)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from basinvcs import porcelain
from basinvcs.objects import Basin

RUNS = 5
BASIN = Path(sys.executable).with_name("basin")


def build(path: Path, commits: int) -> None:
    """general, then branches a and b of `commits` commits each, changing disjoint halves of z."""
    with porcelain.init(path) as repo:
        chart = repo.config.chart
        half = chart.dim // 2
        for name, offset in (("a", 0), ("b", half)):
            porcelain.checkout(repo, "general")
            porcelain.fork(repo, "general", name)
            z = [0.0] * chart.dim
            with repo.transaction():
                for i in range(commits):
                    z[offset + i % half] += 0.001 * (i + 1)
                    porcelain.commit(repo, Basin.create(chart, z), f"{name} step {i}")
        porcelain.checkout(repo, "a")


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BASIN_HOME"] = str(Path(tmp) / "home")
        build(Path(tmp) / "built", commits)
        samples = []
        for run in range(RUNS):
            work = Path(tmp) / f"run{run}"
            shutil.copytree(Path(tmp) / "built", work)
            start = time.perf_counter()
            done = subprocess.run(
                [str(BASIN), "merge", "b"], cwd=work, capture_output=True, text=True
            )
            samples.append(time.perf_counter() - start)
            if done.returncode or "Merge made" not in done.stdout:
                sys.exit(f"merge failed:\n{done.stdout}{done.stderr}")
    took = statistics.median(samples)
    print(f"basin merge of two branches of {commits} commits each (median of {RUNS}): {took:.3f} s")
    print(f"target: under 1 s: {'met' if took < 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
