"""Fuzzing strict DAG-CBOR: whatever decode accepts is canonical, whatever it refuses is a
one-line CodecError, and neither ever costs much more than the size of the input."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.codec import INT_MAX, INT_MIN, MAX_DEPTH, dagcbor
from basinvcs.errors import CodecError
from tests.codec.common import typed
from tests.fuzzing import (
    CBOR_FRAGMENTS,
    CBOR_STREAMS,
    assert_one_line,
    bounded,
    head,
    ipld_values,
    mutants,
    text_item,
)


def check(data: bytes) -> None:
    """decode either refuses data with one line or returns a value that encodes back to data,
    and decode_trusted agrees with it on every block decode accepts."""
    try:
        value = dagcbor.decode(data)
    except CodecError as exc:
        assert_one_line(exc)
        assert str(exc).startswith(("invalid DAG-CBOR: ", "non-canonical DAG-CBOR: "))
        event("refused")
        try:
            dagcbor.decode_trusted(data)  # not canonical: may decode, must not crash
        except CodecError as trusted_exc:
            assert_one_line(trusted_exc)
        return
    event("accepted")
    assert dagcbor.encode(value) == data
    assert typed(dagcbor.decode_trusted(data)) == typed(value)


@given(ipld_values())
def test_values_round_trip(value: Any) -> None:
    data = dagcbor.encode(value)
    assert typed(dagcbor.decode(data)) == typed(value)
    assert typed(dagcbor.decode_trusted(data)) == typed(value)


@given(st.binary(max_size=64))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@given(CBOR_STREAMS)
def test_cbor_streams(data: bytes) -> None:
    """Well-formed CBOR, mostly not canonical: non-minimal heads, indefinite lengths, other tags,
    short floats, simple values, keys of every kind."""
    check(data)


@given(mutants(ipld_values().map(dagcbor.encode), CBOR_FRAGMENTS))
def test_mutated_blocks(data: bytes) -> None:
    check(data)


# -- regressions: inputs that cost cbor2 far more than their size --------------------------------


def _shared_tree(levels: int) -> bytes:
    """[28([]), 28([29(0), 29(0)]), 28([29(1), 29(1)]), ...]: value-sharing tags make the last
    item a binary tree of 2^(levels-1) leaves out of 8 bytes a level."""
    items = [b"\xd8\x1c\x80"]
    for k in range(1, levels):
        ref = b"\xd8\x1d" + head(0, k - 1)
        items.append(b"\xd8\x1c\x82" + ref + ref)
    return head(4, levels) + b"".join(items)


def _repeated_string(size: int, copies: int) -> bytes:
    """256(["xx...x", 25(0), 25(0), ...]): string references repeat one long string."""
    return b"\xd9\x01\x00" + head(4, copies + 1) + text_item("x" * size) + b"\xd8\x19\x00" * copies


def _colliding_tuple_keys(count: int) -> tuple[list[tuple[int, int]], bytes]:
    """A map of `count` two-integer list keys whose tuples all share one hash: CPython's tuple
    hash (xxHash-style lanes over each item's hash) is inverted for the second item."""
    mask, p1, p2, p5 = 2**64 - 1, 11400714785074694791, 14029467366897019727, 2870177450012600261

    def after_first(a: int) -> int:
        acc = (p5 + a * p2) & mask
        return (((acc << 31) | (acc >> 33)) & mask) * p1 & mask

    keys: list[tuple[int, int]] = []
    a = 0
    while len(keys) < count:
        a += 1
        lane = (12345 - after_first(a)) * pow(p2, -1, 2**64) & mask
        if lane < 2**61 - 1:  # the hash of the non-negative int `lane` is `lane`
            keys.append((a, lane))
    entries = b"".join(b"\x82" + head(0, a) + head(0, b) + b"\xf6" for a, b in keys)
    return keys, head(5, count) + entries


def test_value_sharing_tags_are_refused_before_they_expand() -> None:
    """Was: 200 bytes took 12 s and 1.3 GB (23 levels), each level doubling both."""
    data = _shared_tree(40)
    with bounded(seconds=2, megabytes=16), pytest.raises(CodecError) as exc:
        dagcbor.decode(data)
    assert str(exc.value) == "invalid DAG-CBOR: tag 28 at byte 2 (only tag 42, a link, is allowed)"
    with bounded(seconds=2, megabytes=16), pytest.raises(CodecError):
        dagcbor.decode_trusted(data)


def test_string_reference_tags_are_refused_before_they_expand() -> None:
    """Was: 109 KB of input made 300 MB strings and re-encoded them (600 MB at the peak)."""
    data = _repeated_string(100_000, 3_000)
    with bounded(seconds=2, megabytes=16), pytest.raises(CodecError) as exc:
        dagcbor.decode(data)
    assert str(exc.value) == "invalid DAG-CBOR: tag 256 at byte 0 (only tag 42, a link, is allowed)"


@pytest.mark.parametrize(
    "tag, content",
    [
        (4, [2**63 - 1, 1 << 400_000]),  # decimal fraction: was 0.8 s per 100 KB, quadratic
        (5, [2**63 - 1, 1 << 400_000]),  # bigfloat
        (30, [(1 << 800_000) + 1, (1 << 799_999) + 3]),  # rational: a gcd of huge integers
        (2, b"\x01" * 200_000),  # bignum
    ],
)
def test_arithmetic_tags_are_refused_before_cbor2_computes(tag: int, content: list) -> None:
    data = head(6, tag) + cbor2.dumps(content)
    with bounded(seconds=2), pytest.raises(CodecError) as exc:
        dagcbor.decode(data)
    assert str(exc.value).startswith(f"invalid DAG-CBOR: tag {tag} at byte 0 ")


def test_map_keys_with_colliding_hashes_are_refused_before_the_map_is_built() -> None:
    """Was: 16,000 such keys (224 KB) took 1.8 s, quadratic: ~40 s for a 1 MiB block."""
    keys, data = _colliding_tuple_keys(16_000)
    assert len({hash(k) for k in keys}) == 1
    with bounded(seconds=1), pytest.raises(CodecError) as exc:
        dagcbor.decode(data)
    assert str(exc.value) == "invalid DAG-CBOR: map key at byte 3 is a list, not a string"
    with bounded(seconds=1), pytest.raises(CodecError):
        dagcbor.decode_trusted(data)


def test_cbor2_decodes_no_tag_itself() -> None:
    """Every tag cbor2 would decode itself is in dagcbor._NO_SEMANTIC_TAGS; run on a cbor2
    upgrade too, as it may learn new tags."""
    hooked: set[int] = set()
    refused: set[int] = set()

    def hook(tag: cbor2.CBORTag, immutable: bool) -> None:
        hooked.add(tag.tag)

    def make_refuser(number: int) -> Any:
        def refuse(*args: Any) -> None:
            refused.add(number)
            raise ValueError("refused")

        return refuse

    decoders = {number: make_refuser(number) for number in dagcbor._NO_SEMANTIC_TAGS}
    numbers = [*range(1 << 17), *((1 << k) + d for k in range(17, 64) for d in (-1, 0, 1))]
    for number in [*numbers, 2**64 - 1]:
        with contextlib.suppress(cbor2.CBORDecodeError):
            cbor2.loads(head(6, number) + b"\x00", tag_hook=hook, semantic_decoders=decoders)
        assert number in hooked or number in refused, f"cbor2 decodes tag {number} itself"


# -- regressions: nesting and lengths ------------------------------------------------------------


@pytest.mark.parametrize(
    "item, close",
    [
        (b"\x81", b""),  # [[[...]]]
        (b"\xa1\x61a", b""),  # {"a": {"a": ...}}
        (b"\xd8\x2a", b""),  # 42(42(...))
        (b"\xd8\x1c\x81", b""),  # 28([28([...])])
        (b"\x9f", b"\xff"),  # indefinite lists
        (b"\xbf\x61a", b"\xff"),  # indefinite maps
    ],
)
def test_deep_nesting_is_refused(item: bytes, close: bytes) -> None:
    data = item * 100_000 + b"\x00" + close * 100_000
    for decode in (dagcbor.decode, dagcbor.decode_trusted):
        with bounded(seconds=2), pytest.raises(CodecError) as exc:
            decode(data)
        assert_one_line(exc.value)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    data = b"\x81" * MAX_DEPTH + b"\x00"
    assert dagcbor.decode(data) == dagcbor.decode_trusted(data)
    assert dagcbor.encode(dagcbor.decode(data)) == data


@pytest.mark.parametrize("major", [2, 3, 4, 5])
@pytest.mark.parametrize("length", [2**63, 2**64 - 1, 2**63 - 1, 2**32, 1 << 30])
def test_huge_declared_lengths_are_refused_without_allocating(major: int, length: int) -> None:
    data = head(major, length) + b"\x00" * 64
    for decode in (dagcbor.decode, dagcbor.decode_trusted):
        with bounded(seconds=1, megabytes=8), pytest.raises(CodecError) as exc:
            decode(data)
        assert "truncated" in str(exc.value)


@pytest.mark.parametrize(
    "data, value",
    [
        (b"\x1b" + b"\xff" * 8, INT_MAX),
        (b"\x3b" + b"\xff" * 8, INT_MIN),
        (b"\x1b\x80" + bytes(7), 2**63),
        (b"\x3b\x7f" + b"\xff" * 7, -(2**63)),
    ],
)
def test_integer_bounds_round_trip(data: bytes, value: int) -> None:
    assert dagcbor.decode(data) == dagcbor.decode_trusted(data) == value
    assert dagcbor.encode(value) == data


@pytest.mark.parametrize(
    "data",
    [
        b"\xc2\x49\x01" + bytes(8),  # bignum 2^64: outside the data model
        b"\xc3\x49\x01" + bytes(8),  # negative bignum -2^64 - 1
        b"\xc2\x41\x00",  # bignum 0, which has a shorter form
    ],
)
def test_bignums_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError, match=r"^invalid DAG-CBOR: tag [23] at byte 0 "):
        dagcbor.decode(data)
