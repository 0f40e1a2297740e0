"""`basin log --graph`: history in topological order with ASCII lanes, as `git log --graph` draws."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .cid import CID
from .history import commit_graph, topo_order
from .objects import Commit


@dataclass(frozen=True)
class Lanes:
    """The drawing around one log entry: the row with its `*`, the rows under it, connectors."""

    first: str
    rest: str
    after: tuple[str, ...]

    def prefix(self, body: str) -> str:
        lines = body.splitlines(keepends=True) or ["\n"]
        out = [self.first + " " + lines[0]]
        out += [(self.rest + " " + line) if line.strip() else self.rest + "\n" for line in lines[1:]]
        out += [row + "\n" for row in self.after]
        return "".join(out)


def _row(cols: Sequence[str | None], star: int | None = None) -> str:
    return " ".join(
        "*" if i == star else ("|" if c is not None else " ") for i, c in enumerate(cols)
    ).rstrip()


def layout(order: Sequence[str], parents: dict[str, list[str]]) -> Iterator[tuple[str, Lanes]]:
    """Assign each commit a lane; yield it with the lane drawing for its entry."""
    cols: list[str | None] = []
    for cid in order:
        if cid not in cols:
            if None in cols:
                cols[cols.index(None)] = cid
            else:
                cols.append(cid)
        col = cols.index(cid)
        first = _row(cols, col)
        nxt: list[str | None] = [None if (c == cid and i != col) else c for i, c in enumerate(cols)]
        ps = parents.get(cid, [])
        nxt[col] = ps[0] if ps else None
        after: list[str] = []
        for p in ps[1:]:
            if p not in nxt:
                nxt.insert(col + 1, p)
                after.append(_row(nxt[: col + 1]) + "\\")
        closed = [i for i, c in enumerate(nxt) if c is None and any(x is not None for x in nxt[i + 1 :])]
        if closed:
            after.append(_row(nxt[: closed[0]]) + (" /" if closed[0] else "/"))
        while nxt and nxt[-1] is None:
            nxt.pop()
        nxt = [c for c in nxt if c is not None] if closed else nxt
        yield cid, Lanes(first, _row(nxt) or " ", tuple(after))
        cols = nxt


def graph_log(repo, rev: str, limit: int | None, all_refs: bool = False) -> Iterator[tuple[Lanes, CID, Commit]]:
    heads = [cid for _, cid in repo.branches()] if all_refs else [repo.resolve(rev)]
    graph = commit_graph(repo.store)
    order = topo_order(graph, heads, repo.store.indexed_commits())
    if limit is not None:
        order = order[:limit]
    parents = {c: repo.store.indexed_parents(CID.parse(c)) for c in order}
    for cid, lanes in layout(order, parents):
        parsed = CID.parse(cid)
        yield lanes, parsed, repo.read_commit(parsed)
