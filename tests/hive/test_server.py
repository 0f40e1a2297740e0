"""The hive end to end over HTTP: a real coordinator process (uvicorn on 127.0.0.1), edge
repositories that join, submit and sync through the CLI, refusals with their statuses, and a
coordinator killed with SIGKILL in the middle of a round."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from basinvcs import porcelain
from basinvcs.repository import Repository
from tests.conftest import DIM, Cli, commit_z, vec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`basin hive serve` in its own process, stopped by its own process id."""

    def __init__(self, repo: Path, home: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, BASIN_HOME=str(home))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "basinvcs.cli",
                "-C",
                str(repo),
                "hive",
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                *args,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/head", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise AssertionError(self.proc.stderr.read()) from None
                time.sleep(0.1)
        raise AssertionError("the coordinator did not start")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class Edge:
    """An instance with its own identity and repository, driving the real CLI."""

    def __init__(self, tmp_path: Path, name: str, monkeypatch):
        self.home, self.path = tmp_path / f"home-{name}", tmp_path / name
        self.monkeypatch, self.cli = monkeypatch, Cli()
        with self:
            porcelain.init(self.path, dim=DIM, seed=7, name=name).close()

    def __enter__(self):
        self.monkeypatch.setenv("BASIN_HOME", str(self.home))
        if self.path.exists():
            self.monkeypatch.chdir(self.path)
        return self

    def __exit__(self, *exc):
        pass

    def __call__(self, *args, ok=True):
        with self:
            return self.cli(*args, ok=ok)

    @property
    def key(self) -> str:
        with self:
            return self.cli("key").output.split("<")[1].rstrip(">\n")

    def z(self) -> list[float]:
        with self, Repository.open(self.path) as repo:
            return list(repo.read_basin(repo.read_commit(repo.head_commit()).basin).z)


@pytest.fixture
def hive(tmp_path, monkeypatch):
    hub = Edge(tmp_path, "hub", monkeypatch)
    edges = [Edge(tmp_path, f"e{k}", monkeypatch) for k in range(3)]
    for e in edges:
        hub("key", "add", e.key, "--name", e.path.name)
    servers: list[Server] = []

    def start(*args: str) -> Server:
        servers.append(Server(hub.path, hub.home, *args))
        return servers[-1]

    yield hub, edges, start
    for s in servers:
        s.kill()


def test_three_edges_join_submit_and_sync(hive):
    hub, edges, start = hive
    server = start("--round-updates", "3", "--rule", "mean", "--optimizer", "average")
    for k, e in enumerate(edges):
        assert "joined" in e("hive", "join", server.url).output
        commit_z(e.path, vec(**{f"c{k}": 1.0 + k}), f"{e.path.name}'s work")
        out = e("hive", "submit", "--samples", "5").output
        assert "submitted update" in out and "round 0" in out
    time.sleep(0.5)
    for e in edges:
        assert e("hive", "sync").output.startswith("reset: ")
    expected = vec(c0=1 / 3, c1=2 / 3, c2=1.0)
    for e in edges:
        assert e.z() == pytest.approx(expected, abs=0.02)
    status = json.loads(urllib.request.urlopen(f"{server.url}/status").read())
    assert status["round"] == 1 and status["taken"] == 3
    assert "ok" in edges[0]("verify").output


def test_refusals_over_http_and_a_down_coordinator(hive, tmp_path):
    hub, edges, start = hive
    server = start()
    assert post(f"{server.url}/update", b"\x00" * 100_000)[0] == 413
    status, answer = post(f"{server.url}/update", b"not cbor")
    assert status == 400 and "not a valid update" in answer["error"]
    e = edges[0]
    e("hive", "join", server.url)
    commit_z(e.path, vec(c0=1.0), "work")
    e("hive", "submit")
    result = e("hive", "submit", ok=False)  # a second update in the same round
    assert result.exit_code == 1 and "HTTP 429" in result.stderr
    server.kill()
    result = e("hive", "sync", ok=False)
    assert result.exit_code == 1 and "cannot reach the hive coordinator" in result.stderr


def test_a_coordinator_killed_mid_round_loses_nothing_and_counts_nothing_twice(hive):
    hub, edges, start = hive
    server = start("--round-updates", "3", "--rule", "mean", "--optimizer", "average")
    for k, e in enumerate(edges):
        e("hive", "join", server.url)
        commit_z(e.path, vec(c0=float(k + 1)), "work")
    edges[0]("hive", "submit")
    edges[1]("hive", "submit")
    server.kill()  # SIGKILL with two accepted updates pending
    server = start("--round-updates", "3", "--rule", "mean", "--optimizer", "average")
    for e in edges:  # the coordinator is back on another port: point the edges at it
        with e:
            path = e.path / ".basin" / "hive.json"
            doc = json.loads(path.read_text())
            doc["url"] = server.url
            path.write_text(json.dumps(doc))
    edges[2]("hive", "submit")  # the third update closes the round with all three
    time.sleep(0.5)
    edges[2]("hive", "sync")
    assert edges[2].z()[0] == pytest.approx(2.0, abs=0.02)
    status = json.loads(urllib.request.urlopen(f"{server.url}/status").read())
    assert status["taken"] == 3 and status["round"] == 1
