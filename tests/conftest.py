"""Shared test fixtures: an isolated identity home, fresh repositories, a CLI runner."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.cli import main
from basinvcs.objects import Basin, Chart
from basinvcs.repository import Repository

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DIM = 64  # small chart for most tests; d = 1024 where packet size matters

# Hypothesis, for the fuzz tests (test_fuzz_*.py). "ci", the default, is short and derandomized:
# the suite stays fast and every run tries the same examples. scripts/fuzz selects "long"
# (BASIN_FUZZ_PROFILE=long, BASIN_FUZZ_EXAMPLES per test), fresh random examples on every run.
# No example database, and hypothesis's own cache goes to the temp dir, not into the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "basinvcs-hypothesis")
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True, database=None)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("BASIN_FUZZ_EXAMPLES", "5000")),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("BASIN_FUZZ_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def basin_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own identity directory; nothing touches the real ~/.config."""
    home = tmp_path_factory.mktemp("basin-home")
    monkeypatch.setenv("BASIN_HOME", str(home))
    monkeypatch.setenv("BASIN_AUTHOR", "tester")
    monkeypatch.delenv("BASIN_DIR", raising=False)
    return home


@pytest.fixture
def no_hang():
    """Fail, rather than hang, a test whose code blocks (a FIFO opened for reading): 20 s."""
    import signal

    def expire(*_):
        raise TimeoutError("blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def repo_dir(tmp_path, monkeypatch) -> Path:
    """An initialised repository (d = 64) that is also the working directory."""
    path = tmp_path / "repo"
    porcelain.init(path, dim=DIM, seed=7).close()
    monkeypatch.chdir(path)
    return path


@pytest.fixture
def repo(repo_dir) -> Repository:
    with Repository.open(repo_dir) as r:
        yield r


class Cli:
    """Runs `basin` in-process with click's CliRunner."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, input: bytes | str | None = None, ok: bool = True) -> Result:
        result = self.runner.invoke(main, list(args), input=input, catch_exceptions=False)
        if ok and result.exit_code != 0:
            raise AssertionError(
                f"basin {' '.join(args)} failed ({result.exit_code}):\n{result.output}"
            )
        return result

    def fails(self, *args: str, input: bytes | str | None = None) -> Result:
        """Run a command that must fail with exactly one `error:` line and a non-zero exit."""
        result = self(*args, input=input, ok=False)
        assert result.exit_code != 0, result.output
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith(("error:", "Error:")), result.stderr
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()


def packet(seed: int, dim: int = DIM, *, scale: float = 1.0, **kw) -> Basin:
    """A deterministic pseudo-random packet in the test chart (seed 7)."""
    from basinvcs.objects import Chart

    values = [
        (int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big") / 2**32 - 0.5)
        * scale
        for i in range(dim)
    ]
    return Basin.create(Chart(seed=7, dim=dim), values, **kw)


def state(repo_path: Path) -> dict[str, object]:
    """Everything a repository holds, table by table, plus its config and the files present.

    Compared before and after a refused command: SQLite may checkpoint its WAL on close, so the
    database file's bytes are not a fair measure of 'nothing changed', its rows are.
    """
    basin = repo_path / ".basin"
    out: dict[str, object] = {
        "files": sorted(
            p.name for p in basin.iterdir() if "-wal" not in p.name and "-shm" not in p.name
        )
    }
    out["config"] = (basin / "config.json").read_bytes()
    conn = sqlite3.connect(basin / "basin.db")
    try:
        for table in ("blocks", "refs", "reflog", "commits", "commit_parents"):
            out[table] = sorted(conn.execute(f"SELECT * FROM {table}").fetchall())
    finally:
        conn.close()
    return out


CHART = Chart(seed=7, dim=DIM)  # the chart of the `repo_dir` repository


def vec(**coords: float) -> list[float]:
    """A z in CHART with the given coordinates set, e.g. vec(c0=1.0, c5=-2.0)."""
    z = [0.0] * DIM
    for key, value in coords.items():
        z[int(key[1:])] = value
    return z


def flip_last_byte(path):
    """Change θ0 in place, keeping the file's size and mtime: only its ctime tells."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 0x40]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def commit_z(repo_dir: Path, z: list[float], message: str, **packet_fields):
    """Commit the basin z (plus packet fields such as fisher=) on the current branch."""
    with Repository.open(repo_dir) as repo:
        return porcelain.commit(repo, Basin.create(CHART, z, **packet_fields), message)


# -- real IPFS nodes (js-ipfs), only inside a private network namespace -------------------------


def _wait_connected(a, b, timeout: float = 15.0) -> None:
    """Until a and b (IPFSDaemon) each list the other as a connected peer."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b.peer_id in a.node.swarm_peers() and a.peer_id in b.node.swarm_peers():
            return
        time.sleep(0.2)
    raise AssertionError(f"{a} and {b} did not connect within {timeout:.0f} s")


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory):
    """One js-ipfs daemon for the session (an IPFSDaemon; `.node` is its basinvcs.ipfs.Node).

    Skips, saying why, outside a private network namespace or without js-ipfs installed.
    """
    from ipfsnode import IPFSDaemon, require_sandbox

    require_sandbox()
    daemon = IPFSDaemon(tmp_path_factory.mktemp("ipfs-node"), "node1")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="session")
def ipfs_pair(ipfs_node, tmp_path_factory):
    """Two connected js-ipfs daemons: ipfs_node and a second one started for the pair."""
    from ipfsnode import IPFSDaemon

    other = IPFSDaemon(tmp_path_factory.mktemp("ipfs-node"), "node2")
    try:
        other.start()
        other.node.swarm_connect(ipfs_node.swarm)
        _wait_connected(ipfs_node, other)
        yield ipfs_node, other
    finally:
        other.stop()


@contextlib.contextmanager
def serving(coordinator):
    """`coordinator` (a hive Coordinator) served over real HTTP by `basin hive serve`'s app on
    uvicorn, in a thread of this process (so a test can set the coordinator's limits). Yields
    its URL; stopped when the block ends."""
    import socket
    import threading

    import uvicorn

    from basinvcs.hive.server import make_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(make_app(coordinator), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@contextlib.contextmanager
def answering(doc: dict, blocks=None, history: bytes | None = None):
    """A real HTTP server on 127.0.0.1 answering every GET (200) and POST (202, as a coordinator
    takes an update) with the JSON `doc`: a hive coordinator that says what it likes. With
    `blocks` (a Repository), GET /block/CID serves that repository's block, and GET /history/...
    is 404 (a coordinator that serves no pages of history), or answers `history` where given.
    Yields its URL; stopped when the block ends."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self, status=200):
            body = json.dumps(doc).encode()
            if blocks is not None and self.path.startswith("/block/"):
                body = blocks.get_block(CID.parse(self.path[len("/block/") :]))
            if blocks is not None and self.path.startswith("/history/"):
                status, body = (200, history) if history else (404, b'{"error": "not found"}')
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.do_GET(202)

        def log_message(self, *args):
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as httpd:
        Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()
