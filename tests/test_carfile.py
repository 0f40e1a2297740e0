"""`basin export` / `basin import`: CARv1 files between real repositories, and every bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DIM, packet, state

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.codec.car import car_bytes, read_car_bytes
from basinvcs.repository import Repository


@pytest.fixture
def history(repo_dir) -> Path:
    """repo_dir with a fork and three commits: 5 commits, 5 packets in all."""
    with Repository.open(repo_dir) as repo:
        porcelain.fork(repo, "general", "math")
        for i in range(3):
            porcelain.commit(repo, packet(i), f"step {i}")
    return repo_dir


def _reachable(path: Path, rev: str) -> set[CID]:
    with Repository.open(path) as repo:
        out = set()
        for cid, commit in porcelain.log(repo, rev):
            out |= {cid, commit.basin}
        return out


def _other_repo(tmp_path, monkeypatch, name: str = "other") -> Path:
    """A second repository in the same chart, made by someone else."""
    monkeypatch.setenv("BASIN_HOME", str(tmp_path / f"home-{name}"))
    path = tmp_path / name
    porcelain.init(path, dim=DIM, seed=7, name=name).close()
    return path


def test_export_writes_the_whole_history_with_the_commit_as_root(cli, history, tmp_path):
    out = tmp_path / "math.car"
    result = cli("export", "math", "-o", str(out))
    with Repository.open(history) as repo:
        head = repo.branch_commit("math")
    assert f"root {head}" in result.output
    roots, blocks = read_car_bytes(out.read_bytes())
    assert roots == [head]
    assert {cid for cid, _ in blocks} == _reachable(history, "math")
    assert len(blocks) == len(_reachable(history, "math")) == 10  # each block exactly once
    with Repository.open(history) as repo:
        assert all(repo.get_block(cid) == data for cid, data in blocks)


def test_import_into_another_repository_round_trips(cli, history, tmp_path, monkeypatch):
    out = tmp_path / "math.car"
    cli("export", "math", "-o", str(out))
    other = _other_repo(tmp_path, monkeypatch)
    monkeypatch.chdir(other)
    result = cli("import", str(out), "--branch", "math")
    # its genesis commit differs (another author) but the genesis packet, z = 0 in the same
    # chart, is the very same block: 9 of the 10 are new
    assert "9 new of 10 blocks" in result.output
    with Repository.open(history) as a, Repository.open(other) as b:
        assert b.branch_commit("math") == a.branch_commit("math")
        assert [c for c, _ in porcelain.log(b, "math")] == [c for c, _ in porcelain.log(a, "math")]
        assert porcelain.verify(b).ok
    again = cli("import", str(out))  # everything present: nothing new, nothing broken
    assert "0 new of 10 blocks" in again.output


def test_import_ignores_unreachable_blocks(cli, history, tmp_path, monkeypatch):
    with Repository.open(history) as repo:
        head = repo.branch_commit("math")
        blocks = [(cid, repo.get_block(cid)) for cid in _reachable(history, "math")]
    stray = dagcbor.encode({"stray": 1})
    out = tmp_path / "extra.car"
    out.write_bytes(car_bytes([head], [*blocks, (CID.for_block(stray), stray)]))
    other = _other_repo(tmp_path, monkeypatch)
    monkeypatch.chdir(other)
    result = cli("import", str(out))
    assert "1 blocks not reachable from the root were not stored" in result.output
    with Repository.open(other) as repo:
        assert not repo.has_block(CID.for_block(stray))


def _bad_file(tmp_path, history, how: str) -> Path:
    out = tmp_path / "good.car"
    with Repository.open(history) as repo:
        head = repo.branch_commit("math")
        blocks = [(cid, repo.get_block(cid)) for cid in _reachable(history, "math")]
    good = car_bytes([head], blocks)
    out.write_bytes(good)
    bad = tmp_path / f"{how}.car"
    if how == "truncated":
        bad.write_bytes(good[: len(good) - 100])
    elif how == "wrong-hash":
        data = bytearray(good)
        data[-5] ^= 0x01  # inside the last block: its bytes no longer hash to its CID
        bad.write_bytes(bytes(data))
    elif how == "missing-block":
        with Repository.open(history) as repo:  # the head's own packet: no other repo has it
            gone = repo.read_commit(head).basin  # (a set's order once dropped the shared genesis)
        bad.write_bytes(car_bytes([head], [b for b in blocks if b[0] != gone]))
    elif how == "two-roots":
        bad.write_bytes(car_bytes([head, head], blocks))
    elif how == "not-a-commit":
        packet_cid = next(cid for cid, data in blocks if b"basin/packet" in data)
        bad.write_bytes(car_bytes([packet_cid], blocks))
    elif how == "garbage":
        bad.write_bytes(b"this is not a CAR file")
    return bad


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("truncated", "truncated CAR"),
        ("wrong-hash", "does not hash to its CID"),
        ("missing-block", "lacks block"),
        ("two-roots", "has 2 roots"),
        ("not-a-commit", "not a valid commit"),
        ("garbage", "CAR"),
    ],
)
def test_a_bad_car_is_refused_and_changes_nothing(
    cli, history, tmp_path, monkeypatch, how, message
):
    bad = _bad_file(tmp_path, history, how)
    other = _other_repo(tmp_path, monkeypatch)
    monkeypatch.chdir(other)
    before = state(other)
    result = cli.fails("import", str(bad), "--branch", "math")
    assert message in result.stderr
    assert state(other) == before


def test_import_refuses_an_existing_branch_and_a_missing_file(cli, history, tmp_path):
    out = tmp_path / "math.car"
    cli("export", "math", "-o", str(out))
    before = state(history)
    assert "already exists" in cli.fails("import", str(out), "--branch", "general").stderr
    assert "cannot read" in cli.fails("import", str(tmp_path / "nope.car")).stderr
    assert state(history) == before


def test_export_refuses_an_unknown_revision_and_leaves_no_file(cli, history, tmp_path):
    out = tmp_path / "x.car"
    assert "unknown revision" in cli.fails("export", "nope", "-o", str(out)).stderr
    assert not out.exists()
    assert "cannot write" in cli.fails("export", "-o", str(tmp_path / "no" / "dir.car")).stderr
