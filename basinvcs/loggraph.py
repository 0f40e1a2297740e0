"""`basin log --graph`: history in topological order with ASCII lanes, as git draws it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .cid import CID
from .history import commit_graph, topo_order
from .objects import Commit
from .repository import IndexEntry


@dataclass(frozen=True)
class Lanes:
    """The drawing around one log entry: the row with its `*`, the rows under it, connectors."""

    first: str
    rest: str
    after: tuple[str, ...]

    def prefix(self, body: str) -> str:
        """Draw the lanes left of `body`; connectors go beside its second line on, as git does."""
        lines = body.splitlines(keepends=True) or ["\n"]
        leads = [*self.after, *[self.rest] * max(0, len(lines) - 1 - len(self.after))]
        width = max(len(self.first), *(len(lead) for lead in leads)) if leads else len(self.first)
        out = [self.first.ljust(width) + " " + lines[0]]
        for lead, line in zip(leads, lines[1:], strict=False):
            out.append(lead.ljust(width) + " " + line if line.strip() else lead + "\n")
        out += [lead + "\n" for lead in leads[len(lines) - 1 :] if lead != self.rest]
        return "".join(out)


def _row(cols: Sequence[str | None], star: int | None = None) -> str:
    return " ".join(
        "*" if i == star else ("|" if c is not None else " ") for i, c in enumerate(cols)
    ).rstrip()


def _connector(moves: list[tuple[int, int]]) -> str:
    """One row of edges: lane i going to lane k draws '|' (k = i), '/' (k < i) or '\\' (k > i)."""
    width = 2 * max(max(i, k) for i, k in moves) + 2
    row = [" "] * width
    for i, k in moves:
        if k == i:
            row[2 * i] = "|"
        elif k < i:
            row[2 * i - 1] = "/"
        else:
            row[2 * i + 1] = "\\"
    return "".join(row).rstrip()


def layout(order: Sequence[str], parents: dict[str, list[str]]) -> Iterator[tuple[str, Lanes]]:
    """Give each commit a lane; yield it with the drawing around its entry.

    Lanes hold the commit each one is waiting for. After a commit, its lane waits for its first
    parent (or joins the lane already waiting for it); further parents open lanes to its right.
    """
    cols: list[str] = []
    for cid in order:
        if cid not in cols:
            cols.append(cid)
        col = cols.index(cid)
        first = _row(cols, col)
        ps = parents.get(cid, [])
        waiting = [c for i, c in enumerate(cols) if i != col and c != cid]
        nxt: list[str] = []
        for i, c in enumerate(cols):
            if i == col:
                nxt += [p for p in ps if p not in waiting and p not in nxt]
            elif c != cid and c not in nxt:
                nxt.append(c)
        moves = []
        for i, c in enumerate(cols):
            if i == col or c == cid:
                targets = (
                    [nxt.index(p) for p in ps] if i == col else [nxt.index(ps[0])] if ps else []
                )
                moves += [(i, k) for k in targets]
            else:
                moves.append((i, nxt.index(c)))
        after = () if all(i == k for i, k in moves) else (_connector(moves),)
        yield cid, Lanes(first, _row(nxt) or " ", after)
        cols = nxt


def graph_log(
    repo, rev: str, limit: int | None, all_refs: bool = False
) -> Iterator[tuple[Lanes, IndexEntry]]:
    """`log --graph`: the commits `log` lists, in topological order, with their lanes; like
    `log`, from the commit-graph index alone."""
    from .porcelain import log_heads

    heads = log_heads(repo, rev, all_refs)
    entries = {e.cid: e for e in repo.log_entries(heads)}
    order = [c for c in topo_order(commit_graph(repo), heads, repo.commit_times()) if c in entries]
    if limit is not None:
        order = order[:limit]
    parents = {c: list(entries[c].parents) for c in order}
    for cid, lanes in layout(order, parents):
        yield lanes, entries[cid]


def graph_log_range(
    repo, order: Sequence[CID], limit: int | None
) -> Iterator[tuple[Lanes, CID, Commit]]:
    """`log --graph A..B`: lanes for a range's commits in topological order (`order`), drawing
    only the edges between commits of the range, as git draws a range without its boundary."""
    members = {str(c) for c in order}
    shown = [str(c) for c in order][: limit if limit is not None else None]
    parents = {c: [p for p in repo.parents(CID.parse(c)) if p in members] for c in shown}
    for cid, lanes in layout(shown, parents):
        parsed = CID.parse(cid)
        yield lanes, parsed, repo.read_commit(parsed)
