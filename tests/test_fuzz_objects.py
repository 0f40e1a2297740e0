"""Fuzzing the readers of packets, commits and charts: a block either reads as an object that
encodes back to exactly that block, or is refused with one line (SchemaError or CodecError);
the trusted fast paths agree with the strict ones on every block those accept."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.errors import BasinError, SchemaError
from basinvcs.objects import Basin, Chart, Commit, Entanglement, SubstrateRef
from tests.fuzzing import (
    CBOR_FRAGMENTS,
    CHARTS,
    CIDS,
    LABELS,
    TEXT,
    assert_one_line,
    charts,
    mutants,
    node_mutants,
)

COORDS = st.floats(-(2.0**100), 2.0**100, width=32)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def basins(draw: st.DrawFn) -> Basin:
    chart = draw(charts(st.integers(1, 24)))
    fisher = None
    if draw(st.booleans()):  # any finite values, however far apart (below 2^-1074 of the max: 0)
        values = st.just(0.0) | st.floats(5e-324, 1e300)
        fisher = draw(st.lists(values, min_size=chart.dim, max_size=chart.dim))
        fisher[draw(st.integers(0, chart.dim - 1))] = draw(st.floats(1e-100, 1e100))
    labels = draw(st.lists(LABELS, max_size=4, unique=True))
    pairs = draw(st.lists(st.lists(LABELS, min_size=2, max_size=2, unique=True), max_size=3))
    return Basin.create(
        chart,
        draw(st.lists(COORDS, min_size=chart.dim, max_size=chart.dim)),
        fisher=fisher,
        beta=draw(st.lists(FINITE, min_size=1, max_size=8)),
        labels=labels,
        entanglements=[
            Entanglement(a, b, draw(st.floats(-1, 1)))
            for a, b in dict.fromkeys(tuple(sorted(pair)) for pair in pairs)
        ],
        substrate=draw(
            st.none()
            | st.builds(
                SubstrateRef, LABELS, st.binary(min_size=32, max_size=32), st.integers(1, 2**64 - 1)
            )
        ),
    )


COMMITS = st.builds(
    Commit,
    basin=CIDS,
    parents=st.lists(CIDS, max_size=3, unique=True).map(tuple),
    author=st.binary(min_size=32, max_size=32),
    time=st.integers(0, 2**63 - 1),
    message=TEXT,
    metrics=st.dictionaries(TEXT, FINITE, max_size=3),
    specialize=st.none() | LABELS,
    strategy=st.none() | LABELS,
    signature=st.binary(min_size=64, max_size=64),
)
PACKET_BLOCKS = basins().map(Basin.encode)
COMMIT_BLOCKS = COMMITS.map(Commit.encode)


def read(decode: Any, data: bytes) -> Any:
    """decode(data), or None when refused with a one-line BasinError."""
    try:
        return decode(data)
    except BasinError as exc:
        assert_one_line(exc)
        return None


def check_packet(data: bytes) -> None:
    basin = read(Basin.decode, data)
    trusted = read(lambda d: Basin.decode(d, trusted=True), data)
    event("refused" if basin is None else "accepted")
    if basin is not None:
        assert basin.encode() == data
        assert trusted == basin
        assert Basin.from_node(basin.to_node()) == basin


def check_commit(data: bytes) -> None:
    commit = read(Commit.decode, data)
    event("refused" if commit is None else "accepted")
    if commit is not None:
        assert commit.encode() == data
        assert Commit.decode(data, trusted=True) == commit


@given(basins())
def test_packets_round_trip(basin: Basin) -> None:
    data = basin.encode()
    assert Basin.decode(data) == basin == Basin.decode(data, trusted=True)


@given(COMMITS)
def test_commits_round_trip(commit: Commit) -> None:
    data = commit.encode()
    assert Commit.decode(data) == commit == Commit.decode(data, trusted=True)


@given(mutants(PACKET_BLOCKS, CBOR_FRAGMENTS))
def test_mutated_packet_blocks(data: bytes) -> None:
    check_packet(data)


@given(node_mutants(basins().map(Basin.to_node)))
def test_mutated_packets(node: Any) -> None:
    """Canonical DAG-CBOR with a field missing, added, or of another kind or value."""
    check_packet(dagcbor.encode(node))


@given(mutants(COMMIT_BLOCKS, CBOR_FRAGMENTS))
def test_mutated_commit_blocks(data: bytes) -> None:
    check_commit(data)


@given(node_mutants(COMMITS.map(Commit.to_node)))
def test_mutated_commits(node: Any) -> None:
    data = dagcbor.encode(node)
    check_commit(data)
    if read(Commit.decode, data) is None and not (
        type(node) is dict and node.get("type") == "basin/commit" and node.get("version") == 1
    ):  # trusted reads skip checks, but still name a block that is no commit at all
        with pytest.raises(SchemaError):
            Commit.decode(data, trusted=True)


@given(node_mutants(CHARTS.map(Chart.to_node)))
def test_mutated_charts(node: Any) -> None:
    chart = read(Chart.from_node, node)
    if chart is not None:
        assert chart.to_node() == node


@pytest.mark.parametrize(
    "node",
    [
        [],
        ["basin/commit"],
        "basin/commit",
        None,
        {"type": "basin/commit", "version": 1},  # no parents: the fast path needs them
        {"type": "basin/commit", "version": 1, "parents": 5},
    ],
)
def test_trusted_commit_reads_name_what_is_no_commit(node: Any) -> None:
    """Was: AttributeError ('list' object has no attribute 'get'), KeyError, TypeError."""
    with pytest.raises(SchemaError) as exc:
        Commit.decode(dagcbor.encode(node), trusted=True)
    assert_one_line(exc.value)


def test_an_oversized_packet_reads_trusted_but_not_strictly() -> None:
    """The one difference between the two packet readers: trusted skips the size check."""
    pairs = [Entanglement(f"a{i:02d}" + "x" * 60, f"b{i:02d}" + "y" * 60, 0.5) for i in range(40)]
    data = dagcbor.encode(
        {**Basin.create(Chart(dim=1)).to_node(), "entanglements": [e.to_node() for e in pairs]}
    )
    assert len(data) > 4096
    with pytest.raises(SchemaError, match="limit at d=1 is 4096"):
        Basin.decode(data)
    assert Basin.decode(data, trusted=True).entanglements == tuple(pairs)


def test_links_of_any_well_formed_cid_read_back() -> None:
    odd = CID.from_bytes(b"\x01" + b"\xff" * 8 + b"\x7f" + b"\x00\x00")  # 9-byte codec varint
    commit = Commit(odd, (odd,), bytes(32), 0, "", signature=bytes(64))
    assert Commit.decode(commit.encode()) == commit


def test_fisher_values_far_below_the_maximum_encode() -> None:
    basin = Basin.create(Chart(dim=2), fisher=[1e10, 5e-324])
    assert Basin.decode(basin.encode()).fisher[1] == 0.0
