"""History questions over the commit graph, answered with networkx.

The graph has an edge child -> parent for every commit; it is built from the store's commit-graph
index (one query), not by decoding blocks.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import networkx as nx

from .cid import CID


def commit_graph(repo) -> nx.DiGraph:
    """The repository's whole history as a graph, from its commit-graph index."""
    graph = nx.DiGraph()
    graph.add_nodes_from(repo.commit_times())
    graph.add_edges_from(repo.commit_edges())
    return graph


def ancestors(graph: nx.DiGraph, cid: CID) -> set[str]:
    """Every commit in the history of `cid`, itself included."""
    return nx.descendants(graph, str(cid)) | {str(cid)}


def is_ancestor(graph: nx.DiGraph, ancestor: CID, descendant: CID) -> bool:
    return str(ancestor) == str(descendant) or nx.has_path(graph, str(descendant), str(ancestor))


def reaches(repo, descendant: CID, ancestor: CID) -> bool:
    """Whether `ancestor` is in the history of `descendant`, by walking parents in the index
    from `descendant`: it visits what lies between the two (a few rounds of a hive), where a graph
    of the whole history would read every commit."""
    stack, seen, target = [str(descendant)], set(), str(ancestor)
    while stack:
        cid = stack.pop()
        if cid == target:
            return True
        if cid not in seen:
            seen.add(cid)
            stack.extend(repo.parents(CID.parse(cid)))
    return False


def merge_bases(graph: nx.DiGraph, *heads: CID) -> list[CID]:
    """The best common ancestors of `heads`: common ones that no other common one descends from.

    There can be several (criss-cross merges); they come sorted, and callers decide what to do.
    """
    common = set.intersection(*(ancestors(graph, h) for h in heads))
    sub = graph.subgraph(common)
    return sorted(CID.parse(c) for c in common if sub.in_degree(c) == 0)


def topo_order(graph: nx.DiGraph, heads: Iterable[CID], times: dict[str, int]) -> list[str]:
    """Commits reachable from `heads`, children before parents, newest first among the ready."""
    reach: set[str] = set()
    for head in heads:
        reach |= ancestors(graph, head)
    sub = graph.subgraph(reach)
    return list(nx.lexicographical_topological_sort(sub, key=lambda c: (-times.get(c, 0), c)))


def range_order(
    graph: nx.DiGraph,
    heads: Iterable[CID],
    hidden_from: Iterable[CID],
    times: dict[str, int],
    *,
    topo: bool = False,
) -> list[str]:
    """Commits reachable from `heads` but not from any of `hidden_from` (git's `A..B` is heads
    [B], hidden_from [A]), newest first with each child before its parents, as `git log` walks;
    with `topo`, in `topo_order`'s order instead (for `--graph`)."""
    hidden: set[str] = set()
    for cid in hidden_from:
        hidden |= ancestors(graph, cid)
    starts = {str(h) for h in heads} - hidden
    if topo:
        reach: set[str] = set()
        for head in starts:
            reach |= ancestors(graph, CID.parse(head)) - hidden
        sub = graph.subgraph(reach)
        return list(nx.lexicographical_topological_sort(sub, key=lambda c: (-times.get(c, 0), c)))
    queue = [(-times.get(c, 0), c) for c in starts]
    heapq.heapify(queue)
    seen = set(starts)
    out: list[str] = []
    while queue:
        _, cid = heapq.heappop(queue)
        out.append(cid)
        for parent in graph.successors(cid):
            if parent not in seen and parent not in hidden:
                seen.add(parent)
                heapq.heappush(queue, (-times.get(parent, 0), parent))
    return out
