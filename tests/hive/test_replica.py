"""The hive without a coordinator: replicas that heard the same updates reach the same head CID;
a replica that missed updates or whole rounds catches up by recomputing what others announced."""

from __future__ import annotations

import shutil

import pytest

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.errors import BasinError, BlockNotFound
from basinvcs.hive.replica import Announcement, Replica, hive_genesis, hive_identity
from basinvcs.identity import Identity, format_key
from basinvcs.repository import Repository
from tests.conftest import CHART, vec
from tests.hive.test_coordinator import signed_update

SIGNERS = [Identity(bytes([k]) * 32, f"r{k}") for k in (1, 2, 3)]


class Bus:
    """Pubsub and a shared block store in memory; `drop(sender, receiver, message)` loses some."""

    def __init__(self):
        self.replicas: list[Replica] = []
        self.blocks: dict[CID, bytes] = {}
        self.drop = lambda sender, receiver, message: False
        self.offline: set[int] = set()
        self.said: list[tuple[int, str]] = []  # (replica, line) for each head not adopted
        self.fetched: list[CID] = []  # every block any replica asked for
        self.published = 0  # messages sent on the topic

    def join(self, repo: Repository) -> Replica:
        k = len(self.replicas)

        def publish(message: bytes) -> None:
            self.published += 1
            for j, other in enumerate(self.replicas):
                if j == k or j in self.offline or self.drop(k, j, message):
                    continue
                if why := other.hear(message):
                    self.said.append((j, why))

        def fetch(cid: CID) -> bytes:
            self.fetched.append(cid)
            if cid not in self.blocks:
                raise BlockNotFound(f"block {cid} not found")
            return self.blocks[cid]

        def store(data: bytes) -> None:
            self.blocks[CID.for_block(data)] = data

        replica = Replica(repo, "general", publish, store, fetch, SIGNERS[k], rule="mean")
        self.replicas.append(replica)
        return replica


@pytest.fixture
def replicas(repo_dir, tmp_path):
    with Repository.open(repo_dir) as repo:
        for ident in SIGNERS:
            porcelain.trust(repo, format_key(ident.public_key), ident.name)
    paths = [repo_dir]
    for k in (1, 2):
        shutil.copytree(repo_dir, tmp_path / f"copy{k}")
        paths.append(tmp_path / f"copy{k}")
    repos = [Repository.open(p) for p in paths]
    bus = Bus()
    yield bus, [bus.join(r) for r in repos]
    for r in repos:
        r.close()


def offer_all(replicas, values) -> None:
    for replica, ident, v in zip(replicas, SIGNERS, values, strict=True):
        if v is None:
            continue
        delta = vec(**{f"c{SIGNERS.index(ident)}": v})
        replica.offer(signed_update(ident, replica.head, delta, samples=1))


def z(replica) -> list[float]:
    return list(replica.repo.read_basin(replica.repo.read_commit(replica.head).basin).z)


def test_replicas_that_heard_the_same_updates_reach_the_same_head(replicas):
    bus, (a, b, c) = replicas
    start = a.head
    offer_all([a, b, c], [1.0, 2.0, 3.0])
    heads = {r.close() for r in (a, b, c)}
    assert len(heads) == 1 and a.head != start
    assert z(a)[:3] == pytest.approx([1 / 3, 2 / 3, 1.0], rel=1e-2)  # mean of three sparse changes
    commit = a.repo.read_commit(a.head)
    assert commit.author == hive_identity(hive_genesis(a.repo, a.head)).public_key
    assert commit.signature_valid() and commit.metrics["taken"] == 3.0


def test_a_lost_update_is_recovered_from_the_announcements(replicas):
    bus, (a, b, c) = replicas
    bus.drop = lambda sender, receiver, message: sender == 1 and receiver == 2  # c misses b
    offer_all([a, b, c], [1.0, 2.0, 3.0])
    a.close()
    b.close()  # their announcements list b's update; c fetches it by CID
    c.close()
    assert a.head == b.head == c.head


def test_a_replica_that_missed_rounds_catches_up_by_recomputing(replicas):
    bus, (a, b, c) = replicas
    bus.offline = {2}
    for value in (1.0, 2.0):
        offer_all([a, b, None], [value, value, None])
        a.close()
        b.close()
    assert a.head == b.head != c.head
    bus.offline = set()
    assert c.catch_up(a.head) and c.head == a.head
    offer_all([a, b, c], [1.0, 1.0, 1.0])
    assert len({r.close() for r in (a, b, c)}) == 1


def test_a_forged_head_is_not_adopted(replicas):
    """The hive key is public: anyone can sign a head with it, so a head is adopted only if the
    updates its commit lists recompute to exactly it."""
    from basinvcs.objects import Basin, Commit

    bus, (a, b, c) = replicas
    offer_all([a, b, c], [1.0, 2.0, 3.0])
    parent = a.head
    honest = a.repo.read_commit(a.close())
    basin = a.repo.read_basin(honest.basin)
    poisoned = Basin.create(CHART, [v + 100.0 for v in basin.z], labels=list(basin.labels))
    key = hive_identity(hive_genesis(a.repo, parent))
    forged = Commit(
        a.repo.write_basin(poisoned),
        (parent,),
        key.public_key,
        honest.time,
        honest.message,
        honest.metrics,
    ).signed(key.sign)
    bus.blocks[CID.for_block(forged.encode())] = forged.encode()
    assert not c.catch_up(CID.for_block(forged.encode()))
    assert c.head == parent and "does not recompute from the updates it lists" in c.not_adopted
    assert c.catch_up(a.head) and c.head == a.head  # the honest one is
    assert c.not_adopted is None


def test_what_untrusted_peers_publish_is_dropped_without_a_fetch(replicas):
    """Anyone can publish on the topic: updates are kept only from trusted signers, and an
    announcement is acted on (its blocks fetched, its rounds recomputed) only if a trusted
    signer signed it. An untrusted announcer is said once; a forged signature, junk and this
    replica's own announcement echoed back say nothing."""
    bus, (a, b, c) = replicas
    stranger = Identity(bytes([9]) * 32, "stranger")
    start = c.head
    fake = [CID.for_block(bytes([k])) for k in range(50)]
    lure = Announcement(fake[0], fake[1], tuple(fake), stranger.public_key)
    untrusted_update = signed_update(stranger, start, vec(c0=100.0), samples=1)
    half = dagcbor.encode({"type": "basin/hive-head", "parent": fake[0]})
    said = [c.hear(m) for m in (b"junk", half, untrusted_update)]
    said.append(c.hear(lure.signed(stranger.sign).encode()))
    said.append(c.hear(lure.signed(stranger.sign).encode()))  # said once
    forged = Announcement(fake[0], fake[1], tuple(fake), SIGNERS[0].public_key)
    said.append(c.hear(forged.signed(stranger.sign).encode()))  # r1's name, not its signature
    echo = Announcement(fake[0], fake[1], tuple(fake), SIGNERS[2].public_key)
    said.append(c.hear(echo.signed(SIGNERS[2].sign).encode()))  # c's own, back from pubsub
    ignored = (
        f"announcements by {format_key(stranger.public_key)} ignored: not a trusted signer here"
        " (basin key add it to act on the heads it announces)"
    )
    assert said == [None, None, None, ignored, None, None, None]
    assert c.heard == {} and bus.fetched == [] and c.announced == {} and c.head == start
    assert c.close() == start  # nothing heard: no round
    trusted = forged.signed(SIGNERS[0].sign).encode()  # r1's: acted on, its history fetched
    line = c.hear(trusted)
    assert line == c.not_adopted and line.startswith(f"head {fake[0]} not adopted: its history")
    assert bus.fetched == [fake[0]] and c.head == start


def test_a_replica_says_why_it_did_not_catch_up(replicas):
    """Rounds that took a signer this replica no longer trusts do not recompute here: kept out,
    with the signer named; a head whose history no node serves is another one-line reason."""
    bus, (a, b, c) = replicas
    bus.offline = {2}
    offer_all([a, b, None], [1.0, 2.0, None])
    a.close()
    b.close()
    bus.offline = set()
    porcelain.untrust(c.repo, "r2")
    start = c.head
    assert not c.catch_up(a.head) and c.head == start
    assert c.not_adopted.startswith(f"head {a.head} not adopted: the round after {start}")
    assert f"signers not trusted here: {format_key(SIGNERS[1].public_key)}" in c.not_adopted
    unknown = CID.for_block(b"\xa0")
    assert not c.catch_up(unknown) and "its history cannot be read" in c.not_adopted
    assert "\n" not in c.not_adopted


def test_a_replica_says_why_its_round_differs_from_the_others(replicas):
    """In one round c leaves out a signer it no longer trusts; the others' announcement lists
    that signer's update, which c does not take, and c says so."""
    bus, (a, b, c) = replicas
    porcelain.untrust(c.repo, "r2")
    start = c.head
    offer_all([a, b, c], [1.0, 2.0, 3.0])
    for replica in (c, a, b):
        replica.close()
    assert a.head == b.head != c.head and c.repo.parents(c.head) == [str(start)]
    line = (
        f"head {a.head} not adopted: the round after {start} took updates of signers not "
        f"trusted here: {format_key(SIGNERS[1].public_key)}"
    )
    assert c.not_adopted == line
    ignored = (
        f"announcements by {format_key(SIGNERS[1].public_key)} ignored: not a trusted signer "
        "here (basin key add it to act on the heads it announces)"
    )
    assert bus.said == [(2, line), (2, ignored)]  # b is r2: its announcement is not acted on


def test_three_replicas_through_two_ipfs_nodes_converge(replicas, ipfs_pair):
    """Real pubsub and bitswap: a and b on one js-ipfs daemon, c on another."""
    import threading
    import time

    from basinvcs.hive.replica import ipfs_transport, topic

    node1, node2 = ipfs_pair
    bus, (a, b, c) = replicas
    genesis = hive_genesis(a.repo, a.head)
    inboxes: list[list[bytes]] = [[], [], []]
    for k, (replica, daemon) in enumerate(zip((a, b, c), (node1, node1, node2), strict=True)):
        replica._publish, replica._store, replica._fetch = ipfs_transport(daemon.node, genesis)

        def listen(daemon=daemon, inbox=inboxes[k]) -> None:
            try:
                for data, _ in daemon.node.pubsub_subscribe(topic(genesis), 25):
                    inbox.append(data)
            except BasinError:
                pass  # the stream ends when the test is over

        threading.Thread(target=listen, daemon=True).start()
    time.sleep(3)  # subscriptions reach the other node

    def deliver() -> None:
        for replica, inbox in zip((a, b, c), inboxes, strict=True):
            while inbox:
                replica.hear(inbox.pop(0))

    for value in (1.0, 2.0):
        for _ in range(3):  # pubsub has no delivery guarantee: say it a few times
            offer_all([a, b, c], [value, value + 1, value + 2])
            time.sleep(1)
        deliver()
        for replica in (a, b, c):
            replica.close()
        time.sleep(1)
        deliver()
        assert a.head == b.head == c.head, f"round with {value}"
    # c misses a round entirely, then catches up from what the others announce and store
    before = c.head
    for _ in range(3):
        offer_all([a, b, None], [5.0, 5.0, None])
        time.sleep(1)
    for replica, inbox in zip((a, b), inboxes[:2], strict=True):
        while inbox:
            replica.hear(inbox.pop(0))
        replica.close()
    inboxes[2].clear()
    assert c.head == before != a.head
    assert c.catch_up(a.head) and c.head == a.head


def test_cli_replicas_on_two_ipfs_nodes_agree_on_updates_gossiped_by_the_cli(
    repo_dir, tmp_path, monkeypatch, ipfs_pair
):
    """Three `basin hive replica` processes, each in its own repository (copies of one), one on
    the first js-ipfs daemon and two on the second; two of their users gossip a change with
    `basin hive submit --node` from a work branch. Every replica closes the round with both
    updates: the same head CID, the mean of the changes, on each repository's `general`. Bob's
    key is trusted only once the replicas run (`basin key add` beside them): they take it up
    without a restart."""
    import subprocess
    import sys
    import time

    from basinvcs.identity import load_or_create_identity
    from tests.conftest import Cli, commit_z

    node1, node2 = ipfs_pair
    people = [("alice", node1, vec(c0=1.0)), ("bob", node2, vec(c1=3.0))]
    keys = {}
    for name, _, _ in people:
        ident, _ = load_or_create_identity(name, tmp_path / f"home-{name}")
        keys[name] = format_key(ident.public_key)
    with Repository.open(repo_dir) as repo:
        porcelain.trust(repo, keys["alice"], "alice")
    paths = [tmp_path / f"replica{k}" for k in range(3)]
    for path in paths:
        shutil.copytree(repo_dir, path)
    procs: list[subprocess.Popen] = []
    try:
        for path, daemon in zip(paths, (node1, node2, node2), strict=True):
            args = ["-C", str(path), "hive", "replica", "--node", daemon.api, "--rule", "mean"]
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "basinvcs.cli", *args, "--window", "4", "--rounds", "1"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in procs:
            assert "listening" in proc.stdout.readline(), proc.stderr.read()
        for path in paths:
            with Repository.open(path) as repo:
                porcelain.trust(repo, keys["bob"], "bob")
        time.sleep(3)  # the subscriptions reach the other node
        cli = Cli()
        for (name, daemon, z_work), path in zip(people, paths[:2], strict=True):
            monkeypatch.setenv("BASIN_HOME", str(tmp_path / f"home-{name}"))
            monkeypatch.chdir(path)
            cli("switch", "-c", "work")
            commit_z(path, z_work, f"{name}'s work")
            assert cli("hive", "submit", "--node", daemon.api).output.startswith("gossiped update")
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()  # by its own process id
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in outputs]
    assert all("trusted signers re-read: 3" in err for _, err in outputs)  # tester, alice, bob
    rounds = [ln for out, _ in outputs for ln in out.splitlines() if ln.startswith("round 1:")]
    assert len(rounds) == 3 and len(set(rounds)) == 1 and "(2 updates taken)" in rounds[0]
    head = rounds[0].split()[2]
    for path in paths:
        with Repository.open(path) as repo:
            assert str(repo.branch_commit("general")) == head
            z_head = list(repo.read_basin(repo.read_commit(repo.branch_commit("general")).basin).z)
            assert z_head[:2] == pytest.approx([0.5, 1.5], abs=0.02)  # mean of (1, 0), (0, 3)


def test_gossip_and_replica_refuse_bad_input_in_one_line(repo_dir, cli):
    """Before any node is asked: an unknown rule, a branch that is not there, a HEAD that does
    not contain the hive's head (its change would undo the rounds since)."""
    from tests.conftest import commit_z, state

    node = "/ip4/127.0.0.1/tcp/9"  # nothing listens: none of these gets that far
    commit_z(repo_dir, vec(c0=1.0), "ahead of the hive")
    cli("branch", "hive", "general")
    cli("switch", "-c", "side", "general~1")
    before = state(repo_dir)
    assert (
        "unknown aggregation rule"
        in cli.fails("hive", "replica", "--node", node, "--rule", "x").stderr
    )
    assert (
        "no branch named 'nope'"
        in cli.fails("hive", "replica", "--node", node, "--branch", "nope").stderr
    )
    err = cli.fails("hive", "submit", "--node", node, "--branch", "hive").stderr
    assert "HEAD does not contain hive's head" in err
    assert "--branch goes with --node" in cli("hive", "submit", "--branch", "hive", ok=False).output
    assert state(repo_dir) == before
    cli("switch", "hive")  # HEAD is the hive's head: nothing changed to gossip
    before = state(repo_dir)
    err = cli.fails("hive", "submit", "--node", node, "--branch", "hive").stderr
    assert "nothing to gossip: HEAD has hive's basin" in err
    assert state(repo_dir) == before


def test_an_announcement_decodes_only_as_signed_and_canonical():
    ident = SIGNERS[0]
    cids = tuple(CID.for_block(bytes([k])) for k in range(3))
    good = Announcement(cids[0], cids[1], cids[2:], ident.public_key).signed(ident.sign)
    assert Announcement.decode(good.encode()) == good
    node = dagcbor.decode(good.encode())
    for change, message in [
        ({"head": cids[2]}, "bad signature"),
        ({"extra": 1}, "unknown field 'extra'"),
        ({"updates": [b"x"]}, "announced update must be CID"),
        ({"author": b"k"}, "32-byte"),
        ({"version": 99}, "version 99 is not supported"),
    ]:
        with pytest.raises(BasinError, match=message):
            Announcement.decode(dagcbor.encode({**node, **change}))
    with pytest.raises(BasinError, match="not signed"):
        Announcement(cids[0], cids[1], (), ident.public_key).encode()


def announced_by(ident: Identity, parent: CID, head: CID, updates: list[CID]) -> bytes:
    return Announcement(parent, head, tuple(updates), ident.public_key).signed(ident.sign).encode()


def test_an_update_no_node_serves_is_asked_for_once_and_sets_off_no_storm(replicas):
    """A listed update a replica cannot fetch stays out of its round; it is asked for once per
    round, and a head that does not change is not announced again (replicas had set each other
    off forever: one trusted announcement listing a made-up CID for a closed round)."""
    bus, (a, b, c) = replicas
    start = a.head
    offer_all([a, b, c], [1.0, 2.0, 3.0])
    for r in (a, b, c):
        r.close()
    head, before = a.head, bus.published
    fake = CID.for_block(b"\xa1axb")
    for r in (a, b, c):  # pubsub hands it to every replica
        r.hear(announced_by(SIGNERS[0], start, head, [fake]))
    assert bus.published == before and bus.fetched.count(fake) == 2  # b and c, once each
    for r in (b, c):
        r.hear(announced_by(SIGNERS[0], start, head, [fake]))
    assert bus.fetched.count(fake) == 2 and a.head == b.head == c.head == head


def test_an_honest_update_whose_node_went_away_is_left_out_without_a_loop(replicas):
    bus, (a, b, c) = replicas
    edge = SIGNERS[0]
    update = signed_update(edge, a.head, vec(c5=1.0), samples=1)
    a.hear(update)  # only a heard it, and no node serves it any more
    offer_all([None, b, c], [None, 2.0, 3.0])
    publishes = bus.published
    heads = [r.close() for r in (a, b, c)]
    assert bus.published - publishes <= 6 and heads[1] == heads[2] != heads[0]
    assert b.repo.read_commit(b.head).metrics["taken"] == 2.0


def test_a_history_whose_commit_does_not_list_its_updates_is_refused_in_one_line(replicas):
    from basinvcs.objects import Commit

    bus, (a, b, c) = replicas
    start = c.head
    key = hive_identity(hive_genesis(c.repo, start))
    commit = c.repo.read_commit(start)
    for text in ("hive round\n\ntaken ", "hive round\n\ntaken not-a-cid z6Mk", "x\n\nrefused  "):
        forged = Commit(commit.basin, (start,), key.public_key, commit.time + 1, text, {})
        data = forged.signed(key.sign).encode()
        bus.blocks[CID.for_block(data)] = data
        cid = CID.for_block(data)
        assert c.hear(announced_by(SIGNERS[0], cid, cid, [])) == (
            f"head {cid} not adopted: a commit of its history does not list its updates"
        )
        assert c.head == start


def test_updates_that_add_up_past_what_a_basin_stores_are_refused_alike_everywhere(replicas):
    """Each update within the largest change a basin stores, two rounds of them past it: the
    round refuses the largest update as unstorable, on every replica alike."""
    from basinvcs.numeric import FLOAT24_MAX

    bus, (a, b, c) = replicas
    big = 0.99 * FLOAT24_MAX
    for values in [(big, big, big)] * 3 + [(big, 1.0, 1.0)]:  # z0 at 0.99 max after three
        offer_all([a, b, c], list(values))
        assert len({r.close() for r in (a, b, c)}) == 1
    commit = a.repo.read_commit(a.head)
    assert commit.metrics["taken"] == 2.0 and commit.metrics["refused"] == 1.0
    assert "unstorable" in commit.message and z(a)[0] == pytest.approx(big, rel=1e-3)


def test_what_a_replica_keeps_per_round_is_forgotten_once_the_round_is_over(replicas):
    bus, (a, b, c) = replicas
    for k in range(30):
        offer_all([a, b, c], [1.0 + k, 2.0, 3.0])
        for r in (a, b, c):
            r.close()
    for k in range(100):  # a trusted signer naming heads that never come
        a.hear(announced_by(SIGNERS[1], CID.for_block(bytes([k])), a.head, []))
    for r in (a, b, c):
        kept = {k for k in r.announced if r.repo.is_commit(k)} | set(r.tried) | set(r.held)
        assert len(kept) <= 2 and len(r.taken) <= 2
    assert len(a.announced) <= 2 + 64


def test_a_replica_that_closed_a_round_empty_takes_up_the_others_announcement(replicas):
    bus, (a, b, c) = replicas
    start = c.head
    bus.offline = {2}  # c hears nothing of this round
    offer_all([a, b, None], [1.0, 2.0, None])
    assert c.close() == start  # nothing heard: no round here
    bus.offline = set()
    a.close()  # its announcement reaches c, which makes the round from it
    assert c.head == a.head != start


def test_a_round_of_more_updates_than_a_message_holds_links_a_record_and_recomputes(replicas):
    """200 signers: the head's message cannot list them all, so it links a round record, the
    same block on every replica (made deterministically); a replica that missed the round
    fetches the record with the commit and recomputes the head from the updates it lists.
    (Before the record, a round of ~150 updates made a commit message over 16 KiB: refused.)"""
    bus, (a, b, c) = replicas
    many = [Identity(k.to_bytes(4, "big") + bytes(28), f"m{k}") for k in range(1, 201)]
    for replica in (a, b, c):
        for ident in many:
            porcelain.trust(replica.repo, format_key(ident.public_key), ident.name)
    bus.offline = {2}
    for ident in many:
        a.offer(signed_update(ident, a.head, vec(c0=1.0), samples=1))
    assert a.close() == b.close() != c.head
    commit = a.repo.read_commit(a.head)
    record = a.repo.read_record(commit.record)
    assert len(record.taken) == 200 and "... and " in commit.message
    assert commit.record in bus.blocks  # stored where the others fetch it
    bus.offline = set()
    assert c.catch_up(a.head) and c.head == a.head
    assert c.repo.read_record(commit.record) == record


def test_a_forged_head_listing_more_updates_than_signers_costs_no_fetch_of_them(replicas):
    """A head signed with the public hive key whose record lists 5,000 updates no node holds:
    no round made here lists more than one update per trusted signer, so the replica refuses
    it after fetching the commit and its record, not the 5,000 (each a wait on the node)."""
    from basinvcs.objects import Commit, RoundRecord

    bus, (a, b, c) = replicas
    start = c.head
    commit = c.repo.read_commit(start)
    key = hive_identity(hive_genesis(c.repo, start))
    fake = tuple((CID.for_block(k.to_bytes(4, "big")), key.public_key) for k in range(5000))
    record = RoundRecord(fake, ()).encode()
    bus.blocks[CID.for_block(record)] = record
    forged = Commit(
        commit.basin,
        (start,),
        key.public_key,
        commit.time + 1,
        "round",
        record=CID.for_block(record),
    ).signed(key.sign)
    cid = CID.for_block(forged.encode())
    bus.blocks[cid] = forged.encode()
    before = len(bus.fetched)
    assert not c.catch_up(cid) and c.head == start
    assert "lists 5000 updates, more than the 4 signers trusted here" in c.not_adopted
    assert len(bus.fetched) - before == 2  # the commit and its record
