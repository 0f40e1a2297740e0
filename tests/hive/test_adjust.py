"""A round's β and concept-link adjustments (basinvcs.hive.adjust): they move only as more than
half of the round's taken updates say, by the median of what they say."""

from __future__ import annotations

import pytest

from basinvcs.codec import dagcbor
from basinvcs.hive import adjust
from basinvcs.hive.update import Update, encode_change
from basinvcs.identity import Identity
from basinvcs.objects import Basin, Entanglement, packet_limit
from tests.conftest import CHART, DIM
from tests.hive.test_update import PARENT

SIGNERS = [Identity(bytes([k + 1]) * 32, f"s{k}") for k in range(10)]
Z = [0.5] * DIM


def update(k: int, beta=None, links=None) -> Update:
    return Update(
        CHART,
        PARENT,
        0,
        1,
        encode_change([1.0] + [0.0] * (DIM - 1)),
        1,
        SIGNERS[k].public_key,
        beta=beta,
        links=links,
    )


def basin(beta=(1.0, 0.5), links=()) -> Basin:
    return Basin.create(CHART, [0.0] * DIM, beta=beta, entanglements=links)


def test_beta_moves_by_the_median_with_silent_updates_counting_as_no_change():
    three_of_five = [update(k, beta=(0.2, -0.1)) for k in range(3)] + [update(3), update(4)]
    assert adjust.apply(basin(), Z, three_of_five).beta == (1.2, 0.4)
    two_of_five = [update(k, beta=(0.2, -0.1)) for k in range(2)] + [update(k) for k in (2, 3, 4)]
    assert adjust.apply(basin(), Z, two_of_five).beta == (1.0, 0.5)
    # the median of what most say, not their mean: one far change among them does not count
    varied = [update(0, beta=(0.1, 0.1)), update(1, beta=(0.3, 0.1)), update(2, beta=(90.0, 0.1))]
    assert adjust.apply(basin(), Z, varied).beta == (1.3, 0.6)


def test_three_attackers_of_ten_cannot_move_beta_or_links():
    honest = [update(k) for k in range(7)]
    poison = [update(k, beta=(1e6, -1e6), links=(Entanglement("a", "b", -1.0),)) for k in (7, 8, 9)]
    start = basin(links=(Entanglement("a", "b", 0.5),))
    out = adjust.apply(start, Z, honest + poison)
    assert out.beta == start.beta and out.entanglements == start.entanglements
    assert list(out.z) == pytest.approx(Z, abs=1e-3)  # z is what the round computed


def test_a_change_that_would_leave_beta_non_finite_is_dropped():
    big = basin(beta=(1.7e308, 0.5))
    out = adjust.apply(big, Z, [update(k, beta=(1.7e308, 0.1)) for k in range(3)])
    assert out.beta == big.beta


def test_links_take_the_median_strength_of_a_majority_and_keep_the_rest():
    start = basin(links=(Entanglement("a", "b", 0.5), Entanglement("c", "d", 0.2)))
    says = [(0.1,), (0.3,), (0.9,)]
    ups = [
        update(k, links=(Entanglement("a", "b", w), Entanglement("b", "e", 0.4)))
        for k, (w,) in enumerate(says)
    ]
    ups += [update(3, links=(Entanglement("x", "y", 0.7),)), update(4)]
    out = adjust.apply(start, Z, ups)
    assert {(e.a, e.b): e.strength for e in out.entanglements} == {
        ("a", "b"): 0.3,  # reported by 3 of 5: their median
        ("b", "e"): 0.4,  # new, reported by 3 of 5
        ("c", "d"): 0.2,  # nobody reported it: kept
    }  # ("x", "y"): 1 of 5, not taken


def test_the_weakest_links_go_until_the_packet_fits():
    long = "x" * 60
    links = [Entanglement(f"{long}{k:02d}", f"{long}{k:02d}z", 0.2 + k / 100) for k in range(64)]
    fitting = 0  # as many as the packet holds
    while len(dagcbor.encode(basin(links=links[: fitting + 1]).to_node())) <= packet_limit(DIM):
        fitting += 1
    start = basin(links=links[:fitting])
    new = tuple(links[fitting : fitting + 2])  # the strongest yet
    out = adjust.apply(start, Z, [update(k, links=new) for k in range(3)])
    assert len(dagcbor.encode(out.to_node())) <= packet_limit(DIM)
    kept = {(e.a, e.b) for e in out.entanglements}
    assert {(e.a, e.b) for e in new} <= kept and len(kept) == fitting
    assert not {(e.a, e.b) for e in links[:2]} & kept  # the two weakest went


def test_a_beta_change_of_another_length_is_refused_with_a_reason():
    assert adjust.refusal(update(0, beta=(0.1,)), basin()) == (
        "update changes 1 β coefficients; the basin's β has 2"
    )
    assert adjust.refusal(update(0, beta=(0.1, 0.2)), basin()) is None
    assert adjust.refusal(update(0), basin()) is None


def test_nothing_to_adjust_leaves_the_packet_as_with_z():
    start = basin(links=(Entanglement("a", "b", 0.5),))
    assert adjust.apply(start, Z, [update(k) for k in range(3)]) == start.with_z(Z)
    assert adjust.apply(start, Z, []) == start.with_z(Z)


def test_storable_refuses_the_largest_until_the_round_can_be_stored():
    """The combination fails while its sum is over 10 (an unstorable result, as a SchemaError):
    the largest go first, ties to the larger second key, and none left is (None, [], all)."""
    from basinvcs.errors import SchemaError

    sizes = {0: 3.0, 1: 9.0, 2: 9.0, 3: 1.0}

    def combine(kept: list[int]) -> float:
        if sum(sizes[i] for i in kept) > 10:
            raise SchemaError("coordinate 0 is inf")
        return sum(sizes[i] for i in kept)

    result, kept, refused = adjust.storable([0, 1, 2, 3], lambda i: (sizes[i], i), combine)
    assert (result, kept) == (4.0, [0, 3]) and [i for i, _ in refused] == [2, 1]
    assert all(str(exc) == "coordinate 0 is inf" for _, exc in refused)
    none, kept, refused = adjust.storable([1, 2], lambda i: (sizes[i], i), lambda k: combine(k * 2))
    assert (none, kept, [i for i, _ in refused]) == (None, [], [2, 1])
