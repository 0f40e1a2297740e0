"""Concepts: branch directions since their fork, their Fisher-weighted links, refresh_links."""

import math

import networkx as nx
import pytest

from basinvcs import concepts as cc
from basinvcs import porcelain
from basinvcs.errors import BasinError
from basinvcs.metrics import cosine
from basinvcs.objects import Basin, Chart, Entanglement
from basinvcs.repository import Repository
from tests.conftest import CHART, DIM, commit_z, vec


def fork(repo_dir, source, name):
    with Repository.open(repo_dir) as repo:
        return porcelain.fork(repo, source, name)


def vectors(repo_dir):
    with Repository.open(repo_dir) as repo:
        return cc.concept_vectors(repo)


# -- the arithmetic ------------------------------------------------------------------------------


def test_links_respect_the_floor_the_limit_and_sort_order():
    vs = {
        "b": vec(c0=1.0),
        "a": vec(c0=1.0, c1=1.0),
        "c": vec(c1=1.0, c2=20.0),  # cos with b: 0; with a: ~0.035, under the floor
        "d": vec(c0=-2.0),
    }
    found = cc.links(vs)
    assert [(e.a, e.b) for e in found] == [("b", "d"), ("a", "b"), ("a", "d")]
    assert found[0].strength == -1.0 and found[1].strength == pytest.approx(0.7071, abs=1e-4)
    assert len(cc.links(vs, limit=1)) == 1
    assert len(cc.links(vs, floor=0.0, limit=None)) == 6
    many = {f"k{i}": vec(c0=1.0, **{f"c{i + 1}": 0.1}) for i in range(6)}  # 15 strong pairs
    assert len(cc.links(many)) == cc.MAX_LINKS


# -- in a repository ----------------------------------------------------------------------------


def test_orthogonal_identical_and_opposite_branches(repo_dir):
    commit_z(repo_dir, vec(c9=5.0), "general moves first")  # fork base is not genesis
    fork(repo_dir, "general", "a")
    commit_z(repo_dir, vec(c9=5.0, c0=1.0, c1=2.0), "a")
    fork(repo_dir, "general", "same")
    commit_z(repo_dir, vec(c9=5.0, c0=2.0, c1=4.0), "same direction, twice as far")
    fork(repo_dir, "general", "opp")
    commit_z(repo_dir, vec(c9=5.0, c0=-1.0, c1=-2.0), "opposite")
    fork(repo_dir, "general", "orth")
    commit_z(repo_dir, vec(c9=5.0, c0=2.0, c1=-1.0), "orthogonal")
    vs = vectors(repo_dir)
    assert sorted(vs) == ["a", "opp", "orth", "same"]  # general has no specialisation
    assert vs["a"] == vec(c0=1.0, c1=2.0)  # the change since the fork, not z itself
    assert cosine(vs["a"], vs["same"]) == pytest.approx(1.0)
    assert cosine(vs["a"], vs["opp"]) == pytest.approx(-1.0)
    assert cosine(vs["a"], vs["orth"]) == 0.0
    with Repository.open(repo_dir) as repo:
        graph = cc.concept_graph(repo)
    assert isinstance(graph, nx.Graph)
    assert graph.nodes["same"]["norm"] == pytest.approx(math.sqrt(20))
    assert graph.nodes["a"]["branch"] == "a"
    assert graph.edges["a", "same"]["weight"] == pytest.approx(1.0)
    assert graph.edges["a", "opp"]["weight"] == pytest.approx(-1.0)
    assert not graph.has_edge("a", "orth")  # 0 is under the floor
    assert graph.graph["fisher"] is False


def test_fisher_weighted_links_use_the_mean_of_the_heads(repo_dir):
    fisher = [4.0, 1.0] + [1.0] * (DIM - 2)
    fork(repo_dir, "general", "a")
    commit_z(repo_dir, vec(c0=1.0, c1=1.0), "a", fisher=fisher)
    fork(repo_dir, "general", "b")
    commit_z(repo_dir, vec(c0=1.0, c1=-1.0), "b")  # no Fisher: identity
    with Repository.open(repo_dir) as repo:
        graph = cc.concept_graph(repo)
    # a's Fisher on the common scale: [4, 1, ...] / 4 / mean, averaged with identity
    mean = (1 + 0.25 * (DIM - 1)) / DIM
    f0, f1 = (1 / mean + 1) / 2, (0.25 / mean + 1) / 2
    assert graph.edges["a", "b"]["weight"] == pytest.approx((f0 - f1) / (f0 + f1))
    assert graph.graph["fisher"] is True


def test_fork_point_is_the_newest_specialisation_on_the_first_parent_history(repo_dir, cli):
    fork(repo_dir, "general", "a")
    commit_z(repo_dir, vec(c0=1.0), "a1")
    fork(repo_dir, "a", "sub")  # sub's direction starts at a's head, not at genesis
    commit_z(repo_dir, vec(c0=1.0, c1=3.0), "sub1")
    cli("branch", "copy", "a")  # a plain branch of a: the branch named 'a' defines concept a
    commit_z(repo_dir, vec(c0=1.0, c1=3.0, c2=1.0), "sub2")
    vs = vectors(repo_dir)
    assert vs == {"a": vec(c0=1.0), "sub": vec(c1=3.0, c2=1.0)}
    cli("checkout", "copy")
    commit_z(repo_dir, vec(c0=7.0), "copy moves")
    assert vectors(repo_dir)["a"] == vec(c0=1.0)
    cli("branch", "-d", "a")
    assert vectors(repo_dir)["a"] == vec(c0=7.0)  # now only 'copy' carries concept a


def test_refresh_links_replaces_the_links_among_the_labels(repo_dir, cli):
    fork(repo_dir, "general", "a")
    commit_z(repo_dir, vec(c0=1.0, c1=1.0), "a")
    fork(repo_dir, "general", "b")
    commit_z(repo_dir, vec(c0=1.0), "b")
    fork(repo_dir, "general", "c")
    commit_z(repo_dir, vec(c0=-1.0), "c")
    stale = Basin.create(
        CHART,
        vec(c0=1.0),
        labels=["general", "a", "b"],
        entanglements=[Entanglement("x", "y", 0.5), Entanglement("a", "b", 0.1)],
    )
    with Repository.open(repo_dir) as repo:
        fresh = cc.refresh_links(repo, stale)
    assert [(e.a, e.b) for e in fresh.entanglements] == [("a", "b")]  # c is not carried
    assert fresh.entanglements[0].strength == pytest.approx(1 / math.sqrt(2))
    assert fresh.z == stale.z and fresh.labels == stale.labels
    assert Basin.decode(fresh.encode()) == fresh


def test_refresh_links_keeps_a_full_packet_within_its_size_limit(tmp_path, monkeypatch):
    dim = 1024
    repo = porcelain.init(tmp_path / "big", dim=dim, seed=7)
    chart = Chart(seed=7, dim=dim)
    fisher = [1.0 + (i % 7) for i in range(dim)]
    names = [f"concept-{i:02d}" for i in range(6)]
    try:
        for k, name in enumerate(names):
            porcelain.fork(repo, "general", name)
            z = [0.0] * dim
            z[0], z[k + 1] = 1.0, 0.5  # every pair strongly linked: 15 candidate links
            porcelain.commit(repo, Basin.create(chart, z, fisher=fisher), name)
        full = Basin.create(
            chart,
            [0.123456 + i for i in range(dim)],
            fisher=fisher,
            labels=["general", *names],
        )
        fresh = cc.refresh_links(repo, full)
    finally:
        repo.close()
    assert 0 < len(fresh.entanglements) < cc.MAX_LINKS  # the budget, not the cap, limited them
    fresh.encode()  # within 4096 bytes
    strengths = [abs(e.strength) for e in fresh.entanglements]
    assert strengths == sorted(strengths, reverse=True)


def test_no_concepts_in_a_fresh_repository(repo):
    assert cc.concept_vectors(repo) == {}
    assert cc.concept_graph(repo).number_of_nodes() == 0
    genesis = repo.read_basin(repo.read_commit(repo.head_commit()).basin)
    assert cc.refresh_links(repo, genesis) == genesis


def test_diff_refuses_basins_of_different_charts():
    with pytest.raises(BasinError, match="different charts"):
        cc.diff_basins(Basin.create(CHART), Basin.create(Chart(seed=8, dim=DIM)))
