"""The store interfaces: blocks by CID, and a repository's refs, reflog and commit-graph index.

A block store maps CIDs to bytes (embedded SQLite, an IPFS node, memory). It never hands out bytes
that do not hash to the CID asked for, and it never accepts a DAG-CBOR block that is not strictly
canonical: a CID names exactly one byte string, and every byte string it holds was checked once, on
the way in.

A repository store (`Store`) is a block store that also holds what is local by nature: refs, which
move only by compare-and-swap (`set_if_equals`, as dulwich's RefsContainer has it) and leave a
reflog entry each time; and the commit-graph index (child -> parents, time), derived from the
commit blocks, which answers history questions without decoding them. All of it changes inside
`transaction()`: everything in one happens, or none of it. SQLite implements it for repositories
on disk (store/sqlite.py), a dictionary for tests (store/memory.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ..cid import CID, DAG_CBOR, DAG_JSON
from ..codec import dagcbor, dagjson
from ..errors import BlockTooLarge

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


class Store(BlockStore):
    """Blocks, refs, reflog and the commit-graph index of one repository, changed atomically."""

    location: str  # where it lives, for messages

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """All changes inside happen or none do; nested transactions join the outer one."""

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

    @abstractmethod
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
        and log the move; RefConflict otherwise."""

    @abstractmethod
    def append_reflog(self, name: str, old: str | None, new: str | None, message: str) -> None:
        """Log a move of `name` made through another ref (HEAD when its branch moves)."""

    @abstractmethod
    def reflog(self, name: str, limit: int = -1) -> list[ReflogEntry]:
        """How `name` moved, newest first; at most `limit` entries (-1: all)."""

    # -- the commit-graph index

    @abstractmethod
    def index_commit(self, cid: CID, parents: Sequence[CID], time_ms: int) -> None: ...

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

    @abstractmethod
    def walk_commits(self, heads: Sequence[CID], limit: int = -1) -> Iterator[tuple[CID, bytes]]:
        """Commits reachable from `heads`, newest first (a child before its parents), each block
        re-hashed; at most `limit` (-1: all)."""
