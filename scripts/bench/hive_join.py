"""Joining a long hive: `basin hive join` reads the coordinator's history a page at a time
(GET /history: a CAR of up to 3 MiB) against block by block (GET /block: two requests per round,
what join did before pages), measured in the same run against the same coordinator.

1. A hub repository with ROUNDS commits on `general` as a coordinator makes them (a packet at
   d = 1024 each, a message listing ten updates taken), signed by the hub's key.
2. `basin hive serve` over it, on 127.0.0.1.
3. Three fresh repositories join it, each in a process of its own: by pages, block by block
   (the edge's block source in place of its page source), and shallow (`join --depth 1`: the
   head alone, which takes the same whatever the hive's age). Wall time, requests and the
   joining process's peak memory, and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hive import Server  # noqa: E402

from basinvcs import porcelain  # noqa: E402
from basinvcs.hive import edge  # noqa: E402
from basinvcs.objects import Basin  # noqa: E402
from basinvcs.repository import Repository  # noqa: E402

TAKEN = "".join(f"taken bafyrei{'a' * 52} by z6Mk{'b' * 44}\n" for _ in range(10))


def build(path: Path, rounds: int) -> None:
    with porcelain.init(path, dim=1024, seed=7, name="hub") as repo:
        chart, rng = repo.config.chart, random.Random(0)
        with repo.transaction():
            for r in range(rounds):
                z = [rng.gauss(0, 1) for _ in range(chart.dim)]
                porcelain.commit(repo, Basin.create(chart, z), f"hive round {r}\n{TAKEN}")


def join(url: str, path: Path, mode: str) -> None:
    """One join, in this process; prints its seconds, requests and peak memory as JSON."""
    requests = 0
    request = edge._request

    def counted(*args, **kwargs):
        nonlocal requests
        requests += 1
        return request(*args, **kwargs)

    edge._request = counted
    if mode == "blocks":
        edge.history_source = lambda url, have=None: edge.block_source(url)
    porcelain.init(path, dim=1024, seed=7, name="edge").close()
    with Repository.open(path) as repo:
        started = time.perf_counter()
        edge.join(repo, url, depth=1 if mode == "shallow" else None)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "requests": requests, "peak_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--join", nargs=3, metavar=("URL", "DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.join:
        return join(args.join[0], Path(args.join[1]), args.join[2])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["BASIN_HOME"] = str(root / "home")
        os.environ.setdefault("BASIN_PROGRESS", "never")
        started = time.perf_counter()
        build(root / "hub", args.rounds)
        print(f"hub: {args.rounds} rounds built in {time.perf_counter() - started:.1f} s")
        server = Server(root / "hub", root / "home", root / "server.log", 1)
        results = {}
        try:
            for mode in ("pages", "blocks", "shallow"):
                out = subprocess.run(
                    [sys.executable, __file__, "--join", server.url, str(root / mode), mode],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                results[mode] = json.loads(out.splitlines()[-1])
        finally:
            server.stop()
    print(f"| join of {args.rounds} rounds | seconds | requests | peak memory (MiB) |")
    print("|---|---|---|---|")
    labels = {
        "blocks": "block by block (baseline)",
        "pages": "pages (GET /history)",
        "shallow": "shallow (--depth 1)",
    }
    for mode, label in labels.items():
        r = results[mode]
        print(f"| {label} | {r['seconds']:.3f} | {r['requests']:,} | {r['peak_mib']:.0f} |")
    b = results["blocks"]
    for mode in ("pages", "shallow"):
        r = results[mode]
        print(
            f"{mode}: {b['seconds'] / r['seconds']:.1f}x faster, "
            f"{b['requests'] / r['requests']:.0f}x fewer requests, "
            f"peak memory {r['peak_mib'] / b['peak_mib']:.2f}x the baseline's"
        )


if __name__ == "__main__":
    main()
