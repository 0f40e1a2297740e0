"""Comparing basins (`basin diff`) and concepts, the directions specialisation branches took.

Fisher distance (BRIEF §2): d(A, B) = sqrt(Σ_i F̄_i (z_A,i − z_B,i)²), F̄ the mean of the two
packets' Fisher diagonals on the common scale, identity standing in for a packet without one (the
metric itself is in basinvcs.metrics).

A *concept* is a specialisation branch's direction: u = z(branch head) − z(parent of its fork
commit), the fork commit being the newest commit on the branch's first-parent history whose
`specialize` is set (porcelain.fork sets it); the concept is named by that label. The *link* between
two concepts is their Fisher-weighted cosine Σ F̄ u v / sqrt(Σ F̄ u² · Σ F̄ v²), with F̄ the mean of
the Fisher diagonals of the concepts' head packets (identity where a packet has none).

Links are stored in basin packets, and a packet at d = 1024 has little room left (each link costs
about 30 bytes): only links with |strength| >= MIN_STRENGTH are kept, at most MAX_LINKS of them,
strongest first, and `refresh_links` drops the weakest further until the packet fits.

No torch, numpy or networkx at import: `basin diff` must start fast (networkx is imported by
`concept_graph` only).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .codec import dagcbor
from .errors import BasinError
from .metrics import cosine, distance, mean_fisher
from .objects import Basin, Commit, Entanglement, packet_limit

# Random directions at d = 1024 have |cosine| around 1/sqrt(d) ≈ 0.03; 0.1 keeps links that are
# clearly more than chance and leaves near-orthogonal pairs out of the packet.
MIN_STRENGTH = 0.1
MAX_LINKS = 8


# -- the metric ---------------------------------------------------------------------------------


def metric_name(fisher_a: object, fisher_b: object) -> str:
    """Which F̄ a diff used, in words."""
    if fisher_a is None and fisher_b is None:
        return "identity (neither packet has a Fisher diagonal)"
    if fisher_a is not None and fisher_b is not None:
        return "mean of both packets' Fisher diagonals"
    which = "A" if fisher_a is not None else "B"
    other = "B" if which == "A" else "A"
    return f"mean of {which}'s Fisher diagonal and identity ({other} has none)"


# -- diff ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    """What changed from basin A to basin B."""

    distance: float  # Fisher distance sqrt(Σ F̄ Δ²)
    metric: str  # which F̄ was used, in words
    norm: float  # ‖z_B − z_A‖
    changed: int  # coordinates whose value differs
    dim: int
    top: list[tuple[int, float, float, float]]  # (i, z_A,i, z_B,i, sqrt(F̄_i)·Δ_i), largest first
    beta: tuple[tuple[float, ...], tuple[float, ...]]
    labels_added: list[str]
    labels_removed: list[str]
    substrate: tuple[str | None, str | None]
    links_added: list[Entanglement]
    links_removed: list[Entanglement]
    links_changed: list[tuple[Entanglement, Entanglement]]  # (in A, in B)


def diff_basins(a: Basin, b: Basin, top: int = 10) -> Diff:
    """Compare two packets of the same chart; `top` most Fisher-weighted changed coordinates."""
    if a.chart != b.chart:
        raise BasinError(
            f"cannot compare basins in different charts ({a.chart} and {b.chart}): "
            "their coordinates mean different things"
        )
    dim = a.chart.dim
    fbar = mean_fisher([a.fisher, b.fisher], dim) or [1.0] * dim
    rows = [
        (i, x, y, math.sqrt(fbar[i]) * (y - x))
        for i, (x, y) in enumerate(zip(a.z, b.z, strict=True))
        if y != x
    ]
    rows.sort(key=lambda r: (-abs(r[3]), r[0]))
    ents_a = {(e.a, e.b): e for e in a.entanglements}
    ents_b = {(e.a, e.b): e for e in b.entanglements}
    return Diff(
        distance=distance(a.z, b.z, fbar),
        metric=metric_name(a.fisher, b.fisher),
        norm=distance(a.z, b.z, None),
        changed=len(rows),
        dim=dim,
        top=rows[: max(top, 0)],
        beta=(a.beta, b.beta),
        labels_added=[x for x in b.labels if x not in a.labels],
        labels_removed=[x for x in a.labels if x not in b.labels],
        substrate=(
            a.substrate.name if a.substrate else None,
            b.substrate.name if b.substrate else None,
        ),
        links_added=[ents_b[k] for k in sorted(ents_b.keys() - ents_a.keys())],
        links_removed=[ents_a[k] for k in sorted(ents_a.keys() - ents_b.keys())],
        links_changed=[
            (ents_a[k], ents_b[k])
            for k in sorted(ents_a.keys() & ents_b.keys())
            if ents_a[k].strength != ents_b[k].strength
        ],
    )


def diff(repo, rev_a: str, rev_b: str, top: int = 10) -> Diff:
    """`diff_basins` of the basins of two commits of `repo`, given as revisions."""
    basins = []
    for rev in (rev_a, rev_b):
        commit = repo.read_commit(repo.resolve(rev))
        basins.append(repo.read_basin(commit.basin))
    return diff_basins(*basins, top=top)


# -- concepts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    name: str  # the specialisation label
    branch: str  # the branch whose head defines it
    vector: list[float]  # z(head) − z(fork commit's parent)
    fisher: Sequence[float] | None  # the head packet's Fisher diagonal

    @property
    def norm(self) -> float:
        return math.sqrt(math.fsum(v * v for v in self.vector))


def _fork_point(repo, head, shallow: Collection = frozenset()) -> tuple[str, Commit] | None:
    """(label, fork commit) of the newest specialising commit on head's first-parent history,
    as far as it is held: none from a `shallow` commit down (its parents are not here)."""
    cid = head
    while cid not in shallow:
        commit = repo.read_commit(cid)
        if commit.specialize is not None:
            return commit.specialize, commit
        if not commit.parents:
            return None
        cid = commit.parents[0]
    return None


def concepts(repo) -> dict[str, Concept]:
    """Every concept of the repository, by label.

    Each branch with a specialisation on its first-parent history yields one. When several
    branches yield the same label (a plain branch made from a specialisation branch, a fast-forward
    of `general` onto one), the branch named like the label defines it, else the first by name.
    """
    found: dict[str, Concept] = {}
    shallow = repo.shallow()
    for branch, head in sorted(repo.branches()):
        point = _fork_point(repo, head, shallow)
        if point is None:
            continue
        name, fork_commit = point
        if name in found and found[name].branch == name:
            continue
        if name in found and branch != name:
            continue
        base = fork_commit.parents[0] if fork_commit.parents else None
        head_basin = repo.read_basin(repo.read_commit(head).basin)
        if base is None:
            base_z: Sequence[float] = [0.0] * head_basin.chart.dim
        else:
            base_z = repo.read_basin(repo.read_commit(base).basin).z
        vector = [float(h) - float(z0) for h, z0 in zip(head_basin.z, base_z, strict=True)]
        found[name] = Concept(name, branch, vector, head_basin.fisher)
    return dict(sorted(found.items()))


def concept_vectors(repo) -> dict[str, list[float]]:
    """Concept name -> direction, for every branch that has a specialisation."""
    return {name: c.vector for name, c in concepts(repo).items()}


def concept_fisher(found: Mapping[str, Concept], dim: int) -> list[float] | None:
    """F̄ for links among `found`: the mean of their heads' Fisher diagonals (None: identity)."""
    return mean_fisher([c.fisher for c in found.values()], dim) if found else None


def links(
    vectors: Mapping[str, Sequence[float]],
    fisher: Sequence[float] | None = None,
    *,
    floor: float = MIN_STRENGTH,
    limit: int | None = MAX_LINKS,
) -> list[Entanglement]:
    """Links between concepts with |strength| >= floor, strongest first, at most `limit`."""
    names = sorted(vectors)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            s = cosine(vectors[a], vectors[b], fisher)
            if s is not None and abs(s) >= floor:
                out.append(Entanglement(a, b, s))
    out.sort(key=lambda e: (-abs(e.strength), e.a, e.b))
    return out if limit is None else out[:limit]


def concept_graph(repo, *, floor: float = MIN_STRENGTH):
    """networkx.Graph: a node per concept (attributes norm, branch), an edge per link (weight).

    The graph is not bound by the packet budget: every link with |strength| >= floor is an edge.
    """
    import networkx as nx

    found = concepts(repo)
    graph = nx.Graph()
    for name, c in found.items():
        graph.add_node(name, norm=c.norm, branch=c.branch)
    fisher = concept_fisher(found, repo.config.chart.dim)
    vectors = {name: c.vector for name, c in found.items()}
    for e in links(vectors, fisher, floor=floor, limit=None):
        graph.add_edge(e.a, e.b, weight=e.strength)
    graph.graph["fisher"] = fisher is not None
    return graph


def refresh_links(repo, basin: Basin) -> Basin:
    """`basin` with its entanglements replaced by the current links among the concepts it carries.

    The concepts it carries are its labels that are concepts of `repo`; links are computed with
    the same F̄ as `concept_graph` (over those concepts), at most MAX_LINKS above MIN_STRENGTH, and
    the weakest are dropped until the packet fits its size limit.
    """
    found = {k: c for k, c in concepts(repo).items() if k in basin.labels}
    vectors = {name: c.vector for name, c in found.items()}
    return fit_links(basin, links(vectors, concept_fisher(found, basin.chart.dim)))


def fit_links(basin: Basin, chosen: Sequence[Entanglement]) -> Basin:
    """`basin` with the entanglements `chosen` (strongest first), the weakest dropped until the
    packet fits its size limit."""
    chosen = list(chosen)
    limit = packet_limit(basin.chart.dim)
    while True:
        out = Basin._build(
            basin.chart,
            basin.z,
            basin._fisher_raw,
            basin.beta,
            chosen,
            basin.labels,
            basin.substrate,
        )
        if not chosen or len(dagcbor.encode(out.to_node())) <= limit:
            return out
        chosen.pop()
