"""A repository store in memory: the `Store` interface with dictionaries, for tests and tools
that need a throwaway repository. Same rules as SQLite's: blocks checked on the way in and
re-hashed on the way out, refs moved only by compare-and-swap, transactions all or nothing (the
outermost one snapshots everything and restores it on an error), one lock for threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from ..cid import CID, DAG_CBOR
from ..errors import BlockNotFound
from .base import IndexEntry, Ref, ReflogEntry, Store, check_block, walk_entries


class MemoryStore(Store):
    def __init__(self) -> None:
        self.location = "memory"
        self._blocks: dict[str, bytes] = {}
        self._refs: dict[str, Ref] = {}
        self._reflog: list[ReflogEntry] = []
        self._commits: dict[str, IndexEntry] = {}
        self._shallow: set[str] = set()
        self._lock = threading.RLock()
        self._depth = 0
        self._saved: tuple | None = None  # what the running transaction would roll back to

    def _exclusive(self) -> threading.RLock:
        return self._lock

    def _begin(self) -> None:
        self._saved = (
            dict(self._blocks),
            dict(self._refs),
            list(self._reflog),
            dict(self._commits),
            set(self._shallow),
        )

    def _commit(self) -> None:
        self._saved = None

    def _rollback(self) -> None:
        self._blocks, self._refs, self._reflog, self._commits, self._shallow = self._saved

    def close(self) -> None:
        pass

    def check_integrity(self) -> str | None:
        return None

    # -- blocks

    def put(self, data: bytes, codec: int = DAG_CBOR) -> CID:
        check_block(data, codec)
        cid = CID.for_block(data, codec)
        with self._lock:
            self._blocks.setdefault(str(cid), bytes(data))
        return cid

    def get(self, cid: CID) -> bytes:
        data = self._blocks.get(str(cid))
        if data is None:
            raise BlockNotFound(f"block {cid} not found", subject=cid)
        cid.verify(data)
        return data

    def has(self, cid: CID) -> bool:
        return str(cid) in self._blocks

    def size(self, cid: CID) -> int:
        data = self._blocks.get(str(cid))
        if data is None:
            raise BlockNotFound(f"block {cid} not found", subject=cid)
        return len(data)

    def match_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        return sorted(c for c in self._blocks if c.startswith(prefix))[:limit]

    # -- refs

    def read_ref(self, name: str) -> Ref | None:
        return self._refs.get(name)

    def list_refs(self, prefix: str = "refs/") -> list[Ref]:
        return [self._refs[n] for n in sorted(self._refs) if n.startswith(prefix)]

    def _write_ref(self, name: str, new: str | None, symbolic: bool) -> None:
        if new is None:
            self._refs.pop(name, None)
        else:
            self._refs[name] = Ref(name, new, symbolic)

    def append_reflog(self, name: str, old: str | None, new: str | None, message: str) -> None:
        with self._lock:
            now = int(time.time() * 1000) / 1000
            self._reflog.append(ReflogEntry(name, old, new, now, message))

    def reflog(self, name: str, limit: int = -1) -> list[ReflogEntry]:
        entries = [e for e in reversed(self._reflog) if e.name == name]
        return entries if limit < 0 else entries[:limit]

    # -- the commit-graph index

    def index_commit(
        self, cid: CID, parents: Sequence[CID], time_ms: int, author: bytes, message: str
    ) -> None:
        text = str(cid)
        entry = IndexEntry(text, tuple(map(str, parents)), time_ms, bytes(author), message)
        with self._lock:
            self._commits.setdefault(text, entry)

    def index_entry(self, cid: CID) -> IndexEntry | None:
        return self._commits.get(str(cid))

    def walk_index(self, heads: Sequence[CID], limit: int = -1) -> Iterator[IndexEntry]:
        return walk_entries([str(h) for h in heads], self._commits.get, limit)

    def is_indexed_commit(self, cid: CID) -> bool:
        return str(cid) in self._commits

    def indexed_parents(self, cid: CID) -> list[str]:
        entry = self._commits.get(str(cid))
        return list(entry.parents) if entry else []

    def indexed_commits(self) -> dict[str, int]:
        return {c: e.time for c, e in self._commits.items()}

    def commit_edges(self) -> list[tuple[str, str]]:
        return [(c, p) for c, e in self._commits.items() for p in e.parents]

    def mark_shallow(self, cids: Iterable[CID]) -> None:
        with self._lock:
            self._shallow.update(map(str, cids))

    def unmark_shallow(self, cids: Iterable[str]) -> None:
        with self._lock:
            self._shallow.difference_update(cids)

    def shallow_commits(self) -> set[str]:
        return set(self._shallow)
