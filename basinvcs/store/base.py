"""The store interfaces: blocks by CID, and a repository's refs, reflog and commit-graph index.

A block store maps CIDs to bytes (embedded SQLite, an IPFS node, memory). It never hands out bytes
that do not hash to the CID asked for, and it never accepts a DAG-CBOR block that is not strictly
canonical: a CID names exactly one byte string, and every byte string it holds was checked once, on
the way in.

A repository store (`Store`) is a block store that also holds what is local by nature: refs, which
move only by compare-and-swap (`set_if_equals`, as dulwich's RefsContainer has it) and leave a
reflog entry each time; and the commit-graph index (per commit: parents, time, author, message),
derived from the commit blocks like git's commit-graph file, which answers history questions and
lists history (`log`) without reading or decoding blocks. All of it changes inside
`transaction()`: everything in one happens, or none of it. SQLite implements it for repositories
on disk (store/sqlite.py), a dictionary for tests (store/memory.py).
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import NamedTuple

from ..cid import CID, DAG_CBOR, DAG_JSON
from ..codec import dagcbor, dagjson
from ..errors import BlockTooLarge, RefConflict
from ..refnames import check_ref_name

MAX_BLOCK_SIZE = 1 << 20  # 1 MiB, the block size IPFS nodes exchange


def check_block(data: bytes, codec: int) -> None:
    """Refuse a block that is oversized or not valid in its codec (raw blocks are any bytes)."""
    if len(data) > MAX_BLOCK_SIZE:
        raise BlockTooLarge(f"block of {len(data)} bytes is over the {MAX_BLOCK_SIZE}-byte limit")
    if codec == DAG_CBOR:
        dagcbor.decode(data)
    elif codec == DAG_JSON:
        dagjson.decode(data)


class BlockStore(ABC):
    """Content-addressed blocks: put bytes, get them back by CID, verified."""

    @abstractmethod
    def put(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        """Check and store `data`; return its CIDv1 (sha2-256)."""

    @abstractmethod
    def get(self, cid: CID) -> bytes:
        """The block's bytes, re-hashed against `cid`; BlockNotFound or HashMismatch otherwise."""

    @abstractmethod
    def has(self, cid: CID) -> bool:
        """Whether the store holds `cid` (without reading or verifying it)."""

    @abstractmethod
    def size(self, cid: CID) -> int:
        """The block's size in bytes (without reading or verifying it); BlockNotFound otherwise."""


@dataclass(frozen=True)
class Ref:
    name: str
    target: str  # a CID string, or a ref name when symbolic
    symbolic: bool


@dataclass(frozen=True)
class ReflogEntry:
    name: str
    old: str | None
    new: str | None
    time: float
    message: str


class IndexEntry(NamedTuple):
    """One commit as the commit-graph index holds it: what `log` shows, without the block.

    Derived from the commit block when the commit is written, in the same transaction; `verify`
    checks it against the block. A tuple, so that listing 10,000 of them stays cheap.
    """

    cid: str
    parents: tuple[str, ...]
    time: int  # milliseconds since the Unix epoch, UTC
    author: bytes  # the 32-byte Ed25519 public key
    message: str


def walk_entries(
    heads: Sequence[str], entry: Callable[[str], IndexEntry | None], limit: int = -1
) -> Iterator[IndexEntry]:
    """The history walk every store shares: the indexed commits reachable from `heads`, newest
    first, as a priority queue on time (so a child comes before its parents whenever clocks
    agree, as `git log` orders); commits with equal times come out in the order they were reached
    (heads in CID order, then parents in their order). At most `limit` (-1: all).

    `entry` looks a commit up in the index (None: not indexed, and skipped with its history).
    """
    queue: list[tuple[int, int, IndexEntry]] = []
    seen: set[str] = set()
    pushed = 0
    for head in sorted(set(heads)):
        found = entry(head)
        seen.add(head)
        if found is not None:
            queue.append((-found.time, pushed, found))
            pushed += 1
    heapq.heapify(queue)
    pop, push = heapq.heappop, heapq.heappush
    current = pop(queue)[2] if queue else None
    while current is not None and limit != 0:
        yield current
        limit -= 1
        following = None  # the next commit, while the walk is a single line (no heap needed)
        for parent in current.parents:
            if parent not in seen:
                seen.add(parent)
                found = entry(parent)
                if found is None:
                    continue
                if following is None and not queue:
                    following = found
                    continue
                if following is not None:
                    push(queue, (-following.time, pushed, following))
                    pushed += 1
                    following = None
                push(queue, (-found.time, pushed, found))
                pushed += 1
        current = following if following is not None else pop(queue)[2] if queue else None


class Store(BlockStore):
    """Blocks, refs, reflog and the commit-graph index of one repository, changed atomically."""

    location: str  # where it lives, for messages

    _depth: int = 0  # how deep the current transaction is nested (per thread where that matters)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All changes inside happen or none do; nested transactions join the outer one."""
        with self._exclusive():
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._begin()
            self._depth = 1
            try:
                yield
            except BaseException:
                self._rollback()
                raise
            else:
                self._commit()
            finally:
                self._depth = 0

    def _exclusive(self) -> AbstractContextManager:
        """Held for a whole transaction where the store itself must keep threads apart."""
        return nullcontext()

    @abstractmethod
    def _begin(self) -> None: ...

    @abstractmethod
    def _commit(self) -> None: ...

    @abstractmethod
    def _rollback(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def check_integrity(self) -> str | None:
        """None if the store is sound, else its first finding, in one line."""

    @abstractmethod
    def match_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """CIDs (as text) of stored blocks starting with `prefix`, at most `limit` of them."""

    # -- refs

    @abstractmethod
    def read_ref(self, name: str) -> Ref | None: ...

    @abstractmethod
    def list_refs(self, prefix: str = "refs/") -> list[Ref]:
        """Refs whose names start with `prefix`, sorted by name."""

    def set_if_equals(
        self,
        name: str,
        new: str | None,
        expected: str | None,
        message: str,
        *,
        symbolic: bool = False,
    ) -> None:
        """Set `name` to `new` (None deletes it) only if it now holds `expected` (None: absent),
        and log the move; RefConflict otherwise. Read, compare, write and log in one
        transaction, so two writers racing for a ref serialise and the second one loses."""
        check_ref_name(name)
        with self.transaction():
            current = self.read_ref(name)
            found = current.target if current else None
            if found != expected:
                raise RefConflict(
                    f"ref {name} changed underneath this operation "
                    f"(expected {expected or 'nothing'}, found {found or 'nothing'})"
                )
            self._write_ref(name, new, symbolic)
            self.append_reflog(name, expected, new, message)

    @abstractmethod
    def _write_ref(self, name: str, new: str | None, symbolic: bool) -> None:
        """Store (or, for None, delete) the ref, inside `set_if_equals`'s transaction."""

    @abstractmethod
    def append_reflog(self, name: str, old: str | None, new: str | None, message: str) -> None:
        """Log a move of `name` made through another ref (HEAD when its branch moves)."""

    @abstractmethod
    def reflog(self, name: str, limit: int = -1) -> list[ReflogEntry]:
        """How `name` moved, newest first; at most `limit` entries (-1: all)."""

    # -- the commit-graph index

    @abstractmethod
    def index_commit(
        self, cid: CID, parents: Sequence[CID], time_ms: int, author: bytes, message: str
    ) -> None:
        """Record a commit written in this transaction (a no-op if it is indexed already)."""

    @abstractmethod
    def index_entry(self, cid: CID) -> IndexEntry | None:
        """What the index holds for `cid`; None if it is not an indexed commit."""

    @abstractmethod
    def walk_index(self, heads: Sequence[CID], limit: int = -1) -> Iterator[IndexEntry]:
        """`walk_entries` over the index: no block is read, decoded or re-hashed (`log`)."""

    @abstractmethod
    def is_indexed_commit(self, cid: CID) -> bool:
        """Whether `cid` was recorded as a commit (only strictly validated commits are)."""

    @abstractmethod
    def indexed_parents(self, cid: CID) -> list[str]: ...

    @abstractmethod
    def indexed_commits(self) -> dict[str, int]:
        """Every indexed commit (as text) with its time in milliseconds."""

    @abstractmethod
    def commit_edges(self) -> list[tuple[str, str]]:
        """Every (child, parent) edge of the commit graph."""

    # -- shallow history

    @abstractmethod
    def mark_shallow(self, cids: Iterable[CID]) -> None:
        """Record commits written in this transaction whose parents the store may lack: a
        history fetched to a depth (`ingest.write_history`) starts there."""

    @abstractmethod
    def unmark_shallow(self, cids: Iterable[str]) -> None:
        """Forget marks (their parents are here now); none left: a whole history again."""

    @abstractmethod
    def shallow_commits(self) -> set[str]:
        """The commits `mark_shallow` recorded (as text); empty for a whole history."""

    def walk_commits(self, heads: Sequence[CID], limit: int = -1) -> Iterator[tuple[CID, bytes]]:
        """`walk_index`'s commits, in its order, each with its block, re-hashed (push, export)."""
        for found in self.walk_index(heads, limit):
            cid = CID.parse(found.cid)
            yield cid, self.get(cid)
