import sqlite3

import pytest

from basinvcs.codec import dagcbor
from basinvcs.errors import (
    HashMismatch,
    RepositoryError,
)
from basinvcs.store.sqlite import SQLiteStore


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
