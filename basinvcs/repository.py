"""A basin repository: a store (blocks, refs, reflog, commit-graph index), its config and the
identity that signs for it; on disk, `.basin/` with the block database and the config.

`Repository` is the one way in: the operations in `porcelain`, `remote`, `ingest`, `carfile` and
the CLI read and write objects, read and move refs, walk history and resolve revisions through
it, never through the store beneath. It never decides policy (what to commit, what to refuse);
that is porcelain's job. The store is any `store.base.Store`: SQLite on disk, memory in tests.

Threads: a repository on SQLite may be shared by a server's worker threads. Each thread gets its
own database connection and transactions; refs move only by compare-and-swap, so two threads
racing for a branch get one success and one RefConflict; config changes are saved under a lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TypeVar

from .cid import CID, DAG_CBOR
from .config import CONFIG_FILE, Config, load_config, save_config
from .errors import BasinError, BlockNotFound, RefError, RepositoryError, SchemaError
from .identity import Identity, require_identity
from .objects import Basin, Commit, RoundRecord
from .refnames import HEAD, HEADS, REMOTES, TAGS, branch_ref, check_branch_name, shown
from .store.base import IndexEntry, Ref, ReflogEntry, Store
from .store.memory import MemoryStore
from .store.sqlite import SQLiteStore

# who signs: an identity, or a loader called the first time one is needed (the CLI's reads the
# user's identity file, so commands that sign nothing never need one)
IdentitySource = Identity | Callable[[], Identity]

BASIN_DIR = ".basin"
DB_FILE = "basin.db"
_REV_SUFFIX = re.compile(r"(\^\d*|~\d*)$")
MAX_REV_CHARS = 1024  # a name of at most 255 bytes and plenty of ~N^N
_REFLOG_REV = re.compile(r"(.*)@\{(\d+)\}", re.S)  # NAME@{N}, @{N}: the N-th reflog entry
MIN_PREFIX = 8


def _stamp(basin_dir: Path | None) -> tuple[int, int, int] | None:
    """What tells a config file from the one read before: inode, size, modification time (a
    save replaces the file, so the inode changes even within one clock tick)."""
    if basin_dir is None:
        return None
    try:
        st = os.stat(basin_dir / CONFIG_FILE)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def find_basin_dir(start: Path | None = None) -> Path:
    """$BASIN_DIR if set, else the nearest `.basin/` at or above `start` (default: cwd)."""
    if env := os.environ.get("BASIN_DIR"):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / BASIN_DIR).is_dir():
            return candidate / BASIN_DIR
    raise RepositoryError(f"not a basin repository (or any parent up to /): {here}")


T = TypeVar("T")


CONFIG_WAIT = 30.0  # seconds a config change waits for another process's to finish


@contextmanager
def _flocked(directory: Path, wait: float = CONFIG_WAIT) -> Iterator[None]:
    """An exclusive flock on `directory` itself (no lock file to leave behind), released with
    the process, kill -9 included; refused after `wait` seconds (a change takes milliseconds:
    one held longer is a process stopped, or a second lock taken in the same process)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise RepositoryError(
                        f"{directory}'s config is being changed by another process (waited "
                        f"{wait:g} s): not changed"
                    ) from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)


class Repository:
    """Objects, refs, history and config of one repository."""

    def __init__(
        self,
        store: Store,
        config: Config,
        basin_dir: Path | None = None,
        identity: IdentitySource | None = None,
    ):
        self._store = store
        self.config = config
        self.basin_dir = basin_dir
        self._identity = identity
        self._config_lock = threading.RLock()  # refresh_trust may run inside a change
        self._changing = False
        self._config_stamp = _stamp(basin_dir)

    @classmethod
    def open(
        cls, path: Path | str | None = None, *, identity: IdentitySource = require_identity
    ) -> Repository:
        """The repository at or above `path`; `identity` signs for it (default: the user's,
        read from the identity file the first time something is signed)."""
        basin_dir = find_basin_dir(Path(path) if path is not None else None)
        if not (basin_dir / DB_FILE).is_file():
            raise RepositoryError(f"{basin_dir} is not a basin repository: it has no {DB_FILE}")
        store = SQLiteStore.open(basin_dir / DB_FILE)
        stamp = _stamp(basin_dir)  # before reading: a change in between is read again later
        repo = cls(store, load_config(basin_dir), basin_dir, identity)
        repo._config_stamp = stamp
        return repo

    @classmethod
    def create(
        cls, root: Path, config: Config, *, identity: IdentitySource = require_identity
    ) -> Repository:
        basin_dir = root / BASIN_DIR
        if basin_dir.exists():
            raise RepositoryError(f"{basin_dir} already exists: this is a repository already")
        try:
            basin_dir.mkdir(parents=True)
        except OSError as exc:
            raise RepositoryError(f"cannot create {basin_dir}: {exc.strerror}") from None
        try:
            save_config(basin_dir, config)
            store = SQLiteStore.create(basin_dir / DB_FILE)
        except BaseException:
            for leftover in basin_dir.iterdir():
                leftover.unlink()
            basin_dir.rmdir()
            raise
        return cls(store, config, basin_dir, identity)

    @classmethod
    def in_memory(cls, config: Config, identity: IdentitySource | None = None) -> Repository:
        """A repository that lives in memory only (tests, scratch work); its config is not saved."""
        return cls(MemoryStore(), config, None, identity)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def location(self) -> str:
        """Where the repository's data lives, for messages."""
        return self._store.location

    def change_config(self, change: Callable[[Config], T]) -> T:
        """Apply `change` to the config as its file holds it now and save the result, holding a
        lock other processes take too (flock on `.basin`): two commands changing the config at
        once (`basin key remove` beside `basin key add`, or beside a pull saving its state) each
        keep the other's change, where writing back what each read when it opened lost one.
        `change` may raise: nothing is saved. This repository's config becomes what was saved;
        what `change` returns is returned. A change inside a change is refused (the inner one
        would be lost when the outer one saves)."""
        if self.basin_dir is None:
            return change(self.config)
        with self._config_lock:
            if self._changing:
                raise RepositoryError("a config change inside another: not changed")
            self._changing = True
            try:
                with _flocked(self.basin_dir):
                    fresh = load_config(self.basin_dir)
                    if fresh.chart != self.config.chart:
                        raise RepositoryError(
                            f"{self.basin_dir / CONFIG_FILE} now names another chart: not changed"
                        )
                    out = change(fresh)
                    save_config(self.basin_dir, fresh)
                    self._config_stamp = _stamp(self.basin_dir)
            finally:
                self._changing = False
            for f in fields(Config):  # in place: whoever holds this config sees the change
                setattr(self.config, f.name, getattr(fresh, f.name))
            return out

    def refresh_trust(self) -> bool:
        """Take up the trusted signers of the config file if another process changed it since
        it was read (`basin key add` or `remove` beside a running coordinator, which must not
        need a restart to stop a signer); True if the file was read again. Only the trust list
        is taken: the rest of a running repository's config stays as it was opened. A file that
        is unusable, or names another chart, raises RepositoryError once and leaves the list as
        it was (until the file changes again)."""
        if self.basin_dir is None:
            return False
        with self._config_lock:
            stamp = _stamp(self.basin_dir)
            if stamp == self._config_stamp:
                return False
            self._config_stamp = stamp
            fresh = load_config(self.basin_dir)
            if fresh.chart != self.config.chart:
                raise RepositoryError(
                    f"{self.basin_dir / CONFIG_FILE} now names another chart: its trusted "
                    "signers are not taken up"
                )
            self.config.trusted = fresh.trusted
            return True

    def identity(self) -> Identity:
        """Who signs this repository's new commits and records, as given when it was opened."""
        if self._identity is None:
            raise RepositoryError("no signing identity was given to this repository")
        if callable(self._identity):
            self._identity = self._identity()
        return self._identity

    def transaction(self) -> AbstractContextManager[None]:
        """Every change inside (blocks, refs, index) happens, or none does."""
        return self._store.transaction()

    def check_integrity(self) -> str | None:
        return self._store.check_integrity()

    # -- blocks -------------------------------------------------------------------------------

    def get_block(self, cid: CID) -> bytes:
        """A block's bytes, re-hashed against `cid`."""
        return self._store.get(cid)

    def put_block(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        """Store any valid block (not indexed as history: `write_commit` does that)."""
        return self._store.put(data, codec)

    def has_block(self, cid: CID) -> bool:
        return self._store.has(cid)

    def block_size(self, cid: CID) -> int:
        return self._store.size(cid)

    # -- objects ------------------------------------------------------------------------------

    def is_commit(self, cid: CID) -> bool:
        """Whether `cid` is a commit of this repository's history (validated when written)."""
        return self._store.is_indexed_commit(cid)

    def read_commit(self, cid: CID) -> Commit:
        """A commit of this repository's history (one in the commit-graph index).

        Indexed commits were validated strictly when written, so after the hash check they are
        decoded on the fast path; any other block is decoded strictly and, even when it is a valid
        commit (stored with `dag put`, say), refused: history only grows through validated writes.
        """
        try:
            data = self._store.get(cid)
        except BlockNotFound:
            if self.shallow_marks():  # most likely below where the history held starts
                raise BlockNotFound(
                    f"commit {cid} is not here: this repository holds the history only from "
                    "where it was joined with --depth",
                    subject=cid,
                ) from None
            raise
        if self._store.is_indexed_commit(cid):
            return Commit.decode(data, trusted=True)
        try:
            Commit.decode(data)
        except BasinError as exc:
            raise SchemaError(f"{cid} is not a valid commit: {exc}") from None
        raise RefError(f"{cid} is a commit block but not part of this repository's history")

    def read_basin(self, cid: CID) -> Basin:
        data = self._store.get(cid)
        try:
            return Basin.decode(data, trusted=True)
        except SchemaError as exc:
            raise SchemaError(f"{cid} is not a valid basin packet: {exc}") from None

    def write_basin(self, basin: Basin) -> CID:
        return self._store.put(basin.encode())

    def read_record(self, cid: CID) -> RoundRecord:
        """A round record a commit links (validated when it came in, checked again: rare)."""
        data = self._store.get(cid)
        try:
            return RoundRecord.decode(data)
        except SchemaError as exc:
            raise SchemaError(f"{cid} is not a valid round record: {exc}") from None

    def write_record(self, record: RoundRecord) -> CID:
        return self._store.put(record.encode())

    def write_commit(self, commit: Commit) -> CID:
        """Store a signed commit whose basin and parents are already stored, and index it."""
        data = commit.encode()
        self.add_history([], [(CID.for_block(data), commit, data)])
        return CID.for_block(data)

    def add_history(
        self,
        packets: Sequence[tuple[CID, bytes]],
        commits: Sequence[tuple[CID, Commit, bytes]],
        *,
        linked: bool = True,
        shallow: Collection[CID] = (),
    ) -> None:
        """Store packets and commits validated elsewhere (`ingest`), in any order, and index
        the commits, in one transaction; refused if any commit links a block still missing.
        `linked=False` leaves that check to the caller (`check_links` once every batch of a
        history written newest first, in the caller's transaction, is in). `shallow`: commits
        of these whose parents may be missing (a history fetched to a depth starts there)."""
        with self._store.transaction():
            for cid, data in packets:
                if self._store.put(data) != cid:  # cannot happen: the source re-hashed it
                    raise SchemaError(f"block {cid} changed on the way in")
            for cid, commit, data in commits:
                if self._store.put(data) != cid:
                    raise SchemaError(f"block {cid} changed on the way in")
                self._store.index_commit(
                    cid, commit.parents, commit.time, commit.author, commit.message
                )
            self._store.mark_shallow(shallow)
            self._settle_shallow()
            if linked:
                self.check_links(
                    needed
                    for cid, c, _ in commits
                    for needed in (*c.attached, *(() if cid in shallow else c.parents))
                )

    def check_links(self, needed: Iterable[CID]) -> None:
        """Refuse (SchemaError) unless every block in `needed` is here: what a commit links."""
        for cid in needed:
            if not self._store.has(cid):
                raise SchemaError(f"commit links {cid}, which is not in the repository")

    # -- history ------------------------------------------------------------------------------

    def log_entries(self, heads: Sequence[CID], limit: int = -1) -> Iterator[IndexEntry]:
        """Commits reachable from `heads`, newest first (a child before its parents), as the
        commit-graph index holds them (parents, time, author, message); at most `limit` (-1: all).
        The one history walk: `walk` and `walk_blocks` add each commit's block, re-hashed. No
        block is read here, as `git log` reads its commit-graph file: `verify` checks the index
        against the blocks, and everything that reads a commit's content reads the block."""
        return self._store.walk_index(heads, limit)

    def index_entry(self, cid: CID) -> IndexEntry | None:
        """What the commit-graph index holds for `cid` (None: not a commit of the history)."""
        return self._store.index_entry(cid)

    def walk(self, heads: Sequence[CID], limit: int = -1) -> Iterator[tuple[CID, Commit]]:
        """`log_entries`' commits, in its order, each block re-hashed and decoded (push, export,
        and whatever needs the commits themselves)."""
        for cid, data in self.walk_blocks(heads, limit):
            yield cid, Commit.decode(data, trusted=True)

    def walk_blocks(self, heads: Sequence[CID], limit: int = -1) -> Iterator[tuple[CID, bytes]]:
        """`walk`, yielding each commit's block as stored (for CAR files and pushes)."""
        return self._store.walk_commits(heads, limit)

    def parents(self, cid: CID) -> list[str]:
        """A commit's parents as the commit-graph index holds them."""
        return self._store.indexed_parents(cid)

    def commit_times(self) -> dict[str, int]:
        """Every commit of the history (as text) with its time in milliseconds."""
        return self._store.indexed_commits()

    def commit_edges(self) -> list[tuple[str, str]]:
        return self._store.commit_edges()

    def shallow(self) -> set[CID]:
        """Commits held without their parents (`add_history`'s `shallow`): where the history
        this repository holds starts. Empty for a whole history. (A row that is not a CID is
        left out here; `verify` reports it.)"""
        out = set()
        for text in self.shallow_marks():
            try:
                out.add(CID.parse(text))
            except BasinError:
                continue
        return out

    def shallow_marks(self) -> set[str]:
        """The shallow marks as stored, as text (`verify` checks each names such a commit)."""
        return self._store.shallow_commits()

    def _settle_shallow(self) -> None:
        """Forget the shallow marks of commits whose parents are all held now (a deeper join,
        an import of the rest): the history below them is walked, checked and sent again."""
        marks = self.shallow()
        if marks:
            self._store.unmark_shallow(str(c) for c in marks if self.parents_held(c))

    def parents_held(self, cid: CID) -> bool:
        """Whether every parent of the indexed commit `cid` is a commit held here (a shallow
        mark on such a commit is stale)."""
        return all(self._store.is_indexed_commit(CID.parse(p)) for p in self.parents(cid))

    def require_whole(self, heads: Sequence[CID], doing: str) -> None:
        """Refuse (RepositoryError) to `doing` (push, export) a history below `heads` that this
        repository holds only from a shallow commit: the receiver would get commits whose
        parents nobody sent."""
        shallow = self.shallow_marks()
        if not shallow:
            return
        for entry in self.log_entries(heads):
            if entry.cid in shallow:
                raise RepositoryError(
                    f"cannot {doing}: this repository holds the history only from commit "
                    f"{entry.cid} (joined with --depth), not its parents"
                )

    # -- refs ---------------------------------------------------------------------------------

    def ref(self, name: str) -> Ref | None:
        return self._store.read_ref(name)

    def refs(self, prefix: str = "refs/") -> list[Ref]:
        return self._store.list_refs(prefix)

    def set_ref(
        self,
        name: str,
        new: CID | str | None,
        expected: CID | str | None,
        message: str,
        *,
        symbolic: bool = False,
    ) -> None:
        """Compare-and-swap: `name` becomes `new` (None deletes it) if it holds `expected`."""
        self._store.set_if_equals(
            name,
            None if new is None else str(new),
            None if expected is None else str(expected),
            message,
            symbolic=symbolic,
        )

    def reflog(self, name: str, limit: int = -1) -> list[ReflogEntry]:
        return self._store.reflog(name, limit)

    def head(self) -> Ref:
        ref = self._store.read_ref(HEAD)
        if ref is None:
            raise RepositoryError("repository has no HEAD")
        return ref

    def current_branch(self) -> str | None:
        """The full ref HEAD points at, or None when HEAD is detached."""
        head = self.head()
        return head.target if head.symbolic else None

    def head_commit(self) -> CID:
        head = self.head()
        if not head.symbolic:
            return CID.parse(head.target)
        branch = self._store.read_ref(head.target)
        if branch is None:
            raise RefError(f"HEAD points at {head.target}, which does not exist")
        return CID.parse(branch.target)

    def branch_commit(self, name: str) -> CID | None:
        ref = self._store.read_ref(branch_ref(name))
        return CID.parse(ref.target) if ref else None

    def branches(self) -> list[tuple[str, CID]]:
        return [(r.name[len(HEADS) :], CID.parse(r.target)) for r in self._store.list_refs(HEADS)]

    def resolve(self, rev: str) -> CID:
        """A revision to a CID: HEAD (or @), tag, branch, full ref, reflog entry NAME@{N} / @{N},
        CID or unique CID prefix, with ~N / ^N (docs/cli.md#revisions)."""
        if len(rev) > MAX_REV_CHARS:
            raise RefError(f"revision {shown(rev)} is longer than {MAX_REV_CHARS} characters")
        steps: list[tuple[str, int]] = []  # innermost first, read off the end (no recursion)
        name = rev
        while (match := _REV_SUFFIX.search(name)) and match.start() > 0:
            num = match.group(1)[1:]
            n = int(num) if num else 1  # beyond any history, whatever the digits:
            steps.append((match.group(1)[0], n if len(num) < 19 else 1 << 63))
            name = name[: match.start()]
        base = self._resolve_name(name)
        for op, n in reversed(steps):
            if op == "~":
                for _ in range(n):  # ends at the root commit at the latest
                    base = self._parent(base, 1, rev)
            elif n:
                base = self._parent(base, n, rev)
        return base

    def _parent(self, cid: CID, n: int, rev: str) -> CID:
        parents = self.read_commit(cid).parents
        if len(parents) < n:
            raise RefError(f"revision {shown(rev)}: {cid} has no parent number {n}")
        return parents[n - 1]

    def _resolve_name(self, rev: str) -> CID:
        if not rev:
            raise RefError("empty revision")
        if rev in (HEAD, "@"):
            return self.head_commit()
        if "@{" in rev:
            return self._reflog_entry(rev)
        for name in self._ref_candidates(rev):
            ref = self._store.read_ref(name)
            if ref is not None and not ref.symbolic:
                return CID.parse(ref.target)
        try:
            cid = CID.parse(rev)
        except BasinError:
            cid = None
        if cid is not None:
            if not self._store.has(cid):
                raise RefError(f"revision {shown(rev)}: no such block in this repository")
            return cid
        if len(rev) >= MIN_PREFIX and rev.isalnum():
            found = self._store.match_prefix(rev)
            if len(found) == 1:
                return CID.parse(found[0])
            if len(found) > 1:
                raise RefError(
                    f"revision {shown(rev)} is ambiguous: more than one CID starts with it"
                )
        raise RefError(
            f"unknown revision {shown(rev)}: not a branch, ref or CID in this repository"
        )

    @staticmethod
    def _ref_candidates(name: str) -> tuple[str, ...]:
        """The full refs a short name may mean, in git's order (gitrevisions(7)): the name itself,
        refs/NAME, refs/tags/NAME, refs/heads/NAME, refs/remotes/NAME."""
        if name.startswith("refs/"):
            return (name,)
        return (name, "refs/" + name, TAGS + name, HEADS + name, REMOTES + name)

    def _reflog_entry(self, rev: str) -> CID:
        """`NAME@{N}`: what ref NAME held N moves ago (0: now), from its reflog. A bare `@{N}` is
        the current branch's, or HEAD's when HEAD is detached, as in git."""
        match = _REFLOG_REV.fullmatch(rev)
        if match is None:
            raise RefError(
                f"revision {shown(rev)}: of the @{{...}} forms only NAME@{{N}} and @{{N}} "
                "(N a reflog entry number) are supported"
            )
        name, num = match.group(1), match.group(2)
        if name in ("", "@"):
            ref = self.current_branch() or HEAD
        elif name == HEAD:
            ref = HEAD
        else:
            found = (c for c in self._ref_candidates(name) if self.ref(c) or self.reflog(c, 1))
            ref = next(found, None)
            if ref is None:
                raise RefError(f"revision {shown(rev)}: no ref {shown(name)} with a reflog")
        entries = self.reflog(ref)
        n = int(num) if len(num) < 19 else len(entries)  # beyond any reflog, whatever the digits
        if n >= len(entries):
            count = f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'}"
            raise RefError(f"revision {shown(rev)}: the log of {ref} only has {count}")
        entry = entries[n]
        if entry.new is None:
            raise RefError(f"revision {shown(rev)}: {ref} was deleted by that reflog entry")
        if not entry.new.startswith("refs/"):
            return CID.parse(entry.new)
        # HEAD pointed at a branch then: the commit that branch held at that moment
        for moved in self.reflog(entry.new):
            if moved.time <= entry.time:
                if moved.new is None:
                    break
                return CID.parse(moved.new)
        raise RefError(
            f"revision {shown(rev)}: {entry.new}, which HEAD pointed at, held no commit then"
        )

    def move_head(self, new: CID, old: CID, message: str) -> None:
        """Advance what HEAD points at (its branch, or HEAD itself when detached), logging both."""
        branch = self.current_branch()
        with self._store.transaction():
            self.set_ref(branch or HEAD, new, old, message)
            if branch:
                self._store.append_reflog(HEAD, str(old), str(new), message)

    def create_branch(self, name: str, target: CID, message: str) -> None:
        check_branch_name(name)
        if self.branch_commit(name) is not None:
            raise RefError(f"a branch named {name!r} already exists")
        self.set_ref(branch_ref(name), target, None, message)
