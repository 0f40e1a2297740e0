"""A basin repository on disk: `.basin/` with the block database and the config.

`Repository` is the plumbing the operations in `porcelain` are written with: read and write
objects, read and move refs, resolve revisions. It never decides policy (what to commit, what to
refuse); that is porcelain's job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .cid import CID
from .config import Config, load_config, save_config
from .errors import BasinError, RefError, RepositoryError, SchemaError
from .identity import Identity, require_identity
from .objects import Basin, Commit
from .refnames import HEAD, HEADS, REMOTES, branch_ref, check_branch_name, shown
from .store.sqlite import Ref, SQLiteStore

BASIN_DIR = ".basin"
DB_FILE = "basin.db"
_REV_SUFFIX = re.compile(r"(\^\d*|~\d*)$")
MAX_REV_CHARS = 1024  # a name of at most 255 bytes and plenty of ~N^N
MIN_PREFIX = 8


def find_basin_dir(start: Path | None = None) -> Path:
    """$BASIN_DIR if set, else the nearest `.basin/` at or above `start` (default: cwd)."""
    if env := os.environ.get("BASIN_DIR"):
        return Path(env).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / BASIN_DIR).is_dir():
            return candidate / BASIN_DIR
    raise RepositoryError(f"not a basin repository (or any parent up to /): {here}")


class Repository:
    """Objects, refs and config of one repository."""

    def __init__(self, basin_dir: Path, store: SQLiteStore, config: Config):
        self.basin_dir = basin_dir
        self.store = store
        self.config = config

    @classmethod
    def open(cls, path: Path | str | None = None) -> Repository:
        basin_dir = find_basin_dir(Path(path) if path is not None else None)
        if not (basin_dir / DB_FILE).is_file():
            raise RepositoryError(f"{basin_dir} is not a basin repository: it has no {DB_FILE}")
        store = SQLiteStore.open(basin_dir / DB_FILE)
        return cls(basin_dir, store, load_config(basin_dir))

    @classmethod
    def create(cls, root: Path, config: Config) -> Repository:
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
        return cls(basin_dir, store, config)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def save_config(self) -> None:
        save_config(self.basin_dir, self.config)

    def identity(self) -> Identity:
        return require_identity()

    # -- objects ------------------------------------------------------------------------------

    def read_commit(self, cid: CID) -> Commit:
        """A commit of this repository's history (one in the commit-graph index).

        Indexed commits were validated strictly when written, so after the hash check they are
        decoded on the fast path; any other block is decoded strictly and, even when it is a valid
        commit (stored with `dag put`, say), refused: history only grows through validated writes.
        """
        data = self.store.get(cid)
        if self.store.is_indexed_commit(cid):
            return Commit.decode(data, trusted=True)
        try:
            Commit.decode(data)
        except BasinError as exc:
            raise SchemaError(f"{cid} is not a valid commit: {exc}") from None
        raise RefError(f"{cid} is a commit block but not part of this repository's history")

    def read_basin(self, cid: CID) -> Basin:
        data = self.store.get(cid)
        try:
            return Basin.decode(data, trusted=True)
        except SchemaError as exc:
            raise SchemaError(f"{cid} is not a valid basin packet: {exc}") from None

    def write_basin(self, basin: Basin) -> CID:
        return self.store.put(basin.encode())

    def write_commit(self, commit: Commit) -> CID:
        """Store a signed commit whose basin and parents are already stored, and index it."""
        for needed in (commit.basin, *commit.parents):
            if not self.store.has(needed):
                raise SchemaError(f"commit links {needed}, which is not in the repository")
        with self.store.transaction():
            cid = self.store.put(commit.encode())
            self.store.index_commit(cid, commit.parents, commit.time)
        return cid

    # -- refs ---------------------------------------------------------------------------------

    def head(self) -> Ref:
        ref = self.store.read_ref(HEAD)
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
        branch = self.store.read_ref(head.target)
        if branch is None:
            raise RefError(f"HEAD points at {head.target}, which does not exist")
        return CID.parse(branch.target)

    def branch_commit(self, name: str) -> CID | None:
        ref = self.store.read_ref(branch_ref(name))
        return CID.parse(ref.target) if ref else None

    def branches(self) -> list[tuple[str, CID]]:
        return [(r.name[len(HEADS) :], CID.parse(r.target)) for r in self.store.list_refs(HEADS)]

    def resolve(self, rev: str) -> CID:
        """A revision to a CID: HEAD, branch, full ref, CID or unique CID prefix, with ~N / ^N."""
        if len(rev) > MAX_REV_CHARS:
            raise RefError(f"revision {shown(rev)} is longer than {MAX_REV_CHARS} characters")
        steps: list[tuple[str, int]] = []  # innermost first, read off the end (no recursion)
        name = rev
        while (match := _REV_SUFFIX.search(name)) and match.start() > 0:
            num = match.group(1)[1:]
            steps.append((match.group(1)[0], int(num) if len(num) < 19 else 1 << 63))
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
        if rev == HEAD:
            return self.head_commit()
        for name in (rev, HEADS + rev, REMOTES + rev) if not rev.startswith("refs/") else (rev,):
            ref = self.store.read_ref(name)
            if ref is not None and not ref.symbolic:
                return CID.parse(ref.target)
        try:
            cid = CID.parse(rev)
        except BasinError:
            cid = None
        if cid is not None:
            if not self.store.has(cid):
                raise RefError(f"revision {shown(rev)}: no such block in this repository")
            return cid
        if len(rev) >= MIN_PREFIX and rev.isalnum():
            found = self.store.match_prefix(rev)
            if len(found) == 1:
                return CID.parse(found[0])
            if len(found) > 1:
                raise RefError(
                    f"revision {shown(rev)} is ambiguous: more than one CID starts with it"
                )
        raise RefError(
            f"unknown revision {shown(rev)}: not a branch, ref or CID in this repository"
        )

    def move_head(self, new: CID, old: CID, message: str) -> None:
        """Advance what HEAD points at (its branch, or HEAD itself when detached), logging both."""
        branch = self.current_branch()
        with self.store.transaction():
            self.store.update_ref(branch or HEAD, str(new), str(old), message)
            if branch:
                self.store.append_reflog(HEAD, str(old), str(new), message)

    def create_branch(self, name: str, target: CID, message: str) -> None:
        check_branch_name(name)
        if self.branch_commit(name) is not None:
            raise RefError(f"a branch named {name!r} already exists")
        self.store.update_ref(branch_ref(name), str(target), None, message)
