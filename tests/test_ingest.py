"""basinvcs.ingest.fetch between real repositories, each with its own identity."""

from __future__ import annotations

import dataclasses
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import DIM, packet, state

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.errors import RefError, SchemaError, SignatureError
from basinvcs.identity import format_key, load_identity
from basinvcs.ingest import fetch
from basinvcs.objects import Commit
from basinvcs.repository import Repository


def _as(monkeypatch, home: Path) -> None:
    monkeypatch.setenv("BASIN_HOME", str(home))


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    _as(monkeypatch, tmp_path / "home-hub")
    porcelain.init(tmp_path / "hub", dim=DIM, seed=7, name="hub").close()
    return tmp_path / "hub"


def _specialist(tmp_path, monkeypatch, hub: Path, name: str, commits: int = 2) -> Path:
    """A repository with its own identity that fetched the hub's general and trained `name`."""
    _as(monkeypatch, tmp_path / f"home-{name}")
    path = tmp_path / name
    with porcelain.init(path, dim=DIM, seed=7, name=name) as repo:
        fetch(repo, hub, "general", "upstream")
        porcelain.fork(repo, "upstream", name)
        for i in range(commits):
            porcelain.commit(repo, packet(100 * len(name) + i), f"{name} step {i}")
    _as(monkeypatch, tmp_path / "home-hub")
    return path


def _blocks(path: Path) -> set[str]:
    conn = sqlite3.connect(path / ".basin" / "basin.db")
    try:
        return {r[0] for r in conn.execute("SELECT cid FROM blocks")}
    finally:
        conn.close()


def _reachable(path: Path, branch: str) -> set[str]:
    """Commits reachable from a branch and their packets, read independently of fetch."""
    with Repository.open(path) as repo:
        out = set()
        for cid, commit in porcelain.log(repo, branch):
            out |= {str(cid), str(commit.basin)}
        return out


def test_fetch_copies_exactly_what_is_missing(tmp_path, monkeypatch, hub):
    spec = _specialist(tmp_path, monkeypatch, hub, "cipher")
    before = _blocks(hub)
    wanted = _reachable(spec, "cipher")
    with Repository.open(hub) as repo:
        head = fetch(repo, spec, "cipher", "cipher")
        assert repo.branch_commit("cipher") == head
        with Repository.open(spec) as src:
            assert head == src.branch_commit("cipher")
        assert porcelain.verify(repo).ok
        assert repo.is_commit(head)
    added = _blocks(hub) - before
    # the specialist's fork and its two commits, each with its packet; genesis was the hub's own
    assert added == wanted - before
    assert len(added) == 6
    # the specialist's general is its own genesis, not reachable from cipher: not copied
    with Repository.open(spec) as src:
        own_genesis = str(src.branch_commit("general"))
    assert own_genesis not in _blocks(hub)
    # fetching again as another name copies nothing
    with Repository.open(hub) as repo:
        assert fetch(repo, spec, "cipher", "again") == head
    assert _blocks(hub) - before == added


def test_fetched_history_merges_when_trusted(tmp_path, monkeypatch, hub):
    spec = _specialist(tmp_path, monkeypatch, hub, "sort")
    with Repository.open(spec) as src:
        key = format_key(src.read_commit(src.branch_commit("sort")).author)
    with Repository.open(hub) as repo:
        head = fetch(repo, spec, "sort", "sort")
        with pytest.raises(Exception, match="untrusted"):
            porcelain.merge(repo, "sort")
        porcelain.trust(repo, key, "sort")
        assert porcelain.merge(repo, "sort").kind == "fast-forward"
        assert repo.head_commit() == head
        assert porcelain.verify(repo).ok


def test_fetch_refuses_another_chart(tmp_path, monkeypatch, hub):
    other = tmp_path / "other"
    porcelain.init(other, dim=DIM, seed=8).close()
    before = state(hub)
    with Repository.open(hub) as repo, pytest.raises(SchemaError, match="chart"):
        fetch(repo, other, "general", "other")
    assert state(hub) == before


def _install(repo: Repository, branch: str, commit: Commit, head: CID) -> CID:
    """Store `commit` as it is and move `branch` from `head` to it, unchecked: a forger's write."""
    with repo.transaction():
        cid = repo.put_block(commit.encode())
        repo._store.index_commit(cid, commit.parents, commit.time, commit.author, commit.message)
        repo.set_ref(f"refs/heads/{branch}", str(cid), str(head), "forge")
    return cid


def _forge(path: Path, branch: str, change) -> CID:
    """Replace the head commit of `branch` by the same commit with `change` applied."""
    with Repository.open(path) as repo:
        head = repo.branch_commit(branch)
        return _install(repo, branch, change(repo.read_commit(head)), head)


def _refused(hub: Path, spec: Path, branch: str, error: type[Exception], match: str) -> None:
    """Fetching `branch` of `spec` into the hub raises `error`, and the hub is unchanged."""
    before = state(hub)
    with Repository.open(hub) as repo, pytest.raises(error, match=match):
        fetch(repo, spec, branch, branch)
    assert state(hub) == before


def test_fetch_refuses_a_bad_signature_and_changes_nothing(tmp_path, monkeypatch, hub):
    spec = _specialist(tmp_path, monkeypatch, hub, "reverse")
    _forge(spec, "reverse", lambda c: dataclasses.replace(c, message="tampered"))
    _refused(hub, spec, "reverse", SignatureError, "bad signature")


def test_fetch_refuses_a_bad_signature_deep_in_history(tmp_path, monkeypatch, hub):
    spec = _specialist(tmp_path, monkeypatch, hub, "reverse", commits=1)
    _forge(spec, "reverse", lambda c: dataclasses.replace(c, time=c.time + 1))
    _as(monkeypatch, tmp_path / "home-reverse")
    with Repository.open(spec) as repo:  # a good commit on top of the forged one
        porcelain.commit(repo, packet(999), "on top")
    _as(monkeypatch, tmp_path / "home-hub")
    _refused(hub, spec, "reverse", SignatureError, "bad signature")


def test_fetch_refuses_a_packet_of_another_chart(tmp_path, monkeypatch, hub):
    spec = _specialist(tmp_path, monkeypatch, hub, "copy", commits=0)
    _as(monkeypatch, tmp_path / "home-copy")
    ident = load_identity()
    with Repository.open(spec) as repo:
        basin = repo.put_block(packet(5, dim=DIM * 2).encode())  # chart (7, 128): not ours
        parent = repo.branch_commit("copy")
        commit = Commit(basin, (parent,), ident.public_key, 1, "wrong chart").signed(ident.sign)
        _install(repo, "copy", commit, parent)
    _as(monkeypatch, tmp_path / "home-hub")
    _refused(hub, spec, "copy", SchemaError, "chart")


def test_fetch_refuses_missing_branch_and_existing_target(tmp_path, monkeypatch, hub):
    spec = _specialist(tmp_path, monkeypatch, hub, "cipher", commits=0)
    before = state(hub)
    with Repository.open(hub) as repo:
        with pytest.raises(RefError, match="no branch"):
            fetch(repo, spec, "nope", "x")
        with pytest.raises(RefError, match="already exists"):
            fetch(repo, spec, "cipher", "general")
        with pytest.raises(Exception, match="branch name|ref"):
            fetch(repo, spec, "cipher", "bad..name")
    assert state(hub) == before


def test_write_history_writes_a_batch_at_a_time_all_or_nothing(tmp_path, monkeypatch, hub):
    """write_history stores what plan_fetch + apply_plan would, in batches (here of 3 commits),
    and a source that fails, or a check that refuses, part-way (after batches went in) leaves
    the repository as it was; so does a refusal by the caller after it, in its transaction."""
    from basinvcs import ingest

    monkeypatch.setattr(ingest, "WRITE_BATCH", 3)
    source = _specialist(tmp_path, monkeypatch, hub, "long", commits=10)
    with Repository.open(source) as repo:
        head = repo.branch_commit("long")
        history = [cid for cid, _ in repo.walk_blocks([head])]
        get = repo.get_block
        target = tmp_path / "target"
        porcelain.init(target, dim=DIM, seed=7, name="target").close()
        before = state(target)
        with Repository.open(target) as mine:
            calls = []

            def failing(cid: CID) -> bytes:
                calls.append(cid)
                if len(calls) == 16:  # after two batches (each commit and its packet: 2 reads)
                    raise OSError("the source went away")
                return get(cid)

            with pytest.raises(OSError):
                ingest.write_history(mine, [head], failing)

            def refuse(cid: CID, commit: Commit) -> None:
                if cid == history[8]:
                    raise SchemaError("refused by the caller's check")

            with pytest.raises(SchemaError):
                ingest.write_history(mine, [head], get, refuse)
            with pytest.raises(RefError), mine.transaction():
                ingest.write_history(mine, [head], get)
                raise RefError("the caller refuses what was written")
        assert state(target) == before
        with Repository.open(target) as mine:
            assert ingest.write_history(mine, [head], get) == len(history) > 3 * 3
            assert [cid for cid, _ in mine.walk_blocks([head])] == history
            assert ingest.write_history(mine, [head], get) == 0  # everything held: nothing read


def test_write_history_to_a_depth_marks_where_it_starts_and_a_deeper_walk_settles_it(
    tmp_path, monkeypatch, hub
):
    """`depth`: the commits fewer than that many links below the head by the shortest path
    (breadth first: a merge whose other parent reaches an old commit sooner takes it), marked
    shallow where their parents are missing; a later walk without a depth goes through the
    marked commits, fetches the rest and clears the marks (the database is version 2 again)."""
    from basinvcs import ingest

    source = _specialist(tmp_path, monkeypatch, hub, "long", commits=6)
    with Repository.open(source) as repo:
        tip = repo.branch_commit("long")
        chain = [cid for cid, _ in repo.walk_blocks([tip])]
        # a merge of the tip with a commit 4 links below it: that one is 1 link below the merge
        old = repo.read_commit(chain[4])
        ident = load_identity()
        merge = Commit(old.basin, (chain[4], tip), ident.public_key, old.time + 10**6, "merge")
        data = merge.signed(ident.sign).encode()
        repo.add_history([], [(CID.for_block(data), Commit.decode(data), data)])
        head = CID.for_block(data)
        get = repo.get_block
        target = tmp_path / "target"
        porcelain.init(target, dim=DIM, seed=7, name="target").close()
        with Repository.open(target) as mine:
            assert ingest.write_history(mine, [head], get, depth=3) == 5
            held = {cid for cid, _ in mine.walk_blocks([head])}
            assert held == {head, tip, chain[1], chain[4], chain[5]}  # chain[4]'s parent: 2 below
            assert mine.shallow() == {chain[1], chain[5]}
            mine.set_ref("refs/heads/merged", str(head), None, "test")
            assert porcelain.verify(mine).ok and porcelain.verify(mine).shallow == 2
            assert ingest.write_history(mine, [head], get) == 0  # from the head: all held
            assert ingest.write_history(mine, [head], get, deepen=True) == len(chain) - 4
            assert mine.shallow() == set() and porcelain.verify(mine).shallow == 0
            assert [cid for cid, _ in mine.walk_blocks([tip])] == chain
    conn = sqlite3.connect(target / ".basin" / "basin.db")
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    finally:
        conn.close()


def test_verify_checks_the_shallow_marks(tmp_path, monkeypatch, hub):
    """A mark on a commit whose parents are here, on something that is not a commit of the
    repository, or that is not a CID: each a problem; and a held parent of a marked commit is
    checked as any commit is."""
    from basinvcs import ingest

    source = _specialist(tmp_path, monkeypatch, hub, "short", commits=2)
    with Repository.open(source) as repo:
        tip = repo.branch_commit("short")
        chain = [cid for cid, _ in repo.walk_blocks([tip])]
        target = tmp_path / "target"
        porcelain.init(target, dim=DIM, seed=7, name="target").close()
        with Repository.open(target) as mine:
            ingest.write_history(mine, [tip], repo.get_block)
            mine.set_ref("refs/heads/short", str(tip), None, "test")
            assert porcelain.verify(mine).ok
            mine._store.mark_shallow([tip])  # as damage would leave it
            mine._store.mark_shallow([CID.for_block(b"not a commit")])
            found = dict(porcelain.verify(mine).problems)
            assert found[str(tip)] == "marked shallow, but its parents are all here"
            assert "not a commit of this repository" in found[str(CID.for_block(b"not a commit"))]
            assert porcelain.verify(mine).commits == len(chain) + 1  # below the mark too


def _with_record(tmp_path, monkeypatch, hub: Path, how: str = "whole") -> Path:
    """A specialist whose head commit links a round record (as a hive round's head does).
    `how`: "whole"; "missing" (the record is not stored); "packet" (the commit names its
    packet's CID as its record: a block, but not a round record); "held" (it names the genesis
    commit, a block the fetching repository holds already)."""
    from basinvcs.objects import RoundRecord

    spec = _specialist(tmp_path, monkeypatch, hub, "hive", commits=1)
    _as(monkeypatch, tmp_path / "home-hive")
    ident = load_identity()
    with Repository.open(spec) as repo:
        parent = repo.branch_commit("hive")
        basin = repo.read_commit(parent).basin
        record = RoundRecord(
            ((CID.for_block(b"an update"), ident.public_key),),
            ((CID.for_block(b"x"), "outlier"),),
        )
        cid = {
            "whole": lambda: repo.write_record(record),
            "missing": lambda: CID.for_block(record.encode()),
            "packet": lambda: basin,
            "held": lambda: [c for c, _ in repo.walk_blocks([parent])][-1],  # the hub has it
        }[how]()
        commit = Commit(basin, (parent,), ident.public_key, 10**12, "round", record=cid)
        commit = commit.signed(ident.sign)
        if how == "missing":
            with pytest.raises(SchemaError, match="commit links .* not in the repository"):
                repo.write_commit(commit)
        _install(repo, "hive", commit, parent)
    _as(monkeypatch, tmp_path / "home-hub")
    return spec


def test_a_round_record_travels_with_its_commit_and_verify_checks_it(tmp_path, monkeypatch, hub):
    from basinvcs.carfile import export_car, import_car

    spec = _with_record(tmp_path, monkeypatch, hub)
    with Repository.open(spec) as src:
        record = src.read_commit(src.branch_commit("hive")).record
        assert porcelain.verify(src).records == 1 and porcelain.verify(src).ok
    with Repository.open(hub) as repo:
        head = fetch(repo, spec, "hive", "hive")
        assert repo.read_record(record).taken[0][0] == CID.for_block(b"an update")
        assert porcelain.verify(repo).ok and porcelain.verify(repo).records == 1
        export_car(repo, "hive", tmp_path / "hive.car")
    other = tmp_path / "other"
    porcelain.init(other, dim=DIM, seed=7, name="other").close()
    with Repository.open(other) as repo:
        import_car(repo, tmp_path / "hive.car", "hive")
        assert repo.branch_commit("hive") == head and repo.has_block(record)
        assert porcelain.verify(repo).ok


@pytest.mark.parametrize(
    "how, error, match, problem",
    [
        ("missing", Exception, "not found|missing", "not found|missing"),
        ("packet", SchemaError, "round record of .* is not valid", "not a 'basin/round'"),
        ("held", SchemaError, "round record of .* is not valid", "not a 'basin/round'"),
    ],
)
def test_a_round_record_missing_or_not_one_is_refused(
    tmp_path, monkeypatch, hub, how, error, match, problem
):
    spec = _with_record(tmp_path, monkeypatch, hub, how)
    _refused(hub, spec, "hive", error, match)
    with Repository.open(spec) as repo:
        found = [p for _, p in porcelain.verify(repo).problems if "round record of commit" in p]
        assert len(found) == 1 and re.search(problem, found[0])
