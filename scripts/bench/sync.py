"""Push over IPFS, measured against `ipfs dag import` of the same blocks (see scripts/bench/sync).

1. A repository (d = 1024) with COMMITS commits on `general`, each a full packet.
2. `push` to an empty node: wall time, blocks and bytes sent.
3. One more commit, `push` again: blocks and bytes sent (target: at most 3 blocks, 10 KiB).
4. Baseline: the same history's blocks as one CARv1 (built beforehand, not timed), sent with
   `dag/import` (pinning the root) to a second empty node: wall time. Target: push within 3x.

Both nodes are js-ipfs daemons started here (tests/ipfsnode.py) on loopback only.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from ipfsnode import IPFSDaemon, sandbox_problem  # noqa: E402

from basinvcs import carfile, porcelain, remote  # noqa: E402
from basinvcs.codec.car import write_car  # noqa: E402
from basinvcs.ipfs import Node  # noqa: E402
from basinvcs.objects import Basin  # noqa: E402
from basinvcs.repository import Repository  # noqa: E402


def build(path: Path, commits: int) -> None:
    with porcelain.init(path) as repo:
        chart = repo.config.chart
        z = [0.0] * chart.dim
        with repo.transaction():
            for i in range(commits):
                z[(7 * i) % chart.dim] += 0.01 * (i + 1)
                porcelain.commit(repo, Basin.create(chart, z), f"step {i}")


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    problem = sandbox_problem()
    if problem:
        sys.exit(f"bench/sync: {problem}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["BASIN_HOME"] = str(tmp / "home")
        os.environ.setdefault("BASIN_PROGRESS", "never")
        build(tmp / "repo", commits)
        with IPFSDaemon(tmp / "n1", "push") as d1, IPFSDaemon(tmp / "n2", "import") as d2:
            with Repository.open(tmp / "repo") as repo:
                remote.add_remote(repo, "origin", d1.api)
                head = repo.branch_commit("general")
                blocks = list(carfile.history_blocks(repo, head))
                car = io.BytesIO()
                write_car(car, [head], blocks)

                start = time.perf_counter()
                first = remote.push(repo)
                t_push = time.perf_counter() - start

                porcelain.commit(repo, Basin.create(repo.config.chart, [0.5] * 1024), "one more")
                second = remote.push(repo)

            node2 = Node(d2.api)
            start = time.perf_counter()
            node2.dag_import(car.getvalue(), pin_roots=True)
            t_import = time.perf_counter() - start

    print(f"history: {commits} commits, {len(blocks)} blocks, {car.tell()} bytes as one CAR")
    print(f"first push:  {first.blocks} blocks, {first.bytes} bytes, {t_push:.2f} s")
    print(f"dag import:  {len(blocks)} blocks, {t_import:.2f} s (same blocks, one CAR)")
    ratio = t_push / t_import
    print(
        f"first push / dag import: {ratio:.2f}x (target <= 3x: {'met' if ratio <= 3 else 'MISSED'})"
    )
    ok = second.blocks <= 3 and second.bytes <= 10 * 1024
    print(
        f"second push: {second.blocks} blocks, {second.bytes} bytes "
        f"(target <= 3 blocks and 10 KiB: {'met' if ok else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
