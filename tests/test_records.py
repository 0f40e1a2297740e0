"""Heads and capability records: signed, canonical, strictly decoded."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import CHART

from basinvcs.cid import CID
from basinvcs.codec import dagcbor
from basinvcs.errors import SchemaError, SignatureError
from basinvcs.identity import create_identity
from basinvcs.records import Capability, Heads

HEAD = CID.for_block(dagcbor.encode({"a": 1}))
REPO_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def ident(basin_home):
    return create_identity("alice", basin_home)


def heads(ident, **kw) -> Heads:
    fields = dict(
        repo=REPO_ID,
        chart=CHART,
        heads={"general": HEAD},
        seq=3,
        author=ident.public_key,
        time=1_700_000_000_000,
    )
    return Heads(**(fields | kw)).signed(ident.sign)


def capability(ident, **kw) -> Capability:
    fields = dict(
        specialization="math",
        substrate="tiny",
        name="k51qzi5uqu5dexample",
        heads=HEAD,
        chart=CHART,
        author=ident.public_key,
        time=1_700_000_000_000,
        expires=1_700_000_360_000,
    )
    return Capability(**(fields | kw)).signed(ident.sign)


def test_heads_round_trip_is_exact(ident):
    record = heads(ident, heads={"general": HEAD, "math": HEAD})
    data = record.encode()
    back = Heads.decode(data)
    assert back == record
    assert back.encode() == data
    assert back.scope.endswith("/" + REPO_ID)
    assert dagcbor.decode(data)["type"] == "basin/heads"


def test_capability_round_trip_with_and_without_substrate(ident):
    for record in (capability(ident), capability(ident, substrate=None)):
        assert Capability.decode(record.encode()) == record
    assert "substrate" not in dagcbor.decode(capability(ident, substrate=None).encode())


def test_a_changed_field_breaks_the_signature(ident):
    node = dagcbor.decode(heads(ident).encode())
    node["seq"] = 99  # a replay with a forged higher sequence
    with pytest.raises(SignatureError, match="bad signature"):
        Heads.decode(dagcbor.encode(node))


def test_a_record_signed_by_someone_else_is_refused(ident, basin_home):
    mallory = create_identity("mallory", basin_home / "m")
    forged = dataclasses.replace(heads(ident), signature=mallory.sign(heads(ident).signing_bytes()))
    with pytest.raises(SignatureError):
        Heads.decode(forged.encode())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda n: n.update(type="basin/commit"), "not a 'basin/heads'"),
        (lambda n: n.update(version=2), "version 2 is not supported"),
        (lambda n: n.update(extra=1), "unknown field 'extra'"),
        (lambda n: n.pop("repo"), "lacks field 'repo'"),
        (lambda n: n.update(repo="xyz"), "repository id"),
        (lambda n: n.update(heads={}), "lists no branch"),
        (lambda n: n.update(heads={"bad name": HEAD}), "bad branch name"),
        (lambda n: n.update(heads={"general": "not a cid"}), "must be CID"),
        (lambda n: n.update(seq=-1), "out of range"),
        (lambda n: n.update(signature=b"x"), "64"),
    ],
)
def test_malformed_heads_records_are_refused(ident, change, message):
    node = dagcbor.decode(heads(ident).encode())
    change(node)
    with pytest.raises(SchemaError, match=message):
        Heads.decode(dagcbor.encode(node))


def test_non_canonical_encoding_is_refused(ident):
    data = heads(ident).encode()
    node = dagcbor.decode(data)
    node["time"] = float(node["time"])  # same number, other CBOR type: another block
    with pytest.raises(SchemaError):
        Heads.decode(dagcbor.encode(node))


def test_capability_must_expire_after_it_was_made(ident):
    with pytest.raises(SchemaError, match="expires before"):
        capability(ident, expires=1_700_000_000_000)
    with pytest.raises(SchemaError, match="bad label"):
        capability(ident, specialization="no spaces")
