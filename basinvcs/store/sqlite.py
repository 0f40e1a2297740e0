"""The embedded store: one SQLite database (WAL) with blocks, refs, the reflog and a commit graph.

Refs change only by compare-and-swap inside an IMMEDIATE transaction, so two writers serialise and
neither loses an update; the commit graph (per commit: parents, time, author, message) is a derived
index, like git's commit-graph file, that lets `log` list history without reading a block.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..cid import CID, DAG_CBOR
from ..codec import dagcbor
from ..errors import BasinError, BlockNotFound, RepositoryError
from .base import IndexEntry, Ref, ReflogEntry, Store, check_block, walk_entries

SCHEMA_VERSION = 2  # 1: the commit index held only times (opening one upgrades it)
# 3: a shallow repository, which holds commits whose parents it lacks (table `shallow`). Only a
# repository that holds such a commit is 3, from the transaction that writes the first one: a
# basinvcs that predates them refuses to open it (a newer schema) rather than push or export a
# history it would take for whole; every other repository stays at 2 and opens in both.
SHALLOW_VERSION = 3
_TABLES = ("blocks", "refs", "reflog", "commits", "commit_parents")
_SHALLOW = "CREATE TABLE IF NOT EXISTS shallow (cid TEXT PRIMARY KEY) WITHOUT ROWID"
_SCHEMA = """
CREATE TABLE blocks (cid TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE refs (name TEXT PRIMARY KEY, target TEXT NOT NULL, symbolic INTEGER NOT NULL);
CREATE TABLE reflog (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, old TEXT, new TEXT, time INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX reflog_name ON reflog (name, id);
CREATE TABLE commits (
    cid TEXT PRIMARY KEY, time INTEGER NOT NULL, {columns}
) WITHOUT ROWID;
CREATE TABLE commit_parents (
    child TEXT NOT NULL, idx INTEGER NOT NULL, parent TEXT NOT NULL, PRIMARY KEY (child, idx)
) WITHOUT ROWID;
"""
# What version 2 added to `commits` (version 1 databases get them by ALTER TABLE when opened):
# the parent CIDs in order, separated by spaces (commit_parents holds them one a row, for graph
# queries; this copy lets a walk read a commit in one row), the author's key and the message.
_V2_COLUMNS = (
    "parents TEXT NOT NULL DEFAULT ''",
    "author BLOB NOT NULL DEFAULT x''",
    "message TEXT NOT NULL DEFAULT ''",
)
_SCHEMA = _SCHEMA.format(columns=", ".join(_V2_COLUMNS))
_ENTRY = "SELECT cid, parents, time, author, message FROM commits"
# A walk bounded to at most this many commits looks each one up; a longer one reads the whole
# index in one scan (~0.6 us a commit against ~4 us a lookup), as git reads its commit-graph file.
_LOOKUPS_UP_TO = 1000


class SQLiteStore(Store):
    """Blocks, refs, reflog and the commit-graph index in one SQLite file.

    Safe to share between threads (a server's workers): each thread gets its own connection, so
    each has its own transactions; SQLite serialises writers (IMMEDIATE transactions, waiting up
    to 60 s for the lock) and refs move only by compare-and-swap inside them.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.path = path
        self.location = str(path)
        self._local = threading.local()
        self._local.db, self._local.depth = conn, 0
        self._all = [conn]
        self._guard = threading.Lock()

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = _connect(self.path, "rw")
            self._local.depth = 0
            with self._guard:
                self._all.append(db)
        return db

    @property
    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @_depth.setter
    def _depth(self, value: int) -> None:
        self._local.depth = value

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path) -> SQLiteStore:
        if path.exists():
            raise RepositoryError(f"{path} already exists")
        conn = _connect(path, "rwc")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
        return cls(conn, path)

    @classmethod
    def open(cls, path: Path) -> SQLiteStore:
        if not path.is_file():
            raise RepositoryError(f"no block database at {path}")
        conn = _connect(path, "rw")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.DatabaseError as exc:
            raise RepositoryError(f"corrupt repository database {path}: {exc}") from None
        if version > SHALLOW_VERSION:
            raise RepositoryError(
                f"repository database {path} has schema version {version}, newer than this "
                f"basinvcs reads ({SHALLOW_VERSION}): upgrade basinvcs"
            )
        if version == 1 and set(_TABLES) <= tables:
            _upgrade_v1(conn, path)
            version = SCHEMA_VERSION
        whole = set(_TABLES) | ({"shallow"} if version == SHALLOW_VERSION else set())
        if version not in (SCHEMA_VERSION, SHALLOW_VERSION) or not whole <= tables:
            raise RepositoryError(
                f"corrupt repository database {path}: schema version {version}, "
                f"tables {sorted(tables)}"
            )
        return cls(conn, path)

    def close(self) -> None:
        with self._guard:
            for db in self._all:
                db.close()
            self._all.clear()

    def _begin(self) -> None:
        self._exec("BEGIN IMMEDIATE")  # the write lock now: two writers serialise, none loses

    def _commit(self) -> None:
        self._exec("COMMIT")

    def _rollback(self) -> None:
        self._db.execute("ROLLBACK")

    def _exec(self, sql: str, params: Sequence = (), *, many: bool = False) -> list[tuple]:
        """Run `sql` and fetch every row inside the error handling: a damaged page surfaces while
        rows are read, not only when the statement starts."""
        try:
            if many:
                self._db.executemany(sql, params)
                return []
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise RepositoryError(f"repository database {self.path} is damaged: {exc}") from None

    def _one(self, sql: str, params: Sequence = ()) -> tuple | None:
        rows = self._exec(sql, params)
        return rows[0] if rows else None

    def check_integrity(self) -> str | None:
        """SQLite's own structural check of the database file: None if sound, else its finding."""
        try:
            rows = self._exec("PRAGMA quick_check")
        except RepositoryError as exc:  # damage bad enough that the check itself cannot finish
            return str(exc)
        if rows == [("ok",)]:
            return None
        lines = [ln for r in rows for ln in str(r[0]).splitlines() if not ln.startswith("***")]
        more = f" (and {len(lines) - 1} more findings)" if len(lines) > 1 else ""
        return f"{lines[0] if lines else 'unknown damage'}{more}"

    # -- blocks -------------------------------------------------------------------------------

    def put(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        check_block(data, codec)
        cid = CID.for_block(data, codec)
        self._exec("INSERT OR IGNORE INTO blocks (cid, data) VALUES (?, ?)", (str(cid), data))
        return cid

    def get(self, cid: CID) -> bytes:
        row = self._one("SELECT data FROM blocks WHERE cid = ?", (str(cid),))
        if row is None:
            raise BlockNotFound(f"block {cid} not found", subject=cid)
        data = bytes(row[0])
        cid.verify(data)
        return data

    def has(self, cid: CID) -> bool:
        return self._one("SELECT 1 FROM blocks WHERE cid = ?", (str(cid),)) is not None

    def size(self, cid: CID) -> int:
        row = self._one("SELECT length(data) FROM blocks WHERE cid = ?", (str(cid),))
        if row is None:
            raise BlockNotFound(f"block {cid} not found", subject=cid)
        return row[0]

    def match_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """CIDs (as text) starting with `prefix`, at most `limit` of them."""
        rows = self._exec(
            "SELECT cid FROM blocks WHERE cid >= ? AND cid < ? ORDER BY cid LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit),
        )
        return [r[0] for r in rows]

    # -- commit graph -------------------------------------------------------------------------

    def index_commit(
        self, cid: CID, parents: Sequence[CID], time_ms: int, author: bytes, message: str
    ) -> None:
        text = str(cid)
        self._exec(
            "INSERT OR IGNORE INTO commits (cid, time, parents, author, message)"
            " VALUES (?, ?, ?, ?, ?)",
            (text, time_ms, " ".join(map(str, parents)), bytes(author), message),
        )
        self._exec(
            "INSERT OR IGNORE INTO commit_parents (child, idx, parent) VALUES (?, ?, ?)",
            [(text, i, str(p)) for i, p in enumerate(parents)],
            many=True,
        )

    def index_entry(self, cid: CID) -> IndexEntry | None:
        return self._entry(str(cid))

    def _entry(self, text: str) -> IndexEntry | None:
        row = self._one(_ENTRY + " WHERE cid = ?", (text,))
        return _as_entry(row) if row else None

    def walk_index(self, heads: Sequence[CID], limit: int = -1) -> Iterator[IndexEntry]:
        """Newest first (children before parents), from the index alone: no block is read."""
        texts = [str(h) for h in heads]
        if 0 <= limit <= _LOOKUPS_UP_TO:
            return walk_entries(texts, self._entry, limit)
        make = tuple.__new__  # IndexEntry's own __new__ is Python code: a third of the time
        index = {
            c: make(IndexEntry, (c, tuple(p.split()), t, a, m))
            for c, p, t, a, m in self._exec(_ENTRY)
        }
        return walk_entries(texts, index.get, limit)

    def commit_edges(self) -> list[tuple[str, str]]:
        """Every (child, parent) edge in the commit graph."""
        return self._exec("SELECT child, parent FROM commit_parents")

    def is_indexed_commit(self, cid: CID) -> bool:
        """Whether `cid` was recorded as a commit (only strictly validated commits are)."""
        return self._one("SELECT 1 FROM commits WHERE cid = ?", (str(cid),)) is not None

    def mark_shallow(self, cids: Iterable[CID]) -> None:
        rows = [(str(c),) for c in cids]
        if not rows:
            return
        with self.transaction():  # the table and the version move with the rows, or not at all
            self._exec(_SHALLOW)
            self._exec("INSERT OR IGNORE INTO shallow (cid) VALUES (?)", rows, many=True)
            self._exec(f"PRAGMA user_version = {SHALLOW_VERSION}")

    def unmark_shallow(self, cids: Iterable[str]) -> None:
        rows = [(c,) for c in cids]
        if not rows or self._one("PRAGMA user_version") != (SHALLOW_VERSION,):
            return
        with self.transaction():
            self._exec("DELETE FROM shallow WHERE cid = ?", rows, many=True)
            if self._one("SELECT 1 FROM shallow LIMIT 1") is None:  # whole again: version 2
                self._exec("DROP TABLE shallow")
                self._exec(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def shallow_commits(self) -> set[str]:
        if self._one("PRAGMA user_version") != (SHALLOW_VERSION,):
            return set()
        return {r[0] for r in self._exec("SELECT cid FROM shallow")}

    def indexed_commits(self) -> dict[str, int]:
        return dict(self._exec("SELECT cid, time FROM commits"))

    def indexed_parents(self, cid: CID) -> list[str]:
        rows = self._exec(
            "SELECT parent FROM commit_parents WHERE child = ? ORDER BY idx", (str(cid),)
        )
        return [r[0] for r in rows]

    # -- refs ---------------------------------------------------------------------------------

    def read_ref(self, name: str) -> Ref | None:
        row = self._one("SELECT target, symbolic FROM refs WHERE name = ?", (name,))
        return Ref(name, row[0], bool(row[1])) if row else None

    def list_refs(self, prefix: str = "refs/") -> list[Ref]:
        rows = self._exec(
            "SELECT name, target, symbolic FROM refs WHERE name >= ? AND name < ? ORDER BY name",
            (prefix, prefix + "\U0010ffff"),
        )
        return [Ref(n, t, bool(s)) for n, t, s in rows]

    def _write_ref(self, name: str, new: str | None, symbolic: bool) -> None:
        if new is None:
            self._exec("DELETE FROM refs WHERE name = ?", (name,))
        else:
            self._exec(
                "INSERT OR REPLACE INTO refs (name, target, symbolic) VALUES (?, ?, ?)",
                (name, new, int(symbolic)),
            )

    def append_reflog(self, name: str, old: str | None, new: str | None, message: str) -> None:
        self._exec(
            "INSERT INTO reflog (name, old, new, time, message) VALUES (?, ?, ?, ?, ?)",
            (name, old, new, int(time.time() * 1000), message),
        )

    def reflog(self, name: str, limit: int = -1) -> list[ReflogEntry]:
        rows = self._exec(
            "SELECT name, old, new, time, message FROM reflog"
            " WHERE name = ? ORDER BY id DESC LIMIT ?",
            (name, limit),
        )
        return [ReflogEntry(n, o, w, t / 1000, m) for n, o, w, t, m in rows]


def _as_entry(row: tuple) -> IndexEntry:
    cid, parents, time_ms, author, message = row
    return IndexEntry(cid, tuple(parents.split()), time_ms, author, message)


def _upgrade_v1(conn: sqlite3.Connection, path: Path) -> None:
    """Version 1 -> 2, in one IMMEDIATE transaction (a concurrent opener waits, then finds it
    done): add `commits`' new columns and fill them in, the parents from `commit_parents`, the
    author and message from each commit's block. A block that is missing or does not hash to its
    CID leaves them empty, and `verify` reports the commit."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 1:
                for column in _V2_COLUMNS:
                    conn.execute(f"ALTER TABLE commits ADD COLUMN {column}")
                parents: dict[str, list[str]] = {}
                for child, parent in conn.execute(
                    "SELECT child, parent FROM commit_parents ORDER BY child, idx"
                ):
                    parents.setdefault(child, []).append(parent)
                rows = conn.execute(
                    "SELECT commits.cid, blocks.data FROM commits"
                    " LEFT JOIN blocks ON blocks.cid = commits.cid"
                ).fetchall()
                conn.executemany(
                    "UPDATE commits SET parents = ?, author = ?, message = ? WHERE cid = ?",
                    [
                        (" ".join(parents.get(cid, ())), *_author_and_message(cid, data), cid)
                        for cid, data in rows
                    ],
                )
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise RepositoryError(
            f"cannot upgrade repository database {path} to schema version {SCHEMA_VERSION}: {exc}"
        ) from None


def _author_and_message(cid: str, data: bytes | None) -> tuple[bytes, str]:
    """A commit block's author and message, read after the hash check; empty if it fails."""
    try:
        if data is not None:
            CID.parse(cid).verify(data)
            node = dagcbor.decode_trusted(data)
            author, message = node["author"], node["message"]
            if isinstance(author, bytes) and isinstance(message, str):
                return author, message
    except (BasinError, KeyError, TypeError):
        pass
    return b"", ""


def _connect(path: Path, mode: str) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            timeout=60,
            check_same_thread=False,  # one thread uses it; whichever closes the store closes it
        )
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
    except sqlite3.OperationalError as exc:
        raise RepositoryError(f"cannot open repository database {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise RepositoryError(f"corrupt repository database {path}: {exc}") from None
    return conn
