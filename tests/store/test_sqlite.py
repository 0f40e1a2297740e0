import sqlite3
import threading

import pytest

from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.errors import (
    HashMismatch,
    RepositoryError,
)
from basinvcs.store.base import IndexEntry
from basinvcs.store.sqlite import SQLiteStore
from tests.conftest import packet


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore.create(tmp_path / "b.db")
    yield s
    s.close()


def test_wal_mode(store):
    assert store._one("PRAGMA journal_mode") == ("wal",)


def test_every_read_is_rehashed(store, tmp_path):
    cid = store.put(dagcbor.encode({"a": 1}))
    store._exec("UPDATE blocks SET data = ? WHERE cid = ?", (dagcbor.encode({"a": 2}), str(cid)))
    with pytest.raises(HashMismatch, match=str(cid)):
        store.get(cid)


def test_open_refuses_missing_and_corrupt_databases(tmp_path):
    with pytest.raises(RepositoryError, match="no block database"):
        SQLiteStore.open(tmp_path / "missing.db")
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RepositoryError, match="corrupt repository database"):
        SQLiteStore.open(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(RepositoryError, match="schema version 0"):
        SQLiteStore.open(other)


# -- schema version 1 (a commit index of times only) is upgraded when opened ---------------------

V1_SCHEMA = """
CREATE TABLE blocks (cid TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE refs (name TEXT PRIMARY KEY, target TEXT NOT NULL, symbolic INTEGER NOT NULL);
CREATE TABLE reflog (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, old TEXT, new TEXT, time INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX reflog_name ON reflog (name, id);
CREATE TABLE commits (cid TEXT PRIMARY KEY, time INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE commit_parents (
    child TEXT NOT NULL, idx INTEGER NOT NULL, parent TEXT NOT NULL, PRIMARY KEY (child, idx)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""


def _v1_database(path):
    """A version-1 database as basinvcs 0.1 wrote it: commits a <- b <- c, c's block damaged,
    and d indexed with no block at all."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    made = {}
    for name, parents, t in (("a", "", 1), ("b", "a", 2), ("c", "b", 3), ("d", "c", 4)):
        node = {
            "author": name.encode() * 32,
            "message": f"commit {name}\n\nbody",
            "parents": [made[p] for p in parents],
            "time": t,
        }
        data = dagcbor.encode(node)
        made[name] = cid = CID.for_block(data)
        if name == "c":
            data = dagcbor.encode({**node, "message": "tampered"})
        if name != "d":
            conn.execute("INSERT INTO blocks VALUES (?, ?)", (str(cid), data))
        conn.execute("INSERT INTO commits VALUES (?, ?)", (str(cid), t))
        for i, p in enumerate(parents):
            conn.execute("INSERT INTO commit_parents VALUES (?, ?, ?)", (str(cid), i, str(made[p])))
    conn.commit()
    conn.close()
    return made


def test_opening_a_version_1_database_upgrades_its_commit_index(tmp_path):
    made = _v1_database(tmp_path / "v1.db")
    store = SQLiteStore.open(tmp_path / "v1.db")
    try:
        assert store._one("PRAGMA user_version") == (2,)
        a, b, c, d = (str(made[n]) for n in "abcd")
        assert store.index_entry(made["b"]) == IndexEntry(b, (a,), 2, b"b" * 32, "commit b\n\nbody")
        # a damaged or missing block leaves author and message empty, for verify to report
        assert store.index_entry(made["c"]) == IndexEntry(c, (b,), 3, b"", "")
        assert store.index_entry(made["d"]) == IndexEntry(d, (c,), 4, b"", "")
        assert [e.cid for e in store.walk_index([made["d"]])] == [d, c, b, a]
    finally:
        store.close()
    reopened = SQLiteStore.open(tmp_path / "v1.db")  # once only
    assert reopened.index_entry(made["a"]).author == b"a" * 32
    reopened.close()


def test_concurrent_openers_upgrade_once(tmp_path):
    made = _v1_database(tmp_path / "v1.db")
    barrier, opened, failed = threading.Barrier(4), [], []

    def open_it() -> None:
        barrier.wait()
        try:
            opened.append(SQLiteStore.open(tmp_path / "v1.db"))
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            failed.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed and len(opened) == 4
    assert all(s.index_entry(made["a"]).message == "commit a\n\nbody" for s in opened)
    for s in opened:
        s.close()


def test_a_newer_schema_is_refused(tmp_path):
    SQLiteStore.create(tmp_path / "b.db").close()
    conn = sqlite3.connect(tmp_path / "b.db")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    with pytest.raises(RepositoryError, match="schema version 4, newer than this basinvcs reads"):
        SQLiteStore.open(tmp_path / "b.db")


def _downgrade_to_v1(db) -> None:
    """Turn a repository's database back into what basinvcs 0.1 wrote (times-only index)."""
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        BEGIN;
        CREATE TABLE v1 (cid TEXT PRIMARY KEY, time INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO v1 SELECT cid, time FROM commits;
        DROP TABLE commits;
        ALTER TABLE v1 RENAME TO commits;
        PRAGMA user_version = 1;
        COMMIT;
        """
    )
    assert [r[1] for r in conn.execute("PRAGMA table_info(commits)")] == ["cid", "time"]
    conn.close()


def test_a_version_1_repository_logs_and_verifies_as_before(repo_dir, cli):
    for seed in (1, 2):
        (repo_dir / f"p{seed}").write_bytes(packet(seed).encode())
    cli("fork", "general", "--specialize", "medicine")
    cli("commit", "--packet", str(repo_dir / "p1"), "-m", "med\n\nwhy: tests")
    cli("checkout", "general")
    cli("commit", "--packet", str(repo_dir / "p2"), "-m", "general work")
    commands = [
        ["log"],
        ["log", "--oneline", "--all"],
        ["log", "--graph", "--all"],
        ["log", "-n", "2"],
    ]
    before = [cli(*args).output for args in commands]
    _downgrade_to_v1(repo_dir / ".basin" / "basin.db")
    assert [cli(*args).output for args in commands] == before
    assert cli("verify").output.rstrip().endswith("ok")
    conn = sqlite3.connect(repo_dir / ".basin" / "basin.db")
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    conn.close()


def test_a_repository_turns_version_3_only_when_it_first_holds_a_shallow_commit(tmp_path):
    """Whole repositories stay at 2, which a basinvcs before shallow histories opens; the first
    shallow commit makes it 3 in the same transaction, so such a basinvcs refuses it instead of
    taking its history for whole."""
    db = tmp_path / "b.db"
    store = SQLiteStore.create(db)
    with pytest.raises(RuntimeError), store.transaction():
        store.mark_shallow([CID.for_block(b"x")])
        raise RuntimeError("undone")
    assert store._one("PRAGMA user_version") == (2,) and store.shallow_commits() == set()
    store.mark_shallow([CID.for_block(b"x")])
    store.close()
    again = SQLiteStore.open(db)
    assert again._one("PRAGMA user_version") == (3,)
    assert again.shallow_commits() == {str(CID.for_block(b"x"))}
    again._exec("DROP TABLE shallow")  # version 3 without its table: damaged
    again.close()
    with pytest.raises(RepositoryError, match="corrupt repository database .*schema version 3"):
        SQLiteStore.open(db)
