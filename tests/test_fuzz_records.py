"""Fuzzing the signed records that arrive from the network: a heads or capability record either
reads as a record that encodes back to exactly its block and whose signature verifies, or is
refused with one line (SchemaError, SignatureError or CodecError)."""

from __future__ import annotations

from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.codec import dagcbor
from basinvcs.errors import BasinError
from basinvcs.identity import Identity
from basinvcs.records import Capability, Heads
from tests.fuzzing import (
    CBOR_FRAGMENTS,
    CHARTS,
    CIDS,
    LABELS,
    assert_one_line,
    mutants,
    node_mutants,
)

SIGNER = Identity(bytes(range(32)), "fuzz")
TIMES = st.integers(0, 2**63 - 2)
BRANCHES = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}(/[a-z0-9][a-z0-9_-]{0,10})?", fullmatch=True)

HEADS = st.builds(
    Heads,
    repo=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    chart=CHARTS,
    heads=st.dictionaries(BRANCHES, CIDS, min_size=1, max_size=4),
    seq=st.integers(0, 2**63 - 1),
    author=st.just(SIGNER.public_key),
    time=TIMES,
).map(lambda record: record.signed(SIGNER.sign))


@st.composite
def capabilities(draw: st.DrawFn) -> Capability:
    time = draw(TIMES)
    return Capability(
        specialization=draw(LABELS),
        substrate=draw(st.none() | LABELS),
        name=draw(st.text(st.characters(codec="utf-8"), min_size=1, max_size=128)),
        heads=draw(CIDS),
        chart=draw(CHARTS),
        author=SIGNER.public_key,
        time=time,
        expires=draw(st.integers(time + 1, 2**63 - 1)),
    ).signed(SIGNER.sign)


def check(kind: type[Heads] | type[Capability], data: bytes) -> None:
    try:
        record = kind.decode(data)
    except BasinError as exc:
        assert_one_line(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("accepted")
    assert record.encode() == data
    record.verify_signature()
    assert kind.from_node(dagcbor.decode(data)) == record


def check_node(kind: type[Heads] | type[Capability], node: Any) -> None:
    try:
        record = kind.from_node(node)
    except BasinError as exc:
        assert_one_line(exc)
    else:
        assert kind.from_node(dagcbor.decode(record.encode())) == record
    check(kind, dagcbor.encode(node))


@given(HEADS)
def test_heads_round_trip(record: Heads) -> None:
    assert Heads.decode(record.encode()) == record


@given(capabilities())
def test_capabilities_round_trip(record: Capability) -> None:
    assert Capability.decode(record.encode()) == record


@given(mutants(HEADS.map(Heads.encode), CBOR_FRAGMENTS))
def test_mutated_heads_blocks(data: bytes) -> None:
    check(Heads, data)


@given(node_mutants(HEADS.map(lambda r: dagcbor.decode(r.encode()))))
def test_mutated_heads(node: Any) -> None:
    check_node(Heads, node)


@given(mutants(capabilities().map(Capability.encode), CBOR_FRAGMENTS))
def test_mutated_capability_blocks(data: bytes) -> None:
    check(Capability, data)


@given(node_mutants(capabilities().map(lambda r: dagcbor.decode(r.encode()))))
def test_mutated_capabilities(node: Any) -> None:
    check_node(Capability, node)
