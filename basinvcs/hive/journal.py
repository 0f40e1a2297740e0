"""The coordinator's journal: every update it accepted or refused, each signer's last sequence
number, and the state that must survive a restart (the round, the outer optimiser's buffers).

A SQLite file beside the repository's database (`.basin/hive.db`, WAL). An update is journaled in
the same transaction that raises its signer's sequence number, so after a crash (kill -9 mid-round)
an accepted update is there and a replayed one is still refused; several may share a transaction
(`batch`: one sync to disk for all of them, none acknowledged before it commits). A round is closed
by marking its updates taken or refused in one transaction, after the head commit that records it
is written; the round's decision is stored first (state "closing"), and `Coordinator.recover`
finishes a round whose commit was written but not yet marked from it.

It also holds what quarantine.py judges by: per signer with a cohort, its updates (taken, or
refused as outliers) summed at unit norm with the cohort they were summed in (added in the
transaction that closes their round, so a restart counts none twice), and
the signers quarantined, with the round and why. `basin hive release` deletes a signer's rows
from another process while the coordinator runs; the coordinator sees it at its next request
(SQLite's data_version, one cheap query).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RepositoryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS updates (
    cid TEXT PRIMARY KEY, round INTEGER NOT NULL, author BLOB NOT NULL, seq INTEGER NOT NULL,
    data BLOB NOT NULL, received INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT
);
CREATE INDEX IF NOT EXISTS updates_round ON updates (round, status);
CREATE TABLE IF NOT EXISTS signers (author BLOB PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS directions (
    author BLOB PRIMARY KEY, cohort TEXT NOT NULL, total BLOB NOT NULL, count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quarantine (
    author BLOB PRIMARY KEY, round INTEGER NOT NULL, reason TEXT NOT NULL
);
"""

PENDING, TAKEN, REFUSED = "pending", "taken", "refused"
FORGOTTEN = "forgotten"  # state: the counts of updates deleted by close_round's forget_before


@dataclass(frozen=True)
class Journaled:
    cid: str
    round: int
    author: bytes
    seq: int
    data: bytes


class Journal:
    """The coordinator's durable state; one connection, used under a lock (the server is one
    process; its request handlers and the round timer share this object)."""

    def __init__(self, path: Path):
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before it returns, so an acknowledged update survives
            # power loss too. WAL with NORMAL would survive a crashed or killed process (kill -9:
            # the commit is in the OS's cache) but not an OS crash; with updates journaled in
            # batches (`batch`: one commit, one sync, per batch) FULL measured no slower
            # (scripts/bench/hive), so it stays.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RepositoryError(f"hive journal {path} is unusable: {exc}") from None
        self.path = path
        self._lock = threading.RLock()
        self._batch = False
        # inside a batch (which holds the write lock), the sequence numbers read or written in
        # it: `last_seq` and `accept` read each signer's once
        self._seqs: dict[bytes, int | None] = {}
        self._quarantined: tuple[int, dict[bytes, tuple[int, str]]] | None = None

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise RepositoryError(f"hive journal {self.path}: {exc}") from None

    def _run_many(self, sql: str, rows: list[tuple]) -> None:
        try:
            self._db.executemany(sql, rows)
        except sqlite3.DatabaseError as exc:
            raise RepositoryError(f"hive journal {self.path}: {exc}") from None

    # -- state

    def get(self, key: str, default: object = None) -> object:
        with self._lock:
            return self._state(key, default)

    def put(self, key: str, value: object) -> None:
        with self._lock:
            self._run(
                "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )

    # -- intake

    def last_seq(self, author: bytes) -> int | None:
        with self._lock:
            if self._batch and author in self._seqs:
                return self._seqs[author]
            rows = self._run("SELECT seq FROM signers WHERE author = ?", (author,))
            last = rows[0][0] if rows else None
            if self._batch:
                self._seqs[author] = last
            return last

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around several `accept`s (and nothing else): all of them are on disk
        when this ends, or none is (an error rolls every one back)."""
        with self._lock:
            if self._batch:
                raise RepositoryError("hive journal: a batch is open already")
            self._run("BEGIN IMMEDIATE")
            self._batch = True
            try:
                yield
                self._run("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.rollback()
                raise
            finally:
                self._batch = False
                self._seqs.clear()

    def accept(
        self,
        cid: str,
        round_: int,
        author: bytes,
        seq: int,
        data: bytes,
        opened: float | None = None,
    ) -> bool:
        """Journal an accepted update and raise its signer's sequence number, atomically; False
        if the sequence number is not above the last one (a replay raced past the check).
        `opened`: also store when the round opened (its first update), in the same transaction."""
        with self._lock:
            if self._batch:  # inside batch(): its transaction, committed when the batch ends
                return self._accept(cid, round_, author, seq, data, opened)
            self._run("BEGIN IMMEDIATE")
            try:
                if not self._accept(cid, round_, author, seq, data, opened):
                    self._run("ROLLBACK")
                    return False
                self._run("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._run("ROLLBACK")
                raise
        return True

    def spend(self, author: bytes, seq: int) -> None:
        """Raise a signer's sequence number to `seq` without journaling an update: a valid update
        refused for its round (one per signer) is spent, so nobody can replay its bytes into a
        later round. Inside `batch()`, in its transaction."""
        with self._lock:
            self._run(
                "INSERT INTO signers (author, seq) VALUES (?, ?)"
                " ON CONFLICT (author) DO UPDATE SET seq = max(seq, excluded.seq)",
                (author, seq),
            )
            self._seqs.pop(author, None)  # read again when asked

    def _accept(self, cid, round_, author, seq, data, opened) -> bool:
        last = self.last_seq(author)
        if last is not None and seq <= last:
            return False
        self._run("INSERT OR REPLACE INTO signers (author, seq) VALUES (?, ?)", (author, seq))
        if self._batch:
            self._seqs[author] = seq
        self._run(
            "INSERT INTO updates (cid, round, author, seq, data, received, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cid, round_, author, seq, data, int(time.time() * 1000), PENDING),
        )
        if opened is not None:
            self._run(
                "INSERT OR REPLACE INTO state (key, value) VALUES ('opened', ?)",
                (json.dumps(opened),),
            )
        return True

    def pending(self, round_: int) -> list[Journaled]:
        """The round's accepted updates not yet taken into a head, in arrival order."""
        with self._lock:
            rows = self._run(
                "SELECT cid, round, author, seq, data FROM updates"
                " WHERE round = ? AND status = ? ORDER BY received, cid",
                (round_, PENDING),
            )
        return [Journaled(c, r, bytes(a), s, bytes(d)) for c, r, a, s, d in rows]

    def count_pending(self, round_: int) -> int:
        with self._lock:
            return self._run(
                "SELECT count(*) FROM updates WHERE round = ? AND status = ?", (round_, PENDING)
            )[0][0]

    def close_round(
        self,
        round_: int,
        taken: list[str],
        refused: dict[str, str],
        state: dict[str, object],
        forget_before: int | None = None,
        directions: dict[bytes, tuple[str, np.ndarray]] | None = None,
    ) -> None:
        """Mark the round's updates taken or refused and store the next state, atomically.
        `forget_before`: also delete the updates of rounds before this one (all closed), adding
        them to the counts they leave (`counts` goes on including them); the signers' sequence
        numbers, which refuse replays, are never deleted. `directions`: per signer, its cohort
        and a unit vector to add to its summed direction there (one update more; a sum made in
        another cohort starts again)."""
        with self._lock:
            self._run("BEGIN IMMEDIATE")
            try:
                self._run_many(
                    "UPDATE updates SET status = ? WHERE cid = ?", [(TAKEN, cid) for cid in taken]
                )
                self._run_many(
                    "UPDATE updates SET status = ?, reason = ? WHERE cid = ?",
                    [(REFUSED, reason, cid) for cid, reason in refused.items()],
                )
                for author, (cohort, unit) in (directions or {}).items():
                    self._add_direction(author, cohort, unit)
                if forget_before is not None:
                    state = {**state, FORGOTTEN: self._forget(forget_before)}
                for key, value in state.items():
                    self._run(
                        "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                        (key, json.dumps(value)),
                    )
                self._run("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._run("ROLLBACK")
                raise

    def _add_direction(self, author: bytes, cohort: str, unit: np.ndarray) -> None:
        was, total, count = self._directions([author]).get(author, (cohort, 0.0, 0))
        if was != cohort:
            total, count = 0.0, 0
        self._run(
            "INSERT OR REPLACE INTO directions (author, cohort, total, count) VALUES (?, ?, ?, ?)",
            (author, cohort, np.asarray(total + unit, dtype="<f8").tobytes(), count + 1),
        )

    # -- quarantine

    def directions(self, authors: list[bytes]) -> dict[bytes, tuple[str, np.ndarray, int]]:
        """The cohort, summed direction and count of each of `authors` that has one."""
        with self._lock:
            return self._directions(authors)

    def _directions(self, authors: list[bytes]) -> dict[bytes, tuple[str, np.ndarray, int]]:
        out = {}
        for start in range(0, len(authors), 500):  # SQLite's limit on bound parameters
            part = authors[start : start + 500]
            rows = self._run(
                "SELECT author, cohort, total, count FROM directions WHERE author IN "
                f"({', '.join('?' * len(part))})",
                tuple(part),
            )
            out.update({a: (c, np.frombuffer(t, dtype="<f8").copy(), n) for a, c, t, n in rows})
        return out

    def quarantine(self, author: bytes, round_: int, reason: str) -> None:
        with self._lock:
            self._run(
                "INSERT OR REPLACE INTO quarantine (author, round, reason) VALUES (?, ?, ?)",
                (author, round_, reason),
            )
            if self._quarantined is not None:
                self._quarantined[1][author] = (round_, reason)

    def quarantined(self) -> dict[bytes, tuple[int, str]]:
        """Signer -> (round, why) of every quarantined signer; read again only when another
        connection (`basin hive release`) has changed the journal since."""
        with self._lock:
            if self._batch and self._quarantined is not None:
                return self._quarantined[1]  # a batch holds the write lock: no one else wrote
            version = self._run("PRAGMA data_version")[0][0]
            if self._quarantined is None or self._quarantined[0] != version:
                rows = self._run("SELECT author, round, reason FROM quarantine")
                self._quarantined = (version, {a: (r, why) for a, r, why in rows})
            return self._quarantined[1]

    def release(self, author: bytes) -> bool:
        """Lift `author`'s quarantine and start its summed direction again; False, and nothing
        changed, if it was not quarantined."""
        with self._lock:
            self._run("BEGIN IMMEDIATE")
            try:
                held = bool(self._run("SELECT 1 FROM quarantine WHERE author = ?", (author,)))
                if held:
                    self._run("DELETE FROM quarantine WHERE author = ?", (author,))
                    self._run("DELETE FROM directions WHERE author = ?", (author,))
                self._run("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._run("ROLLBACK")
                raise
            if self._quarantined is not None:
                self._quarantined[1].pop(author, None)
            return held

    def _forget(self, before: int) -> dict[str, int]:
        """Delete the updates of rounds before `before`; the counts forgotten so far, these
        included (inside close_round's transaction)."""
        forgotten = {TAKEN: 0, REFUSED: 0, **self._state(FORGOTTEN, {})}
        rows = self._run(
            "SELECT status, count(*) FROM updates WHERE round < ? AND status != ? GROUP BY status",
            (before, PENDING),
        )
        for status, n in rows:
            forgotten[status] = forgotten.get(status, 0) + n
        self._run("DELETE FROM updates WHERE round < ? AND status != ?", (before, PENDING))
        return forgotten

    def _state(self, key: str, default: object) -> object:
        rows = self._run("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def history(
        self, since: int = 0, page: int = 1000
    ) -> Iterator[tuple[bytes, int, str, str | None, bytes]]:
        """(author, round, status, why refused or None, record) of every update held from round
        `since` on, by round and arrival (the rounds `close_round` forgot are gone). Read `page`
        rows at a time, each page under the lock, so a long journal is never all in memory and a
        running coordinator in this process is not held up; rows written meanwhile after the
        reader's place are read too."""
        after: tuple = (since, -1, "")
        while True:
            with self._lock:
                rows = self._run(
                    "SELECT author, round, status, reason, data, received, cid FROM updates"
                    " WHERE round >= ? AND (round, received, cid) > (?, ?, ?)"
                    " ORDER BY round, received, cid LIMIT ?",
                    (since, *after, page),
                )
            for a, r, s, why, d, _, _ in rows:
                yield bytes(a), r, s, why, bytes(d)
            if len(rows) < page:
                return
            after = rows[-1][1], rows[-1][5], rows[-1][6]

    def held(self, since: int = 0) -> int:
        """How many updates `history(since)` would yield (for a progress bar's total)."""
        with self._lock:
            return self._run("SELECT count(*) FROM updates WHERE round >= ?", (since,))[0][0]

    def counts(self) -> dict[str, int]:
        """Updates journaled, by status, those forgotten (close_round's `forget_before`)
        included: every status present, 0 where there are none."""
        with self._lock:
            rows = self._run("SELECT status, count(*) FROM updates GROUP BY status")
            out = {PENDING: 0, TAKEN: 0, REFUSED: 0}
            for status, n in [*rows, *self._state(FORGOTTEN, {}).items()]:
                out[status] = out.get(status, 0) + n
        return out
