"""Time `basin log` against `git log` on histories of one length (see scripts/bench/history)."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from basinvcs import porcelain
from basinvcs.objects import Basin

RUNS = 7
BASIN = Path(sys.executable).with_name("basin")


def build_basin(path: Path, commits: int) -> None:
    with porcelain.init(path) as repo, repo.transaction():
        chart = repo.config.chart
        z = [0.0] * chart.dim
        for i in range(commits):
            z[i % chart.dim] += math.sin(i) + 1.5
            porcelain.commit(
                repo, Basin.create(chart, z), f"step {i}: adjust coordinate {i % chart.dim}"
            )


def build_git(path: Path, commits: int) -> None:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    stream = bytearray()
    for i in range(commits):
        msg = f"step {i}: adjust coordinate {i % 1024}\n".encode()
        stream += b"commit refs/heads/main\nmark :%d\n" % (i + 1)
        stream += b"committer Bench <bench@example.invalid> %d +0000\n" % (1_700_000_000 + i)
        stream += b"data %d\n%s" % (len(msg), msg)
        stream += b"from :%d\n\n" % i if i else b"\n"
    subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=bytes(stream), check=True)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=path, check=True)


def timed(cmd: list[str], cwd: Path) -> float:
    # as installed: Python may cache compiled modules (PYTHONDONTWRITEBYTECODE would make every
    # run compile basinvcs again, ~40 ms), and a first, untimed run writes that cache
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, check=True, env=env)
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, check=True, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BASIN_HOME"] = str(Path(tmp) / "home")
        start = time.perf_counter()
        build_basin(Path(tmp) / "basin", commits)
        build_time = time.perf_counter() - start
        build_git(Path(tmp) / "git", commits)
        count = subprocess.run(
            [str(BASIN), "log", "--oneline"],
            cwd=Path(tmp) / "basin",
            capture_output=True,
            check=True,
        ).stdout.count(b"\n")
        assert count == commits + 1, count
        rows = []
        for label, args in (("log -n 20", ["log", "-n", "20"]), ("full log", ["log"])):
            b = timed([str(BASIN), *args], Path(tmp) / "basin")
            g = timed(["git", *args], Path(tmp) / "git")
            rows.append((label, b, g))
    print(
        f"history of {commits} commits (+ genesis); built in {build_time:.1f} s; "
        f"median of {RUNS} runs"
    )
    print(f"{'command':<12} {'basin (s)':>10} {'git (s)':>10} {'ratio':>8}")
    for label, b, g in rows:
        print(f"{label:<12} {b:>10.3f} {g:>10.3f} {b / g:>7.1f}x")
    n20, full = rows[0][1], rows[1][1] / rows[1][2]
    print(f"target: basin log -n 20 under 0.1 s: {'met' if n20 < 0.1 else 'MISSED'} ({n20:.3f} s)")
    print(f"target: full log within 3x of git: {'met' if full <= 3 else 'MISSED'} ({full:.2f}x)")
    print(f"stretch: full log within 2x of git: {'met' if full <= 2 else 'missed'} ({full:.2f}x)")


if __name__ == "__main__":
    main()
