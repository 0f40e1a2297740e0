"""A hive coordinator under load: 1,000 simulated instances on loopback (see scripts/bench/hive).

Setup, untimed: a repository at d = 1024 whose config trusts 1,000 Ed25519 identities, and a real
coordinator (`basin hive serve`, its own process, listening on 127.0.0.1 only) that closes a round
once every instance has submitted (--round-updates = the number of instances). Each instance's
changes are real top-k updates (topk-q8, as many coordinates as fit in 600 bytes: what a hive
sender sends by default, update.fitting_k) compressed with error feedback before anything is
timed.

Every round: GET /head, then build and sign each instance's update (parent the new head, the new
round, the next sequence number), untimed; then send the round, in a random order, from one
asyncio client over keep-alive connections kept from round to round (raw HTTP/1.1; one per
instance unless --connections says fewer; each answer read and checked). A round's time runs
from its first request until /head shows the next round: its last answer, then its close
(aggregation and the head commit). The sustained intake is the updates accepted over the sum of
those times; /status gives the coordinator's own time for each close, and /proc the server's
VmRSS after each round. One more round is then sent over a single connection, one request at a
time, for the latency of a request that does not queue.

Server and client share two cores (the first two this process may use); the CPU time the other
processes on those cores took during the timed windows is printed, since it makes the rates lower
than this code's own (on a busy machine, `chrt -r 10 scripts/bench/hive` as root puts the bench
ahead of them). The baselines are measured in the same run, on one core: Ed25519
verification alone (PyNaCl, as the coordinator calls it), and the strict decoding of an update
(canonical form, every field, the signature) that every submission costs.

Usage: scripts/bench/hive [--rounds N] [--instances N] [--connections N]   (default 100 rounds:
100,000 updates, about two minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from nacl.signing import SigningKey

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.config import TrustedKey
from basinvcs.hive.update import Compressor, Update, fitting_k
from basinvcs.identity import Identity, verify_signature
from basinvcs.objects import Chart

DIM = 1024
STEPS = 4  # changes per instance, compressed with error feedback; round r sends step r mod STEPS
TARGET_RATE = 2000.0  # updates accepted per second, sustained, closes included
TARGET_CLOSE = 1.0  # seconds to close a round of 1,000 updates (aggregation and commit)
SHORT_ROUNDS = 20  # the sustained rate is also given over the first this many rounds
RSS_FLAT = 0.10  # flat: the last sample within 10% of the one after the first tenth of the run
START_TIMEOUT = 60.0
ROUND_TIMEOUT = 120.0  # a round that takes longer than this is a failure, not a measurement


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_cores() -> set[int]:
    """The first two CPUs this process may use (or the one it has)."""
    return set(sorted(os.sched_getaffinity(0))[:2])


def busy_jiffies(cpus: set[int]) -> int:
    """Clock ticks the given CPUs spent busy (anything but idle and iowait) so far."""
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            v = [int(x) for x in values[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(v) - v[3] - v[4]
    return total


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


# -- setup --------------------------------------------------------------------------------------


class Instance:
    """One simulated instance: its identity, its signer and its pre-compressed changes."""

    def __init__(self, k: int, rng: np.random.Generator, common: list[np.ndarray], coords: int):
        self.identity = Identity(k.to_bytes(4, "big") + bytes(28), f"instance{k}")
        self.key = SigningKey(self.identity.seed)
        self.public = bytes(self.key.verify_key)
        self.samples = int(rng.integers(64, 512))
        compressor = Compressor(DIM, k=coords)
        scale = float(rng.uniform(0.5, 2.0))  # some instances move more than others
        self.changes = [
            compressor.compress((common[s] + scale * rng.normal(0, 0.01, DIM)).tolist())
            for s in range(STEPS)
        ]

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message).signature


def default_coordinates(rounds: int) -> int:
    """The k a hive sender would send by default, for the largest round, sequence number and
    sample count of this run and the widest chart seed: every update then fits 600 bytes."""
    template = Update(
        chart=Chart(dim=DIM, seed=2**64 - 1),
        parent=CID.for_block(b"\xa0"),
        round=rounds,
        seq=rounds + 1,
        change=Compressor(DIM, k=0).compress([0.0] * DIM),
        samples=511,
        author=bytes(32),
    )
    return fitting_k(template)


def make_hub(root: Path, instances: list[Instance]) -> tuple[Path, Chart]:
    path = root / "hub"
    with porcelain.init(path, dim=DIM, name="hub") as repo:
        extra = [TrustedKey(i.public, i.identity.name, 1.0) for i in instances]
        repo.change_config(lambda c: setattr(c, "trusted", c.trusted + extra))  # all at once
        return path, repo.config.chart


class Server:
    """`basin hive serve` in its own process on 127.0.0.1, stopped by its own process id."""

    def __init__(self, repo: Path, home: Path, log: Path, round_updates: int):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, BASIN_HOME=str(home))
        cmd = [sys.executable, "-m", "basinvcs.cli", "-C", str(repo), "hive", "serve"]
        cmd += ["--listen", f"127.0.0.1:{self.port}", "--round-updates", str(round_updates)]
        cmd += ["--round-seconds", "86400"]  # rounds close by count only
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                self.get("/head")
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"the coordinator exited:\n{log.read_text()}") from None
                time.sleep(0.1)
        self.stop()
        raise SystemExit("the coordinator did not start")

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as answer:
            return json.loads(answer.read())

    def pids(self) -> list[int]:
        """The server's process, then its children (its decoding processes)."""
        out = [self.proc.pid]
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(p) for p in (task / "children").read_text().split()]
        return out

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of the server's processes so far."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def rss_mib(self, pid: int | None = None) -> float:
        for line in Path(f"/proc/{pid or self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=15)


# -- the client ---------------------------------------------------------------------------------


def build_round(instances: list[Instance], chart: Chart, head: CID, round_: int, port: int):
    """Each instance's update for this round, signed, as a whole HTTP request; shuffled."""
    prefix = f"POST /update HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    prefix += "Content-Type: application/octet-stream\r\n"
    requests = []
    for inst in instances:
        body = (
            Update(
                chart=chart,
                parent=head,
                round=round_,
                seq=round_ + 1,
                change=inst.changes[round_ % STEPS],
                samples=inst.samples,
                author=inst.public,
            )
            .signed(inst.sign)
            .encode()
        )
        requests.append((prefix + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    random.Random(round_).shuffle(requests)
    return requests


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    at = head.lower().find(b"content-length:")
    length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
    return status, await reader.readexactly(length)


class Pool:
    """The client's keep-alive connections, opened once and kept from round to round (one per
    instance by default, as instances that each keep a connection to their coordinator)."""

    def __init__(self, port: int, size: int):
        self.port, self.size = port, size
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def ready(self) -> None:
        """Open the connections, again any the server closed (untimed)."""
        await asyncio.sleep(0)  # let an EOF that arrived between rounds be seen
        self.conns = [(r, w) for r, w in self.conns if not r.at_eof() and not w.is_closing()]
        while len(self.conns) < self.size:
            self.conns.append(await asyncio.open_connection("127.0.0.1", self.port))

    async def send(self, requests: list[bytes], connections: int) -> tuple:
        """Send every request over the first `connections` connections, each waiting for its
        answer before its next request: (seconds, latencies, statuses, first refusal's body)."""
        latencies = [0.0] * len(requests)
        statuses = [0] * len(requests)
        refusals: list[bytes] = []
        todo = iter(range(len(requests)))

        async def worker(reader, writer):
            for k in todo:
                t0 = time.perf_counter()
                writer.write(requests[k])
                statuses[k], body = await _answer(reader)
                latencies[k] = time.perf_counter() - t0
                if statuses[k] != 202 and not refusals:
                    refusals.append(body)

        start = time.perf_counter()
        workers = [worker(r, w) for r, w in self.conns[:connections]]
        await asyncio.wait_for(asyncio.gather(*workers), ROUND_TIMEOUT)
        elapsed = time.perf_counter() - start
        return elapsed, latencies, statuses, refusals[0] if refusals else b""

    async def close(self) -> None:
        for _, writer in self.conns:
            writer.close()
        self.conns = []


def wait_for_round(server: Server, round_: int) -> float:
    """Seconds until /head shows `round_` (the round before it closed), polled; bounded."""
    start = time.perf_counter()
    while time.perf_counter() - start < ROUND_TIMEOUT:
        if server.get("/head")["round"] >= round_:
            return time.perf_counter() - start
        time.sleep(0.002)
    raise SystemExit(f"round {round_ - 1} did not close within {ROUND_TIMEOUT:.0f} s")


# -- the baseline -------------------------------------------------------------------------------


def per_second(fn, items: list, seconds: float = 1.0) -> float:
    """Calls of fn(item) per second on this core, cycling through items for about `seconds`."""
    for item in items[:50]:
        fn(item)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for item in items:
            fn(item)
        done += len(items)
    return done / (time.perf_counter() - start)


def baseline(requests: list[bytes]) -> tuple[float, float]:
    """Ed25519 verifications and strict update decodings per second, on this core."""
    bodies = [r[r.index(b"\r\n\r\n") + 4 :] for r in requests]
    updates = [Update.decode(b) for b in bodies]
    signed = [(u.author, u.signing_bytes(), u.signature) for u in updates]

    def verify(item):
        if not verify_signature(*item):
            raise AssertionError("a signature did not verify")

    return per_second(verify, signed), per_second(Update.decode, bodies)


# -- the run ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100, help="100 rounds: 100,000 updates")
    parser.add_argument(
        "--connections", type=int, help="keep-alive connections (default: one per instance)"
    )
    args = parser.parse_args()
    if not 3 <= args.instances <= 100_000 or not 1 <= args.rounds <= 10_000:
        raise SystemExit("--instances 3..100000 and --rounds 1..10000")
    connections = max(1, min(args.connections or args.instances, args.instances))
    cores = two_cores()
    os.sched_setaffinity(0, cores)  # the client, and the server it starts

    with tempfile.TemporaryDirectory(prefix="basin-hive-bench-") as tmp:
        root = Path(tmp)
        os.environ["BASIN_HOME"] = str(root / "home")
        t0 = time.perf_counter()
        rng = np.random.default_rng(13)
        common = [rng.normal(0, 0.01, DIM) for _ in range(STEPS)]
        coords = default_coordinates(args.rounds)
        instances = [Instance(k, rng, common, coords) for k in range(args.instances)]
        hub, chart = make_hub(root, instances)
        setup_s = time.perf_counter() - t0
        server = Server(hub, root / "home", root / "server.log", args.instances)
        try:
            result = run(server, instances, chart, args.rounds, connections, cores)
        finally:
            server.stop()
        report(args, connections, cores, setup_s, result)


def run(
    server: Server, instances: list[Instance], chart: Chart, rounds: int, conns: int, cores: set
) -> dict:
    out = {
        "windows": [],  # per round: (seconds with its close, accepted, seconds to its last answer)
        "latencies": [],
        "closes": [],
        "close_seen": [],
        "rss": [],
        "rss_children": [],
        "server_cpu": 0.0,
        "client_cpu": 0.0,
        "other_cpu": 0.0,
        "builds": 0.0,
        "bad": {},
        "first_refusal": b"",
    }
    loop = asyncio.new_event_loop()
    pool = Pool(server.port, conns)
    try:
        run_rounds(server, instances, chart, rounds, conns, cores, loop, pool, out)
    finally:
        loop.run_until_complete(pool.close())
        loop.close()
    out["status"] = server.get("/status")
    return out


def run_rounds(server, instances, chart, rounds, conns, cores, loop, pool, out) -> None:
    start = time.perf_counter()
    for r in range(rounds + 1):  # the last one over a single connection, not in the rates
        info = server.get("/head")
        if info["round"] != r:
            raise SystemExit(f"round {r} expected, the coordinator is at {info['round']}")
        t_build = time.perf_counter()
        requests = build_round(instances, chart, CID.parse(info["head"]), r, server.port)
        out["builds"] += time.perf_counter() - t_build
        if r == 0:
            out["verify_per_s"], out["decode_per_s"] = baseline(requests)
        single = r == rounds
        loop.run_until_complete(pool.ready())
        cpu0, ccpu0, busy0 = server.cpu_seconds(), time.process_time(), busy_jiffies(cores)
        elapsed, lat, statuses, refusal = loop.run_until_complete(
            pool.send(requests, 1 if single else conns)
        )
        closing = wait_for_round(server, r + 1)  # the round's close is part of its time
        server_cpu = server.cpu_seconds() - cpu0
        client_cpu = time.process_time() - ccpu0
        busy = (busy_jiffies(cores) - busy0) / os.sysconf("SC_CLK_TCK")
        for s in statuses:
            if s != 202:
                out["bad"][s] = out["bad"].get(s, 0) + 1
        if refusal and not out["first_refusal"]:
            out["first_refusal"] = refusal
        status = server.get("/status")
        if status["round"] != r + 1:
            raise SystemExit(f"round {r} did not close: {status}; first refusal {refusal!r}")
        if single:
            out["single_latencies"] = lat
            out["single_accepted"] = statuses.count(202)
            break
        out["server_cpu"] += server_cpu
        out["client_cpu"] += client_cpu
        out["other_cpu"] += max(0.0, busy - server_cpu - client_cpu)
        out["windows"].append((elapsed + closing, statuses.count(202), elapsed))
        out["latencies"].extend(lat)
        out["close_seen"].append(closing)
        out["closes"].append(status.get("close_seconds"))
        out["rss"].append(server.rss_mib())
        out["rss_children"].append(sum(server.rss_mib(p) for p in server.pids()[1:]))
    out["wall"] = time.perf_counter() - start


def ms(values: list[float], q: float) -> str:
    return f"{float(np.percentile(np.array(values), q)) * 1e3:.1f} ms"


def report(args, connections: int, cores: set, setup_s: float, res: dict) -> None:
    windows = res["windows"]
    accepted = sum(n for _, n, _ in windows)
    busy = sum(t for t, _, _ in windows)
    short = windows[:SHORT_ROUNDS]
    short_rate = sum(n for _, n, _ in short) / sum(t for t, _, _ in short)
    tail = windows[-SHORT_ROUNDS:]
    tail_rate = sum(n for _, n, _ in tail) / sum(t for t, _, _ in tail)
    rate = accepted / busy
    intake_only = accepted / sum(t for _, _, t in windows)
    closes = [c for c in res["closes"] if c is not None]
    rss, children = res["rss"], res["rss_children"]
    warm_at = len(rss) // 10  # after the first tenth: allocator and SQLite caches warm
    status = res["status"]
    expected = args.instances * (args.rounds + 1)

    def mark(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(
        f"hive intake: {args.instances} instances, {args.rounds} rounds of {args.instances} "
        f"(--round-updates {args.instances}), d = {DIM}, topk-q8 k = "
        f"{default_coordinates(args.rounds)}, {connections} "
        f"keep-alive connections from one asyncio client"
    )
    print(
        f"machine: {os.cpu_count()} CPUs ({cpu_model()}); server and client share CPUs "
        f"{', '.join(map(str, sorted(cores)))}; Python {platform.python_version()}"
    )
    print(
        f"setup {setup_s:.1f} s; building and signing the updates {res['builds']:.1f} s "
        f"(untimed); wall {res['wall']:.1f} s"
    )
    print(
        f"during the timed windows: server CPU {res['server_cpu'] / busy:.0%} of a core "
        f"({res['server_cpu'] / accepted * 1e6:.0f} us per update, closes included), client "
        f"{res['client_cpu'] / busy:.0%}, other processes {res['other_cpu'] / busy:.0%} "
        f"(on these CPUs: more than a few % means the rates are not this code's alone)"
    )
    print()
    rows = [
        (
            f"sustained intake, first {sum(n for _, n, _ in short):,} updates",
            f"{short_rate:,.0f} /s",
            f">= {TARGET_RATE:,.0f} /s",
            mark(short_rate >= TARGET_RATE),
        ),
        (
            f"sustained intake, {accepted:,} updates",
            f"{rate:,.0f} /s",
            f">= {TARGET_RATE:,.0f} /s",
            mark(rate >= TARGET_RATE),
        ),
        (f"  over the last {sum(n for _, n, _ in tail):,}", f"{tail_rate:,.0f} /s", "", ""),
        ("  the same without the closes", f"{intake_only:,.0f} /s", "", ""),
        (
            "Ed25519 verify alone, 1 core (PyNaCl)",
            f"{res['verify_per_s']:,.0f} /s",
            f"intake is {rate / res['verify_per_s']:.0%} of it",
            "",
        ),
        ("Update.decode (strict, signed), 1 core", f"{res['decode_per_s']:,.0f} /s", "", ""),
        (f"latency p50, {connections} connections", ms(res["latencies"], 50), "", ""),
        (f"latency p99, {connections} connections", ms(res["latencies"], 99), "", ""),
        ("latency p50, 1 connection", ms(res["single_latencies"], 50), "", ""),
        ("latency p99, 1 connection", ms(res["single_latencies"], 99), "", ""),
        (
            "round close, server (median / max)",
            f"{statistics.median(closes):.3f} / {max(closes):.3f} s" if closes else "n/a",
            f"< {TARGET_CLOSE:.0f} s",
            mark(bool(closes) and max(closes) < TARGET_CLOSE),
        ),
        (
            "round close, client: last answer to new head",
            f"{statistics.median(res['close_seen']):.3f} / {max(res['close_seen']):.3f} s",
            "",
            "",
        ),
        (
            "server RSS first / warm / last / max",
            f"{rss[0]:.0f} / {rss[warm_at]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB",
            f"flat: last <= warm + {RSS_FLAT:.0%}",
            mark(rss[-1] <= rss[warm_at] * (1 + RSS_FLAT)),
        ),
        (
            "its decoding processes, together: first / last / max",
            f"{children[0]:.0f} / {children[-1]:.0f} / {max(children):.0f} MiB",
            "",
            "",
        ),
    ]
    header = ("measure", "value", "target", "")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    refusals = ", ".join(f"{n} x HTTP {s}" for s, n in sorted(res["bad"].items())) or "none"
    total = accepted + res["single_accepted"]
    print(
        f"accepted {total:,} of {expected:,} (the last round over one connection); refused "
        f"{refusals}; the coordinator's /status: round {status['round']}, taken "
        f"{status.get('taken', 0):,}, refused {status.get('refused', 0):,}, pending "
        f"{status.get('pending', 0):,}"
    )
    if res["first_refusal"]:
        print(f"first refusal: {res['first_refusal'].decode(errors='replace')}")
    step = max(1, len(rss) // 20)
    print(f"server RSS every {step} rounds (MiB): " + " ".join(f"{v:.0f}" for v in rss[::step]))
    if total != expected or status.get("taken", 0) + status.get("refused", 0) != expected:
        raise SystemExit("not every update was accepted and counted once")


if __name__ == "__main__":
    main()
