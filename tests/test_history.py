"""History questions on the commit graph (networkx): ancestors, merge bases, topological order."""

import pytest

from basinvcs import history
from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.config import Config
from basinvcs.repository import Repository
from tests.conftest import CHART


@pytest.fixture
def graph(tmp_path):
    """A criss-cross history:  a - b - d - f
                                 \\ X    /
                                  c - e
    where d merges (b, c) and e merges (c, b): d and e have two best common ancestors, b and c.
    """
    repo = Repository.in_memory(Config(CHART))
    store = repo._store  # a synthetic graph: index blocks that are not commits
    made: dict[str, CID] = {}

    def commit(name: str, parents: str, t: int) -> None:
        cid = store.put(dagcbor.encode({"n": name}))
        store.index_commit(cid, [made[p] for p in parents], t, bytes(32), name)
        made[name] = cid

    commit("a", "", 1)
    commit("b", "a", 2)
    commit("c", "a", 3)
    commit("d", "bc", 4)
    commit("e", "cb", 5)
    commit("f", "de", 6)
    yield history.commit_graph(repo), made, store


def test_ancestors_and_is_ancestor(graph):
    g, c, _ = graph
    assert history.ancestors(g, c["d"]) == {str(c[n]) for n in "abcd"}
    assert history.is_ancestor(g, c["a"], c["f"])
    assert history.is_ancestor(g, c["d"], c["d"])
    assert not history.is_ancestor(g, c["d"], c["e"])


def test_reaches_walks_the_index_as_is_ancestor_answers(graph):
    g, c, store = graph
    repo = Repository(store, Config(CHART), None)  # the fixture's store, as a repository
    for a in "abcdef":
        for d in "abcdef":
            assert history.reaches(repo, c[d], c[a]) == history.is_ancestor(g, c[a], c[d])


def test_merge_bases_of_a_criss_cross_are_both_best_ancestors(graph):
    g, c, _ = graph
    assert history.merge_bases(g, c["d"], c["e"]) == sorted([c["b"], c["c"]])
    assert history.merge_bases(g, c["b"], c["c"]) == [c["a"]]
    assert history.merge_bases(g, c["f"], c["b"]) == [c["b"]]  # fast-forward case


def test_topological_order_puts_children_first_newest_first(graph):
    g, c, store = graph
    order = history.topo_order(g, [c["f"]], store.indexed_commits())
    names = {str(v): k for k, v in c.items()}
    assert [names[x] for x in order] == ["f", "e", "d", "c", "b", "a"]
