"""Push, clone, pull, CAR exchange and discovery through two real, connected js-ipfs daemons.

The flow a new team would run: A pushes to node 1; B clones through node 2 (the blocks travel
node 1 -> node 2 by bitswap), verifies and logs the same history, commits and pushes; A pulls.
Every bad input is refused with one line and leaves the repository as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import DIM, Cli, packet, state

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.codec.car import read_car_bytes
from basinvcs.identity import format_key, load_identity
from basinvcs.ipfs import Node
from basinvcs.repository import Repository

ROOT = Path(__file__).resolve().parent.parent


class Person:
    """Someone with their own identity (BASIN_HOME) working in their own repository."""

    def __init__(self, tmp_path: Path, name: str, monkeypatch) -> None:
        self.name, self.home, self.path = name, tmp_path / f"home-{name}", tmp_path / name
        self.monkeypatch = monkeypatch
        self.cli = Cli()

    def __enter__(self) -> Person:
        self.monkeypatch.setenv("BASIN_HOME", str(self.home))
        if self.path.exists():
            self.monkeypatch.chdir(self.path)
        return self

    def __exit__(self, *exc) -> None:
        pass

    def __call__(self, *args: str, **kw):
        with self:
            return self.cli(*args, **kw)

    def fails(self, *args: str):
        with self:
            return self.cli.fails(*args)

    @property
    def key(self) -> str:
        with self:
            return format_key(load_identity().public_key)

    def log(self, rev: str = "HEAD") -> list[CID]:
        with self, Repository.open(self.path) as repo:
            return [cid for cid, _ in porcelain.log(repo, rev)]

    def state(self):
        return state(self.path)


def _field(output: str, label: str) -> str:
    line = next(ln for ln in output.splitlines() if ln.startswith(label))
    return line[len(label) :].split()[0]


@pytest.fixture
def alice(tmp_path, monkeypatch) -> Person:
    a = Person(tmp_path, "alice", monkeypatch)
    with a:
        porcelain.init(a.path, dim=DIM, seed=7, name="alice").close()
    with a, Repository.open(a.path) as repo:
        porcelain.fork(repo, "general", "math")
        porcelain.commit(repo, packet(1), "math 1")
        porcelain.checkout(repo, "general")
        porcelain.commit(repo, packet(2), "general 1")
    return a


def test_push_clone_commit_push_pull_across_two_nodes(alice, tmp_path, monkeypatch, ipfs_pair):
    node1, node2 = ipfs_pair
    alice("remote", "add", "origin", node1.api)
    out = alice("push").output
    name = _field(out, "IPNS name: ")
    # genesis and one commit, their packets, and the heads record
    assert "pushed general (5 blocks" in out
    heads = _field(alice("push", "origin", "math").output, "heads record: ")  # both branches

    bob = Person(tmp_path, "bob", monkeypatch)
    with bob:  # a subprocess, as a new user would type it
        env = dict(os.environ, BASIN_IPFS_API=node2.api)
        done = subprocess.run(
            [sys.executable, "-m", "basinvcs.cli", "clone", name, str(bob.path)],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=180,
        )
    assert done.returncode == 0, done.stderr
    assert "trusting the heads signer" in done.stdout and alice.key in done.stdout
    assert "2 branch(es)" in done.stdout and "On branch general" in done.stdout
    assert bob.log("general") == alice.log("general")
    assert bob.log("math") == alice.log("math")
    assert "ok" in bob("verify").output.lower()
    assert f"heads record {heads} (seq 2)" in done.stdout

    with bob, Repository.open(bob.path) as repo:
        porcelain.commit(repo, packet(3), "bob's general")
    out = bob("push").output
    bob_name = _field(out, "IPNS name: ")
    assert bob_name != name  # bob publishes under his own repository's key
    assert "(3 blocks" in out  # one commit, its packet, the heads record: the rest was there

    alice("key", "add", bob.key, "--name", "bob")
    alice("remote", "add", "bob", node1.api, "--follow", bob_name)
    out = alice("pull", "bob", "general").output
    assert "Fast-forward" in out
    assert alice.log("general") == bob.log("general")
    assert alice.log("bob/general") == bob.log("general")  # the remote-tracking ref


def test_pull_refuses_untrusted_and_replayed_heads(alice, tmp_path, monkeypatch, ipfs_pair):
    node1, node2 = ipfs_pair
    alice("remote", "add", "origin", node1.api)
    alice("push")
    heads = _field(alice("push").output, "heads record: ")
    bob = Person(tmp_path, "bob", monkeypatch)
    bob("clone", heads, str(bob.path), "--node", node2.api, "--trust", alice.key)
    with bob, Repository.open(bob.path) as repo:
        porcelain.commit(repo, packet(4), "bob 1")
    first = _field(bob("push").output, "heads record: ")
    with bob, Repository.open(bob.path) as repo:
        porcelain.commit(repo, packet(5), "bob 2")
    out = bob("push").output
    bob_name, second = _field(out, "IPNS name: "), _field(out, "heads record: ")

    alice("remote", "add", "bob", node1.api, "--follow", bob_name)
    before = alice.state()
    err = alice.fails("pull", "bob", "general").stderr
    assert "does not trust" in err and bob.key in err
    assert alice.state() == before

    alice("key", "add", bob.key, "--name", "bob")
    alice("pull", "bob", "general")  # seq 2 seen
    alice("remote", "remove", "bob")
    alice("remote", "add", "bob", node1.api, "--follow", first)  # replay the older record
    before = alice.state()
    err = alice.fails("pull", "bob", "general").stderr
    assert "refusing a rollback" in err and "sequence 1" in err
    assert alice.state() == before
    assert second != first


def test_clone_refuses_a_block_whose_bytes_do_not_match(alice, tmp_path, monkeypatch, ipfs_node):
    from ipfsnode import IPFSDaemon

    node1 = IPFSDaemon(tmp_path / "evil", "evil").start()  # its disk is corrupted below: not shared
    try:
        _clone_from_a_corrupted_node(alice, tmp_path, monkeypatch, node1)
    finally:
        node1.stop()


def _clone_from_a_corrupted_node(alice, tmp_path, monkeypatch, node1) -> None:
    alice("remote", "add", "origin", node1.api)
    out = alice("push").output
    heads = _field(out, "heads record: ")
    with alice, Repository.open(alice.path) as repo:
        head = repo.branch_commit("general")
        target = repo.get_block(repo.read_commit(head).basin)
    corrupted = 0
    for path in (node1.repo / "blocks").rglob("*.data"):
        if path.read_bytes() == target:  # the node's own copy of the packet, on its disk
            path.write_bytes(target[:-1] + bytes([target[-1] ^ 1]))
            corrupted += 1
    assert corrupted == 1
    bob = Person(tmp_path, "bob", monkeypatch)
    err = bob.fails("clone", heads, str(bob.path), "--node", node1.api).stderr
    assert "hash" in err.lower()
    assert not bob.path.exists()
    assert not [p for p in tmp_path.iterdir() if ".clone-" in p.name]


def test_a_dead_node_is_one_clear_error_and_changes_nothing(alice, tmp_path, monkeypatch):
    alice("remote", "add", "origin", "/ip4/127.0.0.1/tcp/9")  # discard port: nothing listens
    before = alice.state()
    err = alice.fails("push").stderr
    assert "cannot reach the IPFS node at /ip4/127.0.0.1/tcp/9" in err
    assert alice.state() == before
    alice("remote", "add", "dead", "/ip4/127.0.0.1/tcp/9", "--follow", "k51qzi5uqu5dnothing")
    before = alice.state()
    assert "cannot reach" in alice.fails("pull", "dead", "general").stderr
    assert alice.state() == before
    bob = Person(tmp_path, "bob", monkeypatch)
    assert (
        "cannot reach"
        in bob.fails("clone", "k51x", str(bob.path), "--node", "/ip4/127.0.0.1/tcp/9").stderr
    )
    assert "no IPFS node given" in bob.fails("clone", "k51x", str(bob.path)).stderr
    assert not bob.path.exists()


def test_bad_remote_arguments(alice):
    before = alice.state()
    assert "multiaddr" in alice.fails("remote", "add", "x", "http://localhost:5001").stderr
    assert "bad branch name" in alice.fails("remote", "add", "a b", "/ip4/127.0.0.1/tcp/1").stderr
    assert "no remote named 'nope'" in alice.fails("push", "nope").stderr
    assert alice.state() == before
    alice("remote", "add", "x", "/ip4/127.0.0.1/tcp/1")
    assert "exists already" in alice.fails("remote", "add", "x", "/ip4/127.0.0.1/tcp/2").stderr
    assert "follows no heads" in alice.fails("pull", "x").stderr
    assert (
        "nothing published yet"
        in alice.fails("announce", "--specialization", "m", "--remote", "x").stderr
    )
    assert "x\t/ip4/127.0.0.1/tcp/1" in alice("remote").output


def test_car_files_go_both_ways_with_a_node(alice, tmp_path, ipfs_node):
    node = Node(ipfs_node.api)
    car = tmp_path / "general.car"
    alice("export", "general", "-o", str(car))
    roots, blocks = read_car_bytes(car.read_bytes())
    assert node.dag_import(car.read_bytes()) == roots  # `ipfs dag import` takes our file
    assert roots[0] in node.pinned_roots()
    exported = node.dag_export(roots[0])  # and `ipfs dag export` of it is one we import
    assert sorted(read_car_bytes(exported)[1]) == sorted(blocks)
    back = tmp_path / "from-node.car"
    back.write_bytes(exported)
    alice("import", str(back), "--branch", "from-node")
    assert alice.log("from-node") == alice.log("general")


def test_announce_and_discover(alice, tmp_path, monkeypatch, ipfs_pair):
    node1, node2 = ipfs_pair
    alice("remote", "add", "origin", node1.api)
    name = _field(alice("push").output, "IPNS name: ")
    heard: list = []
    listener = threading.Thread(
        target=lambda: heard.append(
            Cli()("discover", "--specialization", "math", "--node", node2.api, "--wait", "8")
        )
    )
    listener.start()
    alice(
        "announce",
        "--specialization",
        "math",
        "--substrate",
        "tiny",
        "--repeat",
        "6",
        "--interval",
        "1",
    )
    listener.join()
    out = heard[0].output
    assert name in out and "substrate tiny" in out and alice.key in out
    quiet = Cli()("discover", "--specialization", "poetry", "--node", node2.api, "--wait", "1")
    assert "no announcements of poetry" in quiet.output


def test_a_remote_is_bound_to_one_repository_and_never_moves_back(
    alice, tmp_path, monkeypatch, ipfs_node
):
    import json

    bob = Person(tmp_path, "bob", monkeypatch)
    other = Person(tmp_path, "bob-other", monkeypatch)
    other.home = bob.home  # the same signer, a second repository
    for person, seed in ((bob, 6), (other, 7)):
        with person:
            porcelain.init(person.path, dim=DIM, seed=7, name="bob").close()
        with person, Repository.open(person.path) as repo:
            porcelain.commit(repo, packet(seed), f"{person.name} 1")
        person("remote", "add", "origin", ipfs_node.api)
    first = _field(bob("push").output, "heads record: ")
    with bob, Repository.open(bob.path) as repo:
        porcelain.commit(repo, packet(8), "bob 2")
    bob_name = _field(bob("push").output, "IPNS name: ")
    foreign = _field(other("push").output, "heads record: ")  # same signer, newer seq there

    alice("key", "add", bob.key, "--name", "bob")
    alice("remote", "add", "bob", ipfs_node.api, "--follow", bob_name)
    alice("fetch", "bob", "general")
    config = alice.path / ".basin" / "config.json"
    doc = json.loads(config.read_text())
    assert doc["remotes"]["bob"]["bound"].startswith(bob.key + "/")

    # a node that serves the same signer's record of another repository is refused
    doc["remotes"]["bob"]["follow"] = foreign
    config.write_text(json.dumps(doc))
    before = alice.state()
    err = alice.fails("fetch", "bob", "general").stderr
    assert "refusing another repository's record" in err
    assert alice.state() == before

    # a newer record of the right repository that points back in history is refused too
    with bob, Repository.open(bob.path) as repo:
        tip = repo.branch_commit("general")
        back = repo.read_commit(tip).parents[0]
        repo.set_ref("refs/heads/general", str(back), str(tip), "test: rewind")
    bob("push")
    doc["remotes"]["bob"]["follow"] = bob_name
    config.write_text(json.dumps(doc))
    before = alice.state()
    err = alice.fails("fetch", "bob", "general").stderr
    assert "would move refs/remotes/bob/general back" in err and "rollback" in err
    assert alice.state() == before
    assert first


def test_a_round_record_goes_to_the_node_and_comes_back_with_its_commit(
    alice, tmp_path, monkeypatch, ipfs_node
):
    """A hive round's head links its record: push sends it, the node pins and exports the
    history without looking for the updates it names (they are bytes, not links, and no node
    holds them), and a clone through the node gets it back, checked."""
    from basinvcs.objects import Commit, RoundRecord

    update = CID.for_block(b"an update no node holds")
    with alice, Repository.open(alice.path) as repo:
        ident = load_identity()
        parent = repo.head_commit()
        record = repo.write_record(RoundRecord(((update, ident.public_key),), ()))
        basin = repo.read_commit(parent).basin
        commit = Commit(basin, (parent,), ident.public_key, 10**12, "round", record=record)
        head = repo.write_commit(commit.signed(ident.sign))
        repo.set_ref("refs/heads/general", str(head), str(parent), "test")
    alice("remote", "add", "origin", ipfs_node.api)
    name = _field(alice("push").output, "IPNS name: ")
    node = Node(ipfs_node.api)
    _, blocks = read_car_bytes(node.dag_export(head))  # the node walks every link: all held
    assert record in dict(blocks) and update not in dict(blocks)
    bob = Person(tmp_path, "bob", monkeypatch)
    with bob:
        bob.cli("clone", name, str(bob.path), "--node", ipfs_node.api)
    with bob, Repository.open(bob.path) as repo:
        assert repo.read_record(record).taken == ((update, ident.public_key),)
    assert "1 round record" in bob("verify").output
