"""The `Store` contract, held by every implementation: SQLite (on disk) and memory (tests)."""

import threading

import pytest

from basinvcs.cid import CID, DAG_CBOR, RAW
from basinvcs.codec import dagcbor
from basinvcs.errors import (
    BlockNotFound,
    BlockTooLarge,
    CodecError,
    RefConflict,
    RefError,
)
from basinvcs.store import MAX_BLOCK_SIZE
from basinvcs.store.base import IndexEntry
from basinvcs.store.memory import MemoryStore
from basinvcs.store.sqlite import SQLiteStore


@pytest.fixture(params=["sqlite", "memory"])
def store(request, tmp_path):
    s = SQLiteStore.create(tmp_path / "b.db") if request.param == "sqlite" else MemoryStore()
    yield s
    s.close()


def test_put_get_has(store):
    data = dagcbor.encode({"a": 1})
    cid = store.put(data)
    assert cid == CID.for_block(data) and cid.codec == DAG_CBOR
    assert store.get(cid) == data and store.has(cid)
    assert store.put(data) == cid  # idempotent
    raw = store.put(b"\xff anything", RAW)
    assert store.get(raw) == b"\xff anything"


def test_missing_block(store):
    with pytest.raises(BlockNotFound, match="not found"):
        store.get(CID.for_block(b"nope", RAW))


def test_non_canonical_dag_cbor_is_refused_and_not_stored(store):
    with pytest.raises(CodecError):
        store.put(bytes.fromhex("a2616202616101"), DAG_CBOR)  # keys out of order
    assert not store.has(CID.for_block(bytes.fromhex("a2616202616101")))


def test_oversized_block_is_refused(store):
    with pytest.raises(BlockTooLarge, match="over the 1048576-byte limit"):
        store.put(b"\0" * (MAX_BLOCK_SIZE + 1), RAW)


def test_ref_compare_and_swap(store):
    store.set_if_equals("refs/heads/a", "x", None, "create")
    with pytest.raises(RefConflict, match="expected nothing, found x"):
        store.set_if_equals("refs/heads/a", "y", None, "create again")
    with pytest.raises(RefConflict, match="expected w, found x"):
        store.set_if_equals("refs/heads/a", "y", "w", "stale")
    store.set_if_equals("refs/heads/a", "y", "x", "move")
    assert store.read_ref("refs/heads/a").target == "y"
    store.set_if_equals("refs/heads/a", None, "y", "delete")
    assert store.read_ref("refs/heads/a") is None
    log = store.reflog("refs/heads/a")
    assert [(e.old, e.new, e.message) for e in log] == [
        ("y", None, "delete"),
        ("x", "y", "move"),
        (None, "x", "create"),
    ]


def test_bad_ref_name_is_refused(store):
    with pytest.raises(RefError, match="bad ref name"):
        store.set_if_equals("refs/heads/a..b", "x", None, "m")


def test_transaction_rolls_back_everything(store):
    with pytest.raises(RefConflict), store.transaction():
        cid = store.put(dagcbor.encode({"k": "v"}))
        store.set_if_equals("refs/heads/a", "x", "not-there", "m")
    assert not store.has(cid)


def test_walk_commits_newest_first_with_merges(store):
    def commit(name, parents, t):
        cid = store.put(dagcbor.encode({"n": name}))
        store.index_commit(cid, parents, t, bytes(32), name)
        return cid

    a = commit("a", [], 1)
    b = commit("b", [a], 2)
    c = commit("c", [a], 3)
    d = commit("d", [b, c], 4)
    walked = [cid for cid, _ in store.walk_commits([d])]
    assert walked == [d, c, b, a]
    assert [cid for cid, _ in store.walk_commits([d], 2)] == [d, c]
    assert [cid for cid, _ in store.walk_commits([b, c])] == [c, b, a]


def _index(store, name, parents, t, author=bytes(32)):
    cid = store.put(dagcbor.encode({"n": name}))
    store.index_commit(cid, parents, t, author, f"commit {name}\nsecond line")
    return cid


def test_index_entry_holds_what_log_shows(store):
    a = _index(store, "a", [], 1, b"\x01" * 32)
    b = _index(store, "b", [a], 2)
    assert store.index_entry(b) == IndexEntry(
        str(b), (str(a),), 2, bytes(32), "commit b\nsecond line"
    )
    assert store.index_entry(a).parents == () and store.index_entry(a).author == b"\x01" * 32
    store.index_commit(b, [], 9, b"\x02" * 32, "other")  # indexing again changes nothing
    assert store.index_entry(b).time == 2 and store.indexed_parents(b) == [str(a)]
    assert store.index_entry(store.put(dagcbor.encode({"not": "indexed"}))) is None


def test_walk_index_newest_first_with_merges_and_limits(store):
    a = _index(store, "a", [], 1)
    b = _index(store, "b", [a], 2)
    c = _index(store, "c", [a], 3)
    d = _index(store, "d", [b, c], 4)
    walked = list(store.walk_index([d]))
    assert [e.cid for e in walked] == [str(d), str(c), str(b), str(a)]
    assert walked[0] == store.index_entry(d) and walked[0].parents == (str(b), str(c))
    assert [e.cid for e in store.walk_index([d], 2)] == [str(d), str(c)]
    assert [e.cid for e in store.walk_index([b, c, c])] == [str(c), str(b), str(a)]
    assert list(store.walk_index([d], 0)) == []
    unindexed = store.put(dagcbor.encode({"n": "loose"}))
    assert [e.cid for e in store.walk_index([unindexed, b])] == [str(b), str(a)]
    blocks = list(store.walk_commits([d]))  # the same walk, each block re-hashed
    assert [cid for cid, _ in blocks] == [CID.parse(e.cid) for e in walked]
    assert blocks[-1][1] == dagcbor.encode({"n": "a"})


def test_walk_index_breaks_ties_in_the_order_commits_were_reached(store):
    """Equal times (commits made in the same millisecond) keep one order, bounded or not: the
    heads in CID order, then parents in their order, as SQLite's recursive walk gave them."""
    root = _index(store, "root", [], 1)
    sides = [_index(store, f"side{i}", [root], 5) for i in range(6)]
    merge = _index(store, "merge", sides, 9)
    tip = _index(store, "tip", [merge], 9)
    assert [str(c) for c in sides] != sorted(str(c) for c in sides)  # so CID order would differ
    full = [e.cid for e in store.walk_index([tip])]
    assert full == [str(c) for c in (tip, merge, *sides, root)]
    for limit in (1, 3, 8, 1000, 1001, 5000):  # lookups up to 1000, one scan beyond
        assert [e.cid for e in store.walk_index([tip], limit)] == full[:limit]
    heads = [e.cid for e in store.walk_index(sides[::-1], 3)]
    assert heads == sorted(str(c) for c in sides)[:3]


def test_a_rolled_back_transaction_leaves_no_index_entry(store):
    with pytest.raises(RefConflict), store.transaction():
        cid = _index(store, "a", [], 1)
        store.set_if_equals("refs/heads/a", "x", "not-there", "m")
    assert store.index_entry(cid) is None and not store.is_indexed_commit(cid)
    assert list(store.walk_index([cid])) == []


def test_concurrent_compare_and_swap_has_one_winner_per_step(store):
    """Threads racing to move one ref: every move that succeeds saw the value it replaced."""
    store.set_if_equals("refs/heads/a", "0", None, "start")
    wins: list[int] = []

    def worker(k: int) -> None:
        for _ in range(20):
            current = store.read_ref("refs/heads/a").target
            try:
                store.set_if_equals("refs/heads/a", str(int(current) + 1), current, f"w{k}")
            except RefConflict:
                continue
            wins.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.read_ref("refs/heads/a").target == str(len(wins))
    assert len(store.reflog("refs/heads/a")) == len(wins) + 1


def test_shallow_commits_are_recorded_with_their_transaction(store):
    a, b = (CID.for_block(dagcbor.encode({"c": k})) for k in "ab")
    assert store.shallow_commits() == set()
    store.mark_shallow([])  # nothing to record: nothing changes
    with pytest.raises(RuntimeError), store.transaction():
        store.mark_shallow([a])
        raise RuntimeError("undone")
    assert store.shallow_commits() == set()
    store.mark_shallow([a])
    store.mark_shallow([a, b])  # again: recorded once
    assert store.shallow_commits() == {str(a), str(b)}
