"""The hive end to end over HTTP: a real coordinator process (uvicorn on 127.0.0.1), edge
repositories that join, submit and sync through the CLI, refusals with their statuses, and a
coordinator killed with SIGKILL in the middle of a round."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.errors import RemoteError
from basinvcs.hive import edge
from basinvcs.identity import format_key
from basinvcs.objects import Entanglement
from basinvcs.repository import Repository
from tests.conftest import DIM, Cli, answering, commit_z, vec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`basin hive serve` in its own process, stopped by its own process id."""

    def __init__(self, repo: Path, home: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
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

    def start(*args: str, port: int | None = None) -> Server:
        servers.append(Server(hub.path, hub.home, *args, port=port))
        return servers[-1]

    yield hub, edges, start
    for s in servers:
        s.kill()


def test_three_edges_join_submit_and_sync(hive):
    hub, edges, start = hive
    server = start(
        "--round-updates", "3", "--rule", "mean", "--optimizer", "average", "--keep-rounds", "1"
    )
    link = Entanglement("cardiology", "medicine", 0.5)
    for k, e in enumerate(edges):
        assert "joined" in e("hive", "join", server.url).output
        # two of the three also change β and measure a link: most of the round, so it moves
        extras = {"beta": (1.5,), "entanglements": [link]} if k < 2 else {}
        commit_z(e.path, vec(**{f"c{k}": 1.0 + k}), f"{e.path.name}'s work", **extras)
        out = e("hive", "submit", "--samples", "5").output
        assert "submitted update" in out and "round 0" in out
    time.sleep(0.5)
    for e in edges:
        assert e("hive", "sync").output.startswith("reset: ")
    expected = vec(c0=1 / 3, c1=2 / 3, c2=1.0)
    for e in edges:
        assert e.z() == pytest.approx(expected, abs=0.02)
        with Repository.open(e.path) as repo:
            packet = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
        assert packet.beta == (1.5,) and packet.entanglements == (link,)
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
    commit_z(e.path, vec(c0=1.5), "more work")
    result = e("hive", "submit", ok=False)  # a second update in the same round
    assert result.exit_code == 1 and "HTTP 429" in result.stderr
    commit_z(e.path, vec(c0=2.0), "two β coefficients", beta=(1.0, 0.5))
    result = e("hive", "submit", ok=False)  # the hive's β has one: refused before sending
    assert result.exit_code == 1 and "changes their values, not their number" in result.stderr
    server.kill()
    result = e("hive", "sync", ok=False)
    assert result.exit_code == 1 and "cannot reach the hive coordinator" in result.stderr


def test_status_says_where_the_edge_and_its_coordinator_stand(hive, tmp_path, cli):
    hub, edges, start = hive
    server = start("--round-updates", "2")
    a, b = edges[:2]
    for e in (a, b):
        e("hive", "join", server.url)
    out = a("hive", "status").stdout
    assert "0 updates sent" in out and "nothing new since the last sync" in out
    assert "round 0" in out and "0 pending this round, 0 taken, 0 refused" in out
    commit_z(a.path, vec(c0=1.0), "work")
    assert "unsubmitted work" in a("hive", "status").stdout
    assert "1 coordinate)" in a("hive", "submit").stdout  # counted in the singular
    out = a("hive", "status").stdout
    assert "1 update sent" in out and "submitted, waiting for the round to close" in out
    assert "1 pending this round" in out and "newer" not in out
    commit_z(b.path, vec(c1=1.0), "work")
    b("hive", "submit")  # the second update closes the round
    time.sleep(0.5)
    out = a("hive", "status").stdout
    assert "round 1" in out and "(newer than synced: basin hive sync)" in out
    assert "0 pending this round, 2 taken, 0 refused" in out
    a("hive", "sync")
    out = a("hive", "status").stdout
    assert "nothing new since the last sync" in out and "newer" not in out
    server.kill()
    result = a("hive", "status", ok=False)  # down: what is known locally, then one error line
    assert result.exit_code == 1 and "nothing new since the last sync" in result.stdout
    assert result.stderr.startswith("error: cannot reach the hive coordinator")
    lone = tmp_path / "lone"
    porcelain.init(lone, dim=DIM, seed=7).close()
    with a:
        a.monkeypatch.chdir(lone)
        assert "joined no hive" in cli.fails("hive", "status").stderr


@pytest.mark.parametrize(
    "url",
    ["not-a-url", "ftp://127.0.0.1:1", "http://", "http://127.0.0.1:99999", "http://h:1/?x=1"],
)
def test_join_refuses_what_is_not_a_coordinators_url(repo_dir, cli, url):
    assert "is not a coordinator's URL" in cli.fails("hive", "join", url).stderr
    assert not (repo_dir / ".basin" / "hive.json").exists()


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://me:secret@127.0.0.1:1", "'127.0.0.1': a coordinator's URL carries no user"),
        ("http://127.0.0.1:1/a b", "it holds spaces or control codes"),
        ("http://127.0.0.1:1/\x1b[2J", "it holds spaces or control codes"),
    ],
)
def test_join_refuses_a_url_with_credentials_or_control_codes_in_one_line(
    repo_dir, cli, url, words
):
    from tests.conftest import state

    before = state(repo_dir)
    err = cli.fails("hive", "join", url).stderr
    assert words in err and err.count("\n") == 1 and "secret" not in err and "\x1b" not in err
    assert state(repo_dir) == before


def test_join_waits_for_a_coordinator_that_is_still_starting(hive):
    """`join --wait` keeps asking an address nobody answers at yet, and joins once the
    coordinator is up; without a coordinator it gives up after the time given, one line, and
    the repository has joined nothing. The training API finds the coordinator joined."""
    from basinvcs.hive.trainer import HttpTransport

    hub, edges, start = hive
    e = edges[0]
    port = free_port()
    late = threading.Timer(1.5, lambda: start("--round-updates", "1", port=port))
    with e:
        began = time.monotonic()
        refused = e.cli.fails("hive", "join", "--wait", "1", f"http://127.0.0.1:{port}").stderr
    assert 1.0 <= time.monotonic() - began < 10
    assert "cannot reach the hive coordinator" in refused and len(refused.splitlines()) == 1
    assert not (e.path / ".basin" / "hive.json").exists()
    late.start()
    try:
        assert "joined" in e("hive", "join", "--wait", "60", f"http://127.0.0.1:{port}").output
    finally:
        late.join()
    with Repository.open(e.path) as repo:
        transport = HttpTransport.joined(repo)
        assert transport.url == f"http://127.0.0.1:{port}"
        assert transport.head().cid == repo.branch_commit("general")


def test_join_refuses_local_work_and_a_second_join_unless_forced(hive):
    hub, edges, start = hive
    server = start("--round-updates", "1")
    e = edges[0]
    commit_z(e.path, vec(c0=1.0), "local work")  # the branch has more than its first commit
    before = e("branch").stdout, e("key", "list").stdout
    with e:
        refused = e.cli.fails("hive", "join", server.url).stderr
    assert "holds commits the hive's head does not contain" in refused
    assert (e("branch").stdout, e("key", "list").stdout) == before  # nothing changed
    assert "hive" not in before[1]
    e("hive", "join", "--force", server.url)
    assert "hive" in e("key", "list").stdout
    commit_z(e.path, vec(c0=2.0), "hive work")
    e("hive", "submit")  # sequence number 1; the round closes
    with e:
        refused = e.cli.fails("hive", "join", server.url).stderr
    assert f"has joined the hive at {server.url} already" in refused
    e("hive", "join", "--force", server.url)  # the same coordinator: its sequence number kept
    assert "1 update sent" in e("hive", "status").stdout
    commit_z(e.path, vec(c0=3.0), "more work")
    assert "submitted update" in e("hive", "submit").stdout  # sequence 2, not a replay


@pytest.mark.parametrize(
    "answer",
    [
        {"head": "not a cid", "round": 1, "pending": 0, "taken": 0, "refused": 0},
        {"head": str(CID.for_block(b"x")), "round": -1, "pending": 0, "taken": 0, "refused": 0},
        {"head": str(CID.for_block(b"x")), "round": 1, "pending": 0.5, "taken": 0, "refused": 0},
        {"head": str(CID.for_block(b"x")), "round": True, "pending": 0, "taken": 0, "refused": 0},
        {
            "head": str(CID.for_block(b"x")),
            **{"round": 1, "pending": 0, "taken": 0, "refused": 0, "quarantined": "two"},
        },
        {"round": 1},
    ],
)
def test_a_status_that_is_not_a_coordinators_is_one_error(answer):
    """What a server answers is shown, never trusted: a malformed status is a RemoteError."""
    with answering(answer) as url, pytest.raises(RemoteError, match="not a hive coordinator's"):
        edge.coordinator_status(url)


@pytest.mark.parametrize("round_", ["abc", -1, 1.5, None])
def test_submit_refuses_a_round_that_is_not_a_coordinators(repo_dir, round_):
    with Repository.open(repo_dir) as repo:
        synced = repo.head_commit()
    commit_z(repo_dir, vec(c0=1.0), "work")
    with answering({"round": round_}) as url, Repository.open(repo_dir) as repo:
        key = format_key(repo.identity().public_key)
        edge.save_state(repo, edge.EdgeState(url, key, "general", str(synced)))
        with pytest.raises(RemoteError, match="not a hive coordinator's"):
            edge.submit(repo)
        assert edge.load_state(repo).sent == 0


def test_hive_state_from_before_the_update_list_loads_and_bad_lists_are_refused(repo_dir):
    """A state written when it kept one update (`update`, `round`) loads as a list of one; a list
    entry that is not [CID, round] makes the state unusable (one line); and a thousand updates
    sent since the last sync refuse the next submit before anything is sent."""
    from basinvcs.errors import RepositoryError

    with Repository.open(repo_dir) as repo:
        synced, key = str(repo.head_commit()), format_key(repo.identity().public_key)
        path = Path(repo.basin_dir) / "hive.json"
        sent = str(CID.for_block(b"an update"))
        old = {"url": "http://127.0.0.1:1", "key": key, "branch": "general", "synced": synced}
        path.write_text(json.dumps({**old, "update": sent, "round": 3}))
        assert edge.load_state(repo).updates == [[sent, 3]]
        path.write_text(json.dumps({**old, "update": None, "round": None}))
        assert edge.load_state(repo).updates == []
        for bad in ([[sent]], [[sent, -1]], [["not a cid", 1]], [[sent, 1.5]], [sent]):
            path.write_text(json.dumps({**old, "updates": bad}))
            with pytest.raises(RepositoryError, match="is unusable"):
                edge.load_state(repo)
        path.write_text(json.dumps({**old, "updates": [[sent, 1]] * edge.MAX_UNSYNCED}))
    commit_z(repo_dir, vec(c0=1.0), "work")
    too_many = pytest.raises(RepositoryError, match="1000 updates sent since the last sync")
    with Repository.open(repo_dir) as repo, too_many:  # refused before asking anything
        edge.submit(repo)


def test_sync_keeps_work_until_a_head_takes_it_and_merges_it_back_if_refused(hive):
    """A sync before the round holding the edge's update has closed changes nothing ("waiting");
    once a head takes it, the branch moves there ("reset"); an update the round refused (its
    signer removed while it waited) leaves the work on the branch, merged with the head."""
    hub, edges, start = hive
    server = start("--round-updates", "3", "--rule", "mean", "--optimizer", "average")
    for k, e in enumerate(edges):
        e("hive", "join", server.url)
        commit_z(e.path, vec(**{f"c{k}": 1.0}), f"{e.path.name}'s work")
    first = e0 = edges[0]
    sent = e0("hive", "submit").output.split()[2]
    tip = e0.z()
    out = e0("hive", "sync").output
    assert out.startswith("waiting: ") and f"update {sent} is in round 0, not closed yet" in out
    assert e0.z() == tip and "submitted, waiting" in e0("hive", "status").output
    refused = edges[2]("hive", "submit").output.split()[2]
    hub("key", "remove", edges[2].path.name)  # its update waits in the round: refused at close
    # two signers left, and e2's waiting update no longer counts: e1's fills round 0
    assert "round 0" in edges[1]("hive", "submit").output
    assert first("hive", "sync").output.startswith("reset: ")
    z = first.z()  # e0's and e1's, averaged; e2's refused
    assert z[0] == pytest.approx(0.5, abs=0.02) and z[1] == pytest.approx(0.5, abs=0.02)
    out = edges[2]("hive", "sync").output
    assert out.startswith("refused: ") and (
        f"update {refused} refused: signer no longer trusted; the work is kept, merged" in out
    )
    assert "e2's work" in edges[2]("log", "--oneline").output  # still on the branch
    assert edges[2].z()[2] != 0.0


def test_sync_keeps_an_earlier_refused_update_when_a_later_one_was_taken(hive):
    """Two updates sent between syncs, the first refused at its round's close and the second
    taken: sync merges (the first's change is not in the hive, only on the branch) instead of
    moving to the head, which would drop it."""
    hub, edges, start = hive
    server = start("--round-updates", "2", "--rule", "mean", "--optimizer", "average")
    e0, e1, e2 = edges
    for e in edges:
        e("hive", "join", server.url)
    commit_z(e0.path, vec(c0=1.0), "first")
    first = e0("hive", "submit").output.split()[2]
    hub("key", "remove", e0.path.name)  # the first waits in round 0: refused when it closes
    commit_z(e1.path, vec(c1=1.0), "e1's work")
    e1("hive", "submit")  # e0's no longer counts: round 0 waits for a second
    commit_z(e2.path, vec(c2=1.0), "e2's work")
    assert "round 0" in e2("hive", "submit").output  # closes it: e1's and e2's taken, e0's refused
    hub("key", "add", e0.key, "--name", e0.path.name)
    commit_z(e0.path, vec(c0=1.0, c3=1.0), "second")
    second = e0("hive", "submit").output.split()[2]
    assert "waiting: " in e0("hive", "sync").output  # round 1 is open
    assert "submitted (2 updates since the last sync), waiting" in e0("hive", "status").output
    commit_z(e1.path, vec(c1=2.0), "e1's more")
    assert "round 1" in e1("hive", "submit").output  # closes round 1, e0's second taken
    time.sleep(0.3)
    out = e0("hive", "sync").output
    assert out.startswith("refused: ")
    assert f"update {first} refused: signer no longer trusted" in out
    assert second not in out and "the work is kept, merged" in out
    z = e0.z()
    assert z[0] > 0.3 and z[3] > 0.3  # both submissions' work, the refused first included
    log = e0("log", "--oneline").output
    assert "first" in log and "second" in log
    with Repository.open(e0.path) as repo:
        assert edge.load_state(repo).updates == []


def test_sync_refuses_a_head_not_signed_by_the_joined_key_or_older_than_synced(hive, tmp_path):
    """A coordinator's address answering with an older head, a head signed by another key (or
    one on top of a commit another key signed), or naming another key: each is one line, and
    nothing in the edge's repository changes (not even a block stored). A join to an address
    whose head is not signed by the key it names fails."""
    from tests.conftest import state

    hub, edges, start = hive
    e, stranger = edges[0], edges[1]
    server = start("--round-updates", "1")
    e("hive", "join", server.url)
    for value in (1.0, 2.0):
        commit_z(e.path, vec(c0=value), "work")
        e("hive", "submit")
        time.sleep(0.3)
        assert e("hive", "sync").output.startswith("reset: ")
    info = json.loads(urllib.request.urlopen(f"{server.url}/head").read())
    server.kill()
    with stranger:  # a commit on the hub's head signed by someone else
        forged = str(commit_z(hub.path, vec(c0=9.0), "not the coordinator's"))
    with hub:  # and the coordinator's key on top of it: its rounds are its commits alone
        on_top = str(commit_z(hub.path, vec(c0=9.5), "the coordinator's, on the stranger's"))
    with Repository.open(hub.path) as repo:
        older = str(repo.read_commit(CID.parse(info["head"])).parents[0])
        for doc, words in [
            ({**info, "head": older}, "does not contain the head synced last"),
            ({**info, "head": forged}, f"is signed by {stranger.key}, not by the coordinator's"),
            ({**info, "head": on_top}, f"holds {forged} since the head synced, signed by"),
            ({**info, "key": stranger.key}, f"now names key {stranger.key}"),
        ]:
            with answering(doc, blocks=repo) as url:
                with e, Repository.open(e.path) as mine:  # the edge follows this address
                    edge.save_state(mine, dataclasses.replace(edge.load_state(mine), url=url))
                before = state(e.path)
                err = e("hive", "sync", ok=False).stderr
                assert words in err and err.count("\n") == 1
                assert state(e.path) == before
        with answering({**info, "key": stranger.key}, blocks=repo) as url:
            before = state(edges[2].path)
            err = edges[2]("hive", "join", url, ok=False).stderr
            assert f"names key {stranger.key}, but its head" in err and "not joined" in err
            assert state(edges[2].path) == before


@contextlib.contextmanager
def raw_server(answer: bytes, drip: float = 0.0, first: bytes = b""):
    """A server on 127.0.0.1 that reads a request and writes `first` at once, then `answer` (a
    byte every `drip` seconds), for any number of connections until the block ends. Yields its
    URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                with contextlib.suppress(OSError):
                    conn.sendall(first)
                for k in range(len(answer)) if drip else [None]:
                    if done.is_set():
                        break
                    with contextlib.suppress(OSError):
                        conn.sendall(answer if k is None else answer[k : k + 1])
                    time.sleep(drip)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        done.set()
        thread.join(5)
        listener.close()


def test_what_a_hostile_coordinator_answers_is_checked_and_printed_harmlessly(
    repo_dir, cli, monkeypatch
):
    """An answer to an update that does not acknowledge it (another CID) records nothing as
    sent; a refusal's escape sequences reach the terminal escaped; a redirect is not followed;
    an answer that trickles in is cut off after the whole request's time; a status line that is
    not HTTP is one line too."""
    from tests.conftest import state

    with Repository.open(repo_dir) as repo:
        synced = repo.head_commit()
        key = format_key(repo.identity().public_key)
    commit_z(repo_dir, vec(c0=1.0), "work")

    def follow(url: str) -> dict:
        with Repository.open(repo_dir) as repo:
            edge.save_state(repo, edge.EdgeState(url, key, "general", str(synced)))
        return state(repo_dir)

    with answering({"round": 3, "cid": str(CID.for_block(b"another"))}) as url:
        before = follow(url)
        err = cli.fails("hive", "submit").stderr
        assert "not acknowledged, nothing recorded as sent" in err and state(repo_dir) == before
    evil = json.dumps({"error": "no\x1b[2J\x1b]0;PWNED\x07\r\nsubmitted update X"}).encode()
    refusal = b"HTTP/1.1 403 Forbidden\r\nContent-Length: %d\r\n\r\n" % len(evil) + evil
    with raw_server(refusal) as url:
        follow(url)
        err = cli.fails("hive", "sync").stderr
        assert "no\\x1b[2J\\x1b]0;PWNED\\x07\\r\\nsubmitted update X" in err
        assert "\x1b" not in err and err.count("\n") == 1
    moved = b"HTTP/1.1 302 Found\r\nLocation: ftp://127.0.0.1/x\r\nContent-Length: 2\r\n\r\n{}"
    with raw_server(moved) as url:
        follow(url)
        assert "answered HTTP 302, not 200" in cli.fails("hive", "sync").stderr
    with raw_server(b"SMTP ready\r\n\r\n") as url:
        follow(url)
        err = cli.fails("hive", "sync").stderr
        assert err.startswith("error: cannot reach the hive coordinator") and err.count("\n") == 1
    monkeypatch.setattr(edge, "ANSWER_SECONDS", 1.0)
    for close in (b"", b"Connection: close\r\n"):  # closing: http.client hands the socket on
        head = b"HTTP/1.1 200 OK\r\n" + close + b"Content-Length: 100\r\n\r\n"
        with raw_server(b" " * 100, drip=0.05, first=head) as url:  # the body: 5 s, a byte a time
            follow(url)
            started = time.monotonic()
            err = cli.fails("hive", "sync").stderr
            assert "no whole answer within 1 s" in err and time.monotonic() - started < 3


def one_update_taken(hive) -> tuple[Edge, Edge]:
    """The hub's coordinator closing a round per update, and the first edge's work (c0 = 1)
    taken in: the hive's head has it. (hub, edge)"""
    hub, edges, start = hive
    server = start("--round-updates", "1")
    e = edges[0]
    e("hive", "join", server.url)
    commit_z(e.path, vec(c0=1.0), "work")
    e("hive", "submit")
    return hub, e


def test_a_second_submission_before_a_sync_sends_only_what_is_new(hive):
    _, e = one_update_taken(hive)
    commit_z(e.path, vec(c0=1.5), "more work")
    assert "unsubmitted work" in e("hive", "status").stdout
    e("hive", "submit")  # without a sync: 0.5 more, not 1.5 again
    e("hive", "sync")
    assert e.z()[0] == pytest.approx(1.5, abs=0.02)


def test_basin_key_remove_beside_a_running_coordinator_stops_the_signer(hive):
    hub, e = one_update_taken(hive)
    hub("key", "remove", e.path.name)  # the operator, while the coordinator runs
    commit_z(e.path, vec(c0=2.0), "more work")
    result = e("hive", "submit", ok=False)
    assert result.exit_code == 1 and "HTTP 403" in result.stderr and "not trusted" in result.stderr
    hub("key", "add", e.key, "--name", e.path.name)  # and trusted again: no restart either
    assert "submitted update" in e("hive", "submit").output


def test_a_signer_against_its_cohort_is_quarantined_and_released_over_http(hive):
    """e0 and e1 push c0 up, e2 pushes it down, all three in the operator's cohort "neg": after
    two rounds the running coordinator quarantines e2 (403 with the reason), `basin hive
    signers` says so, and `basin hive release` beside it lets e2 in again."""
    hub, edges, start = hive
    for e in edges:
        hub("key", "add", e.key, "--name", e.path.name, "--cohort", "neg")
    server = start("--round-updates", "3", "--quarantine-after", "2")
    pushes = [vec(c0=1.0, c1=0.3), vec(c0=1.0, c2=0.3), vec(c0=-1.0)]
    for e in edges:
        e("hive", "join", server.url)
    for round_ in range(2):
        for e, push in zip(edges, pushes, strict=True):
            commit_z(e.path, [a + b for a, b in zip(e.z(), push, strict=True)], f"round {round_}")
            e("hive", "submit")
        time.sleep(0.5)
        for e in edges:
            e("hive", "sync")
    e2 = edges[2]
    commit_z(e2.path, [a + b for a, b in zip(e2.z(), pushes[2], strict=True)], "more")
    result = e2("hive", "submit", ok=False)
    assert result.exit_code == 1 and "HTTP 403" in result.stderr
    assert (
        "is quarantined since round 2: its updates point against every other signer of "
        "cohort neg" in result.stderr
    )
    status = json.loads(urllib.request.urlopen(f"{server.url}/status").read())
    assert status["quarantined"] == 1 and status["round"] == 2
    assert "refused; 1 signer quarantined" in e2("hive", "status").stdout
    row = next(
        line for line in hub("hive", "signers").output.splitlines() if line.startswith("e2 ")
    )
    assert row.split()[1] == "neg" and row.endswith("since round 2")
    assert hub("hive", "release", "e2").output.startswith("released e2 (z6Mk")
    assert "submitted update" in e2("hive", "submit").output  # no restart


def test_nothing_to_submit_is_refused_and_a_lost_state_is_no_replay(hive):
    hub, edges, start = hive
    server = start("--round-updates", "1")
    e = edges[0]
    e("hive", "join", server.url)
    with e:
        refused = e.cli.fails("hive", "submit").stderr
    assert "nothing to submit" in refused and "0 updates sent" in e("hive", "status").stdout
    commit_z(e.path, vec(c0=1.0), "work")
    e("hive", "submit")  # the round closes
    assert e("hive", "sync").stdout.startswith("reset")
    (e.path / ".basin" / "hive.json").unlink()  # the hive state lost: join again from scratch
    e("hive", "join", server.url)
    commit_z(e.path, vec(c0=2.0), "more work")
    assert "submitted update" in e("hive", "submit").stdout  # a later sequence number: taken


def raw_exchange(port: int, data: bytes, wait: float = 10.0) -> tuple[bytes, bool]:
    """Send raw bytes on a fresh connection; what came back, and whether the server closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
    return out, True


def test_abusive_requests_get_a_status_and_let_go_of_their_connection(hive):
    hub, edges, start = hive
    server = start("--body-timeout", "1")
    status = json.loads(urllib.request.urlopen(f"{server.url}/status").read())
    assert (status["taken"], status["refused"], status["pending"]) == (0, 0, 0)  # fresh: zeros
    # a body that stops halfway: 408 after the body timeout, and the connection is closed
    started = time.monotonic()
    head = b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n"
    out, closed = raw_exchange(server.port, head + b"\xa1" * 10)
    assert out.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in out and closed
    assert time.monotonic() - started < 8
    # a chunked body with no length: refused once past the limit, not read to its end
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    chunked = b"POST /update HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    out, _ = raw_exchange(server.port, chunked + chunk * 4 + b"0\r\n\r\n", wait=3)
    assert out.startswith(b"HTTP/1.1 413") and b"over the" in out
    # a client gone mid-body, a huge declared length, another method: the server goes on
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(head + b"\xa1")
    huge = b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n"
    assert raw_exchange(server.port, huge, wait=3)[0].startswith(b"HTTP/1.1 413")
    past = huge.replace(b"999999999999", b"99999999999999999999")  # past 2^64: unreadable
    out = raw_exchange(server.port, past, wait=3)[0]
    assert out.startswith(b"HTTP/1.1 400") and b"not an HTTP request the coordinator" in out
    put = b"PUT /update HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert raw_exchange(server.port, put)[0].startswith(b"HTTP/1.1 405")
    # what the HTTP parser cannot read: 400 with a JSON reason like every refusal, closed
    for junk in (b"NOT HTTP AT ALL\r\n\r\n", b"GET /head HTTP/1.1\r\nBad Header\r\n\r\n"):
        out, closed = raw_exchange(server.port, junk)
        assert out.startswith(b"HTTP/1.1 400") and b"application/json" in out and closed
        error = json.loads(out.split(b"\r\n\r\n", 1)[1])["error"]
        assert error.startswith("not an HTTP request the coordinator can read: ")
    # a malformed CID is the client's error (400); a well-formed one not held is 404
    for cid, code in (("xyz", 400), (str(CID.for_block(b"\xa0")), 404)):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{server.url}/block/{cid}")
        assert caught.value.code == code and "error" in json.loads(caught.value.read())
    status = json.loads(urllib.request.urlopen(f"{server.url}/status").read())
    assert (status["taken"], status["refused"], status["pending"]) == (0, 0, 0)
    assert server.proc.poll() is None


def test_connections_that_send_nothing_are_closed_and_their_number_bounded(hive):
    """A connection that sends nothing, or trickles its headers, is closed once the header
    timeout has passed (uvicorn alone keeps it open forever); past --max-connections a new one
    is answered 503 with a one-line reason; other paths and methods are JSON refusals too."""
    hub, edges, start = hive
    server = start("--header-timeout", "1", "--max-connections", "3")
    started = time.monotonic()
    assert raw_exchange(server.port, b"", wait=8) == (b"", True)  # silent: closed
    with socket.create_connection(("127.0.0.1", server.port), timeout=8) as s:
        closed = False
        for byte in b"GET /head HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                s.sendall(bytes([byte]))
                time.sleep(0.1)
            except OSError:  # reset: the server closed it
                closed = True
                break
        closed = closed or s.recv(100) == b""
    assert closed and time.monotonic() - started < 10
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    for s in held:  # each with an update on its way: the body timeout (30 s) governs them
        s.sendall(b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\n\xa1")
    try:
        out, closed = raw_exchange(server.port, b"", wait=5)
        assert out.startswith(b"HTTP/1.1 503") and closed
        assert json.loads(out.split(b"\r\n\r\n", 1)[1]) == {
            "error": "the coordinator has 3 connections open: retry"
        }
    finally:
        for s in held:
            s.close()
    for method, path, code, words in [
        ("GET", "/nope", 404, "nothing is served at /nope"),
        ("GET", "/head/", 404, "nothing is served at /head/"),
        ("HEAD", "/history/x", 405, None),  # no page read for a HEAD (its body is not sent)
        ("DELETE", "/head", 405, "DELETE is not served on /head"),
    ]:
        request = urllib.request.Request(f"{server.url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request)
        assert caught.value.code == code
        assert words is None or json.loads(caught.value.read()) == {"error": words}
    assert json.loads(urllib.request.urlopen(f"{server.url}/status").read())["round"] == 0


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


def status_of(server: Server) -> dict:
    return json.loads(urllib.request.urlopen(f"{server.url}/status", timeout=10).read())


def wait_for(check, what: str, seconds: float = 60.0):
    """check()'s first true answer, polled until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {seconds:.0f} s")


def test_rule_optimizer_and_outlier_options_shape_the_round(hive):
    """trimmed_mean with trim 0.4, the average's lr 0.5 and c 0.5: of 1, 2 and 6 on c0, the 6
    is refused as an outlier, and (1 + 2) / 2 × 0.5 = 0.75 is what the round adds."""
    hub, edges, start = hive
    server = start(
        *("--round-updates", "3", "--rule", "trimmed_mean", "--rule-option", "trim=0.4"),
        *("--optimizer", "average", "--optimizer-option", "lr=0.5", "--outlier-c", "0.5"),
    )
    for e, value in zip(edges, (1.0, 2.0, 6.0), strict=True):
        e("hive", "join", server.url)
        commit_z(e.path, vec(c0=value), "work")
        e("hive", "submit")
    status = wait_for(lambda: (s := status_of(server))["round"] == 1 and s, "round closed")
    assert status["taken"] == 2 and status["refused"] == 1
    assert status["published"] is None  # nothing to publish to
    edges[0]("hive", "sync")
    assert edges[0].z()[0] == pytest.approx(0.75, abs=0.02)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rule", "trimmed_mean", "--rule-option", "trim=0.7"], "trim fraction 0.7"),
        (["--rule", "trimmed_mean", "--rule-option", "trim"], "is not KEY=NUMBER"),
        (["--rule", "centered_clip", "--rule-option", "iterations=2.5"], "iterations 2.5"),
        (["--rule-option", "iterations=2"], "rule sender_mean takes no option 'iterations'"),
        (["--rule", "median", "--rule-option", "trim=0.1"], "takes no option 'trim'"),
        (["--optimizer-option", "lr=fast"], "is not KEY=NUMBER"),
        (["--optimizer", "nesterov", "--optimizer-option", "momentum=1.5"], "momentum 1.5"),
        (["--optimizer-option", "beta1=0.9"], "no hyperparameter 'beta1'"),
        (["--outlier-c", "-1"], "outlier factor c -1"),
        (["--outlier-c", "nan"], "outlier factor c nan"),
        (["--rule", "vote"], "unknown aggregation rule 'vote'"),
        (["--publish", "nowhere"], "no remote named 'nowhere'"),
        (["--branch", "nowhere"], "no branch 'nowhere' to coordinate"),
    ],
)
def test_bad_serve_options_are_one_line_and_start_nothing(repo_dir, cli, args, message):
    from tests.conftest import state

    before = state(repo_dir)
    result = cli.fails("hive", "serve", "--listen", f"127.0.0.1:{free_port()}", *args)
    assert result.exit_code == 1 and message in result.stderr
    assert state(repo_dir) == before  # no journal, no ref, no config change


def test_one_coordinator_per_repository_and_address_and_ctrl_c_is_130(hive):
    hub, edges, start = hive
    server = start()
    with hub:
        second = hub.cli.fails("hive", "serve", "--listen", f"127.0.0.1:{free_port()}").stderr
    assert f"a hive coordinator (process {server.proc.pid}) runs on this repository" in second
    with hub:  # a replica would move the same branch: refused before it asks any node
        replica = hub.cli.fails("hive", "replica", "--node", "/ip4/127.0.0.1/tcp/9").stderr
    assert "runs on this repository already: one coordinator or replica" in replica
    other = edges[0]
    with other:  # another repository, the first one's address
        taken = other.cli.fails("hive", "serve", "--listen", f"127.0.0.1:{server.port}").stderr
    assert f"cannot listen on 127.0.0.1:{server.port}: Address already in use" in taken
    assert not (other.path / ".basin" / "hive.db").exists()  # refused before it started
    server.proc.send_signal(signal.SIGINT)  # the test's own process: stopped by its pid
    assert server.proc.wait(timeout=30) == 130
    assert "Traceback" not in server.proc.stderr.read()
    start()  # the lock went with the process


def test_a_failing_publication_is_logged_and_never_stops_the_rounds(hive):
    """A remote whose node is down: the push fails (one line on stderr and in /status), the
    coordinator goes on closing rounds, and tries again after the next one."""
    hub, edges, start = hive
    hub("remote", "add", "down", f"/ip4/127.0.0.1/tcp/{free_port()}")
    server = start("--round-updates", "1", "--publish", "down")
    first = wait_for(lambda: status_of(server)["published"]["error"], "failed publication")
    assert "cannot reach the IPFS node" in first
    for k, e in enumerate(edges[:2]):
        e("hive", "join", server.url)
        commit_z(e.path, vec(c0=2.0 + k), "work")
        e("hive", "submit")
        wait_for(lambda k=k: status_of(server)["round"] == k + 1, f"round {k}")
    status = status_of(server)
    assert status["published"]["head"] is None and status["published"]["remote"] == "down"
    server.kill()
    failures = [ln for ln in server.proc.stderr.read().splitlines() if "publishing" in ln]
    assert len(failures) >= 2 and all("failed: cannot reach" in ln for ln in failures)


def test_the_coordinator_publishes_each_new_head_to_ipfs(hive, tmp_path, ipfs_node):
    """--publish origin: after the round closes, a clone of the IPNS name (a new repository,
    through the node) has the round's head on its branch."""
    hub, edges, start = hive
    hub("remote", "add", "origin", ipfs_node.api)
    server = start("--round-updates", "2", "--rule", "mean", "--publish", "origin")
    genesis = status_of(server)["head"]
    wait_for(lambda: status_of(server)["published"]["head"] == genesis, "the first head pushed")
    for k, e in enumerate(edges[:2]):
        e("hive", "join", server.url)
        commit_z(e.path, vec(**{f"c{k}": 1.0}), "work")
        e("hive", "submit")
    status = wait_for(
        lambda: (
            (s := status_of(server))["round"] == 1 and s["published"]["head"] == s["head"] and s
        ),
        "the round's head published",
    )
    assert status["head"] != genesis and status["published"]["error"] is None
    reader = Edge(tmp_path, "reader", edges[0].monkeypatch)
    copy = tmp_path / "copy"
    reader("clone", status["published"]["name"], str(copy), "--node", ipfs_node.api)
    with Repository.open(copy) as repo:
        assert str(repo.branch_commit("general")) == status["head"]


def test_the_coordinators_connections_send_without_waiting_for_acks():
    """`listening` makes a socket whose connections asyncio sets TCP_NODELAY on (it does so only
    for sockets that say IPPROTO_TCP; `socket.create_server` says 0): with Nagle's algorithm on,
    each answer waited for the client's delayed ACK, 44 ms a request on one connection."""
    import asyncio
    import socket as sockets

    from basinvcs.hive.server import listening

    sock = listening("127.0.0.1", 0)
    seen: list[int] = []

    class Probe(asyncio.Protocol):
        def connection_made(self, transport):
            raw = transport.get_extra_info("socket")
            seen.append(raw.getsockopt(sockets.IPPROTO_TCP, sockets.TCP_NODELAY))
            transport.close()

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0


def test_a_mix_of_attacks_in_parallel_with_honest_work_takes_in_only_the_honest(hive):
    """Three honest signers and one ×100 signer send a round at a time while eight threads send
    random bytes, bit-flipped and forged copies of the honest updates, an untrusted signer's,
    another chart's and, after each round, replays: every attack gets a 4xx and a one-line
    reason, the honest updates are all taken, the ×100 one refused at the close, and nothing
    else is counted."""
    from concurrent.futures import ThreadPoolExecutor

    from basinvcs.hive.update import Update, encode_change
    from basinvcs.objects import Chart
    from tests.hive.test_coordinator import EDGES

    hub, _, start = hive
    for ident in EDGES[:4]:
        hub("key", "add", format_key(ident.public_key), "--name", ident.name)
    server = start("--round-updates", "4", "--rule", "mean", "--optimizer", "average")

    def signed(ident, delta, head, round_, seq, author=None, chart=None) -> bytes:
        record = Update(
            chart=chart or Chart(seed=7, dim=len(delta)),
            parent=CID.parse(head),
            round=round_,
            seq=seq,
            change=encode_change(delta),
            samples=10,
            author=author or ident.public_key,
        )
        return record.signed(ident.sign).encode()

    rng = __import__("random").Random(5)
    refusals: list[tuple[int, str]] = []
    for r in range(3):
        status = status_of(server)
        head, round_ = status["head"], status["round"]
        honest = [
            signed(EDGES[k], vec(**{f"c{k}": 1.0 + 0.2 * k}), head, round_, r + 1) for k in range(3)
        ]
        attacks = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 600)))]
        for body in honest:
            flipped = bytearray(body)
            flipped[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
            attacks.append(bytes(flipped))
        attacks.append(signed(EDGES[4], vec(c0=-9.0), head, round_, r + 1, EDGES[0].public_key))
        attacks.append(signed(EDGES[4], vec(c0=-9.0), head, round_, r + 1))
        attacks.append(signed(EDGES[0], [1.0] * (DIM + 1), head, round_, r + 1))
        attacks.append(
            signed(EDGES[1], vec(c1=-1.0), head, round_, r + 1, chart=Chart(seed=8, dim=DIM))
        )
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda b: post(f"{server.url}/update", b), attacks * 3))
            taken = list(pool.map(lambda b: post(f"{server.url}/update", b), honest))
        refusals += [(code, answer["error"]) for code, answer in answers]
        assert [code for code, _ in taken] == [202] * 3, taken
        outlier = signed(EDGES[3], vec(c3=100.0), head, round_, r + 1)
        assert post(f"{server.url}/update", outlier)[0] == 202  # refused at the close
        wait_for(lambda r=r: status_of(server)["round"] == r + 1, f"round {r} closed")
        for body in honest:  # replays, once the round is closed
            code, answer = post(f"{server.url}/update", body)
            refusals.append((code, answer["error"]))
    assert all(400 <= code < 500 for code, _ in refusals), sorted(set(refusals))
    assert all(why and "\n" not in why for _, why in refusals)
    assert {code for code, _ in refusals} >= {400, 403, 409, 422}
    status = status_of(server)
    assert (status["round"], status["taken"], status["refused"]) == (3, 9, 3)
    assert status["pending"] == 0 and server.proc.poll() is None
    with Repository.open(hub.path) as repo:
        lines = repo.read_commit(repo.head_commit()).message.splitlines()
    taken_by = {line.split()[2] for line in lines if line.startswith("taken ")}
    assert taken_by == {format_key(ident.public_key) for ident in EDGES[:3]}
    assert sum(line.startswith("refused ") for line in lines) == 1  # the ×100


def test_running_out_of_descriptors_is_one_log_line_now_and_then():
    """asyncio reports every failed accept with a traceback; the server's handler says it once
    per interval with a count, and passes anything else to the loop's own handler."""
    from basinvcs.hive.server import _quiet_accept_errors

    lines, passed = [], []

    class Loop:
        def default_exception_handler(self, context):
            passed.append(context["message"])

    handler = _quiet_accept_errors(lines.append, every=3600)
    for _ in range(1000):
        handler(Loop(), {"message": "socket.accept() out of system resource", "exception": None})
    handler(Loop(), {"message": "something else"})
    assert lines == [
        "cannot accept connections: out of file descriptors (1 attempt since the last such line)"
    ]
    assert passed == ["something else"]


def test_join_and_sync_read_a_long_history_a_page_at_a_time(tmp_path, monkeypatch):
    """A hive of a dozen rounds, served with pages of two commits: join reads it in pages, not
    block by block (a page refused 503 while the server is busy is asked for again), sync reads
    only the rounds since; a page that is not a CAR of the hive's blocks is one line, and nothing
    is joined."""
    from basinvcs.codec.car import car_bytes
    from basinvcs.hive import coordinator as hc
    from basinvcs.hive import pages, server
    from tests.conftest import serving, state
    from tests.hive.test_coordinator import EDGES, trusting, update

    hub = tmp_path / "hub"
    porcelain.init(hub, dim=DIM, seed=7, name="hub").close()
    c = hc.Coordinator(Repository.open(trusting(hub, EDGES[:1])), hc.Settings(round_updates=1))
    asked: list[str] = []
    request = edge._request
    monkeypatch.setattr(
        edge, "_request", lambda url, data=None: (asked.append(url), request(url, data))[1]
    )
    mine = tmp_path / "mine"
    porcelain.init(mine, dim=DIM, seed=7, name="mine").close()
    try:
        for r in range(12):
            c.submit(update(c, EDGES[0], vec(c0=float(r + 1)), seq=r + 1))
        top = c.repo.read_commit(c.head())
        one = len(c.repo.get_block(c.head())) + len(c.repo.get_block(top.basin))
        monkeypatch.setattr(pages, "HISTORY_PAGE", 2 * one + 10)  # two rounds' commits and packets
        read, busy = server.Pages.read, [2]

        async def busy_at_first(self, text, have):  # the first two asks find the server busy
            if busy[0]:
                busy[0] -= 1
                raise hc.Refused(503, "pages of history are being read for others: retry")
            return await read(self, text, have)

        monkeypatch.setattr(server.Pages, "read", busy_at_first)
        with serving(c) as url, Repository.open(mine) as repo:
            edge.join(repo, url)
            assert repo.head_commit() == c.head() and len(list(repo.walk_blocks([c.head()]))) == 13
            first = f"{url}/history/{c.head()}"
            assert asked.count(first) == 3 and not any("/block/" in u for u in asked)
            distinct = list(dict.fromkeys(u for u in asked if "/history/" in u))
            assert 6 <= len(distinct) <= 8
            for r in range(12, 15):
                c.submit(update(c, EDGES[0], vec(c0=float(r + 1)), seq=r + 1))
            asked.clear()  # three rounds behind: a few blocks, one by one
            assert edge.sync(repo).kind == "fast-forward" and repo.head_commit() == c.head()
            assert sum("/block/" in u for u in asked) == 6 and not any(
                "/history/" in u for u in asked
            )
            synced = c.head()
            for r in range(15, 20):
                c.submit(update(c, EDGES[0], vec(c0=float(r + 1)), seq=r + 1))
            monkeypatch.setattr(edge, "PAGED_FROM", 5)  # five rounds behind: pages from here
            read_page, served = pages.page, []

            def page(repo, text, have=None):  # what reached the server, past the HTTP layer
                served.append((text, have))
                return read_page(repo, text, have)

            monkeypatch.setattr(pages, "page", page)
            asked.clear()
            assert edge.sync(repo).kind == "fast-forward" and repo.head_commit() == c.head()
            distinct = list(dict.fromkeys(u for u in asked if "/history/" in u))
            assert distinct[0] == f"{url}/history/{c.head()}?have={synced}" and len(distinct) == 3
            assert served[0] == (str(c.head()), str(synced)) and not any(
                "/block/" in u for u in asked
            )
            # a server busy through every try: the next PAGE_BACKOFF blocks one by one, then pages
            monkeypatch.setattr(edge, "PAGE_TRIES", 2)
            monkeypatch.setattr(edge, "PAGE_BACKOFF", 3)
            busy[0] = 2
            other = tmp_path / "other"
            porcelain.init(other, dim=DIM, seed=7, name="other").close()
            asked.clear()
            with Repository.open(other) as again:
                edge.join(again, url)
                assert again.head_commit() == c.head()
            kinds = [u.split("/")[3] for u in asked if "/head" not in u][:7]
            assert kinds == ["history"] * 2 + ["block"] * 4 + ["history"]
    finally:
        c.repo.close()
    junk = tmp_path / "junk"
    porcelain.init(junk, dim=DIM, seed=7, name="junk").close()
    before = state(junk)
    head = {"key": format_key(EDGES[0].public_key), "branch": "general", "round": 1}
    with (
        Repository.open(junk) as repo,
        answering(
            {**head, "head": str(CID.for_block(b"x")), "chart": str(repo.config.chart)}
        ) as url,
        pytest.raises(RemoteError) as refused,
    ):
        edge.join(repo, url)  # every GET answers this JSON, /history/ too: not a CAR
    assert "sent a bad page of history" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1 and state(junk) == before
    # a valid page that does not start at what was asked for: no more pages, blocks one by one
    stranger = CID.for_block(b"\xa0")
    with Repository.open(hub) as hub_repo:
        top = {**head, "head": str(hub_repo.head_commit()), "chart": str(hub_repo.config.chart)}
        top["key"] = format_key(hub_repo.identity().public_key)
        wrong = car_bytes([stranger], [(stranger, b"\xa0")])
        asked.clear()
        with answering(top, blocks=hub_repo, history=wrong) as url, Repository.open(junk) as repo:
            edge.join(repo, url)
            assert repo.head_commit() == hub_repo.head_commit()
    assert sum("/history/" in u for u in asked) == 1 and sum("/block/" in u for u in asked) > 20


def test_a_shallow_join_takes_the_head_alone_and_syncs_and_merges_from_there(tmp_path):
    """`join --depth N`: the head and the N-1 rounds below it, block by block, and nothing
    older; `verify` passes and counts the commit held without its parents; a join without a
    depth then takes the rest; `sync` takes the rounds since and merges local work on top; push
    and export are refused in one line and change nothing (a receiver would get commits whose
    parents nobody sent), and a commit below the start is said to be so."""
    from basinvcs import carfile, remote
    from basinvcs.errors import BasinError, RepositoryError
    from basinvcs.hive import coordinator as hc
    from basinvcs.hive import replica
    from tests.conftest import serving, state
    from tests.hive.test_coordinator import EDGES, trusting, update

    hub = tmp_path / "hub"
    porcelain.init(hub, dim=DIM, seed=7, name="hub").close()
    c = hc.Coordinator(Repository.open(trusting(hub, EDGES[:1])), hc.Settings(round_updates=1))
    try:
        for r in range(12):
            c.submit(update(c, EDGES[0], vec(c0=float(r + 1)), seq=r + 1))
        with serving(c) as url:
            for depth in (1, 5):
                mine = tmp_path / f"depth{depth}"
                porcelain.init(mine, dim=DIM, seed=7, name="mine").close()
                with Repository.open(mine) as repo:
                    edge.join(repo, url, depth=depth)
                    held = [cid for cid, _ in repo.walk_blocks([repo.head_commit()])]
                    assert held[0] == c.head() and len(held) == depth
                    assert repo.shallow() == {held[-1]}
                    report = porcelain.verify(repo)
                    assert report.ok and report.shallow == 1 and report.commits == depth
                if depth == 1:  # joined again without a depth: the whole history, not shallow
                    with Repository.open(mine) as repo:
                        edge.join(repo, url, force=True)
                        assert repo.shallow() == set() and porcelain.verify(repo).commits == 13
                        assert len(list(repo.walk_blocks([repo.head_commit()]))) == 13
            for r in range(12, 15):
                c.submit(update(c, EDGES[0], vec(c0=float(r + 1)), seq=r + 1))
            with Repository.open(mine) as repo:
                z = list(repo.read_basin(repo.read_commit(repo.head_commit()).basin).z)
            z[5] += 1.0
            commit_z(mine, z, "local work")  # not submitted: merged on the head
            with Repository.open(mine) as repo:
                assert edge.sync(repo).kind == "merge"
                first = [cid for cid, _ in repo.walk_blocks([repo.head_commit()])]
                assert c.head() in first and len(first) == 5 + 3 + 2  # rounds, work, merge
                assert porcelain.verify(repo).ok and len(repo.shallow()) == 1
                remote.add_remote(repo, "origin", "/ip4/127.0.0.1/tcp/1")
            before = state(mine)
            with Repository.open(mine) as repo:
                for refused in (
                    lambda: remote.push(repo, "origin"),
                    lambda: carfile.export_car(repo, "general", tmp_path / "out.car"),
                ):
                    with pytest.raises(RepositoryError) as why:
                        refused()
                    assert "holds the history only from commit" in str(why.value)
                with pytest.raises(BasinError, match="depth 0: must be at least 1"):
                    edge.join(repo, url, force=True, depth=0)
                with pytest.raises(RepositoryError, match="replicas need the whole history"):
                    replica.hive_genesis(repo, repo.head_commit())
                below = repo.parents(min(repo.shallow()))[0]
                with pytest.raises(BasinError, match="holds the history only from where it was"):
                    repo.read_commit(CID.parse(below))
            assert state(mine) == before and not (tmp_path / "out.car").exists()
    finally:
        c.repo.close()


def test_basin_hive_join_depth_and_verify_say_what_is_held(hive):
    hub, edges, start = hive
    server = start("--round-updates", "1")
    e = edges[0]
    e("hive", "join", server.url)
    for k in range(3):  # three rounds
        commit_z(e.path, vec(c0=float(k + 1)), f"round {k}")
        e("hive", "submit")
        e("hive", "sync")
    other = edges[1]
    assert "joined" in other("hive", "join", "--depth", "2", server.url).output
    assert len(other("log", "--oneline").output.splitlines()) == 2
    assert other("log", "--graph", "--oneline").output.count("*") == 2
    assert "2 commits and 2 basin packets, 1 held without their parents (shallow)" in (
        other("verify").output
    )
    err = other("export", "general", "-o", "out.car", ok=False)
    assert err.exit_code == 1 and "holds the history only from commit" in err.stderr
    assert len(err.stderr.splitlines()) == 1 and not (other.path / "out.car").exists()
    assert other("hive", "join", "--depth", "0", server.url, ok=False).exit_code == 2


def test_an_update_whose_answer_was_lost_counts_once(hive, monkeypatch):
    """The update went out and the connection dropped before the 202: it is recorded as sent
    (sending its change again would count it twice if it arrived), `sync` resets once a head
    lists it taken; one that never arrived is decided only once the last round that could take
    it (its parent must be a head of the last K rounds; K = 3 here) has closed without it: the
    work is merged back, and the next submission sends it. A coordinator not reached at all
    records nothing."""
    hub, edges, start = hive
    server = start(
        "--round-updates", "2", "--rule", "mean", "--optimizer", "average", "--freshness", "3"
    )
    e0, e1, e2 = edges
    for e in edges:
        e("hive", "join", server.url)
    real = edge._request

    def answer_lost(url, data=None, deliver=True):
        if data is not None:
            if deliver:
                real(url, data)
            raise edge.AnswerLost(f"cannot reach the hive coordinator at {url}: reset")
        return real(url, data)

    commit_z(e0.path, vec(c0=1.0), "work")
    monkeypatch.setattr(edge, "_request", answer_lost)
    err = e0("hive", "submit", ok=False).stderr
    assert "went out and no answer came back: recorded as sent" in err
    monkeypatch.setattr(edge, "_request", real)
    assert e0("hive", "sync").output.startswith("waiting: ")
    commit_z(e1.path, vec(c1=1.0), "e1's work")
    e1("hive", "submit")  # round 0 closes with both
    assert e0("hive", "sync").output.startswith("reset: ")
    assert e0.z()[:2] == pytest.approx([0.5, 0.5], abs=0.02)  # e0's change once, averaged

    commit_z(e0.path, vec(c0=0.5, c1=0.5, c2=1.0), "more work")
    monkeypatch.setattr(edge, "_request", lambda u, d=None: answer_lost(u, d, deliver=False))
    err = e0("hive", "submit", ok=False).stderr  # it never arrived
    assert "recorded as sent" in err and "by round 3 at the latest" in err  # round 1 + K - 1
    monkeypatch.setattr(edge, "_request", real)
    for k in (1, 2, 3):  # rounds 1 to 3 close without it
        if k == 3:
            assert e0("hive", "sync").output.startswith("waiting: ")  # round 3 could take it
        for e in (e1, e2):
            commit_z(e.path, vec(c1=float(k + 1)), f"round {k}")
            e("hive", "submit")
        for e in (e1, e2):
            e("hive", "sync")
    out = e0("hive", "sync").output
    assert out.startswith("refused: ") and "its answer was lost: it did not arrive" in out
    assert "more work" in e0("log", "--oneline").output  # kept, merged
    assert "submitted update" in e0("hive", "submit").output  # sent now

    def unreachable(url, data=None):  # the head read, then nothing reached for the update
        if data is None:
            return real(url, data)
        raise edge.Unreachable(f"cannot reach the hive coordinator at {url}: refused")

    with Repository.open(e0.path) as repo:
        before = edge.load_state(repo)
    commit_z(e0.path, vec(c0=0.5, c1=0.5, c2=1.0, c3=1.0), "still more")
    monkeypatch.setattr(edge, "_request", unreachable)
    assert "nothing sent, nothing recorded" in e0("hive", "submit", ok=False).stderr
    with Repository.open(e0.path) as repo:
        assert edge.load_state(repo) == before


def test_a_request_that_went_out_without_an_answer_is_told_from_one_that_did_not():
    """AnswerLost only where the request was sent whole (the coordinator may have acted on
    it); a coordinator not reached at all is plain Unreachable."""
    with raw_server(b"") as url, pytest.raises(edge.AnswerLost):  # read, and no answer
        edge._request(f"{url}/update", b"an update")
    with pytest.raises(edge.Unreachable) as refused:
        edge._request(f"http://127.0.0.1:{free_port()}/update", b"an update")
    assert not isinstance(refused.value, edge.AnswerLost)


def test_an_edge_learns_its_fate_from_the_round_record_when_the_message_cannot_hold_it(hive):
    """A round of 202 updates, 201 of them refused at the close (their signers removed while
    it was open): the head's message lists the first ~170 refusals, and e0's, sent after them,
    only in the round record the head links. e0's sync finds it refused there (it used to
    count an unlisted update as taken, and reset its branch past work the hive never took)."""
    from basinvcs.identity import Identity
    from tests.hive.test_coordinator import signed_update

    hub, (e0, e1, e2), start = hive
    many = [Identity(k.to_bytes(4, "big") + bytes(28), f"m{k}") for k in range(1, 201)]
    with Repository.open(hub.path) as repo:
        for ident in many:
            porcelain.trust(repo, format_key(ident.public_key), ident.name)
    server = start("--round-updates", "300", "--round-seconds", "600", "--rule", "mean")
    for e in (e0, e1):
        e("hive", "join", server.url)
    doc = status_of(server)
    for ident in many:
        data = signed_update(ident, CID.parse(doc["head"]), vec(c3=1.0), samples=1)
        assert post(f"{server.url}/update", data)[0] == 202
    commit_z(e0.path, vec(c0=1.0), "e0's work")
    cid = e0("hive", "submit").output.split()[2]
    commit_z(e1.path, vec(c1=1.0), "e1's work")
    e1("hive", "submit")
    with Repository.open(hub.path) as repo:  # the round now fills with e1's alone
        for name in [i.name for i in many] + ["e0", "e2"]:
            porcelain.untrust(repo, name)
    status = wait_for(lambda: (s := status_of(server))["round"] == 1 and s, "the round closed")
    with Repository.open(hub.path) as repo:
        head = repo.read_commit(CID.parse(status["head"]))
        assert cid not in head.message and head.record is not None
        assert len(repo.read_record(head.record).refused) == 201
    shown = hub("show", status["head"]).output
    assert f"record {head.record} (1 updates taken, 201 refused: basin show" in shown
    listed = hub("show", str(head.record)).output.splitlines()
    assert listed[0] == f"round record {head.record}: 1 updates taken, 201 refused"
    assert f"refused {cid} signer no longer trusted" in listed and len(listed) == 203
    out = e0("hive", "sync").output
    assert out.startswith("refused: ") and f"update {cid} refused: " in out
    assert "e0's work" in e0("log", "--oneline").output  # kept, merged with the head
    assert "1 round record" in e0("verify").output
    assert e1("hive", "sync").output.startswith("reset: ")
    e2("hive", "join", server.url)  # by pages of history: the record comes in one too
    assert "1 round record" in e2("verify").output


def test_pipelined_requests_are_each_answered(hive):
    """Requests sent back to back on one connection, before any answer (HTTP/1.1 pipelining):
    each is taken and answered, in order."""
    from basinvcs.identity import Identity
    from tests.hive.test_coordinator import signed_update

    hub, _, start = hive
    idents = [Identity(bytes([k]) * 32, f"p{k}") for k in (1, 2)]
    with Repository.open(hub.path) as repo:
        for ident in idents:
            porcelain.trust(repo, format_key(ident.public_key), ident.name)
    server = start("--round-updates", "10")
    head = CID.parse(json.loads(urllib.request.urlopen(f"{server.url}/head").read())["head"])
    requests = b""
    for ident in idents:
        body = signed_update(ident, head, vec(c0=1.0))
        requests += b"POST /update HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        requests += body
    requests += b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out, closed = raw_exchange(server.port, requests)
    assert out.count(b"HTTP/1.1 202") == 2 and out.count(b"HTTP/1.1 200") == 1 and closed
    assert json.loads(out.rsplit(b"\r\n\r\n", 1)[1])["pending"] == 2


def test_oversized_headers_and_upgrades_are_refused_in_one_line(hive):
    """A request line and headers past 16 KiB are 431 at once (the parser would buffer them
    without a bound: 316 MiB in 9 s from four connections), however they are split; an HTTP
    upgrade (curl --http2 on http://) is a 400 that names it, with nothing journaled (the
    parser stops at it and the body would never reach the update's checks)."""
    hub, _, start = hive
    server = start()
    for request in (
        b"POST /update HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000,
        b"GET /" + b"a" * 40_000,
        b"GET /head HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 3000,
    ):
        out, closed = raw_exchange(server.port, request, wait=5)
        assert out.startswith(b"HTTP/1.1 431") and b"over 16,384 bytes" in out and closed
    upgrade = (
        b"POST /update HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 3\r\n\r\nabc"
    )
    out, closed = raw_exchange(server.port, upgrade, wait=5)
    assert out.startswith(b"HTTP/1.1 400") and b"upgrades" in out and closed
    websocket = upgrade.replace(
        b"Upgrade: h2c", b"Upgrade: websocket"
    )  # none, whatever is installed
    out, closed = raw_exchange(server.port, websocket, wait=5)
    assert out.startswith(b"HTTP/1.1 400") and b"upgrades" in out and closed
    big_but_fine = b"GET /head HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n"
    assert raw_exchange(server.port, big_but_fine, wait=2)[0].startswith(b"HTTP/1.1 200")
    assert status_of(server)["pending"] == 0


def test_updates_are_decoded_in_two_processes_and_a_dead_ones_share_here(repo_dir):
    """The server's intake decodes a batch in two processes at once (`Worker._decoded`), in
    arrival order; a process that dies is dropped and its share of the batch decoded in the
    coordinator's thread, every update answered as it would have been."""
    import asyncio

    from basinvcs.hive import server
    from basinvcs.hive.coordinator import Refused
    from tests.hive.test_coordinator import EDGES, coordinator, trusting, update

    c = coordinator(trusting(repo_dir, EDGES[:4]), round_updates=4)
    worker = server.Worker(c)

    async def main() -> list:
        worker.start()
        assert len(worker.decoders) == server.DECODERS == 2
        first = [update(c, e, vec(c0=1.0 + k)) for k, e in enumerate(EDGES[:2])]
        answers = await asyncio.gather(*(worker.submit(b) for b in first))
        dead = worker.decoders[0]
        dead.process.kill()
        dead.process.wait()
        rest = [update(c, e, vec(c1=1.0)) for e in EDGES[2:4]] + [b"\xa1\x61a\x01"]
        answers += await asyncio.gather(*(worker.submit(b) for b in rest), return_exceptions=True)
        assert dead not in worker.decoders  # its share, the two updates, went in all the same
        return answers

    try:
        answers = asyncio.run(main())
    finally:
        worker.close()
    assert [a["round"] for a in answers[:4]] == [0, 0, 0, 0]
    assert isinstance(answers[4], Refused) and answers[4].status == 400
    assert "not a valid update" in str(answers[4])
    assert c.round == 1 and c.repo.read_commit(c.head()).metrics["taken"] == 4.0
    assert any("a decoding process failed" in line for line in c.messages)
    assert len(worker.decoders) == 1


def test_refused_updates_leave_no_garbage_for_the_cycle_collector(repo_dir):
    """Refusals travel as values, not exceptions raised through futures: a traceback keeps its
    frames and the future in a cycle, and the server's collector, tuned for rounds of live
    objects (`_tune_memory`), frees cycles late: a flood of refused requests grew it by 1.5
    MiB/s. Through the real application (its lifespan: two decoding processes), in process."""
    import asyncio
    import gc

    from basinvcs.hive import server
    from tests.hive.test_coordinator import EDGES, coordinator, trusting, update

    c = coordinator(trusting(repo_dir, EDGES[:4]), round_updates=4)
    app = server.make_app(c)
    taken = update(c, EDGES[0], vec(c0=1.0))

    async def post(body: bytes) -> int:
        sent, inbox = [], [{"type": "http.request", "body": body, "more_body": False}]
        scope = {"type": "http", "method": "POST", "path": "/update", "headers": []}

        async def receive() -> dict:
            return inbox.pop(0) if inbox else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)
        return sent[0]["status"]

    async def main() -> tuple[list[int], int]:
        inbox, outbox = asyncio.Queue(), asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        life = asyncio.create_task(app(scope, inbox.get, outbox.put))
        assert (await outbox.get())["type"] == "lifespan.startup.complete"
        try:
            statuses = [await post(taken)]
            gc.collect()
            gc.disable()
            for k in range(100):
                statuses += [await post(b"\xa1\x61a" + bytes([k % 24])), await post(taken)]
                statuses.append(await post(bytes(100_000)))  # refused before it is read
            garbage = gc.collect()
        finally:
            gc.enable()
            await inbox.put({"type": "lifespan.shutdown"})
            await outbox.get()
            await life
        return statuses, garbage

    statuses, garbage = asyncio.run(main())
    assert statuses[0] == 202 and sorted(set(statuses[1:])) == [400, 409, 413]
    assert garbage < 100  # 300 refusals: about 2,000 when each left its cycle


def test_a_stopped_decoding_process_holds_up_only_its_batch_and_is_replaced(repo_dir, monkeypatch):
    """A decoding process that stops reading (SIGSTOP) while its share of a batch is larger
    than a pipe holds: the server's loop goes on (its pipes are non-blocking), the share is
    decoded in the coordinator's thread after DECODE_TIMEOUT, the process is killed, and
    another takes its place. (Writing to it had blocked the whole server until it woke.)"""
    import asyncio

    from basinvcs.hive import server
    from basinvcs.hive.coordinator import Refused
    from tests.hive.test_coordinator import EDGES, coordinator, trusting, update

    monkeypatch.setattr(server, "DECODE_TIMEOUT", 1.0)
    monkeypatch.setattr(server, "RESTART_SECONDS", 0.0)
    c = coordinator(trusting(repo_dir, EDGES[:4]), round_updates=4)
    worker = server.Worker(c)
    valid = [update(c, e, vec(c0=1.0 + k)) for k, e in enumerate(EDGES[:4])]
    bodies = valid[:2] + [bytes(600)] * 250 + valid[2:]  # shares of 127: over 64 KiB each
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    async def main() -> tuple[list, server.Decoder]:
        worker.start()
        stopped = worker.decoders[0]
        os.kill(stopped.process.pid, signal.SIGSTOP)
        ticker = asyncio.create_task(tick())
        answers = await asyncio.gather(*(worker.submit(b) for b in bodies))
        ticker.cancel()
        await worker.submit(bytes(600))  # the next batch starts another process
        return answers, stopped

    try:
        answers, stopped = asyncio.run(main())
    finally:
        worker.close()
    assert [answers[k]["round"] for k in (0, 1, -2, -1)] == [0, 0, 0, 0]
    refused = answers[2:-2]
    assert all(isinstance(a, Refused) and a.status == 400 for a in refused)
    assert ticks >= 10  # the loop ran all through the second it waited
    assert stopped.process.returncode == -signal.SIGKILL
    assert len(worker.decoders) == 2 and stopped not in worker.decoders
    assert c.round == 1
    assert any("decoding processes started again: 2" in line for line in c.messages)
