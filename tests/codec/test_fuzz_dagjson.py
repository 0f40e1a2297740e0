"""Fuzzing DAG-JSON: decode takes any valid spelling (spacing, key order, number forms), so what
it accepts need not be canonical, but it must be a data-model value whose canonical encoding
decodes to the same value; whatever it refuses is a one-line CodecError."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.codec import MAX_DEPTH, dagjson
from basinvcs.errors import CodecError
from tests.codec.common import typed
from tests.fuzzing import (
    FLOATS,
    JSON_FRAGMENTS,
    JSON_TEXTS,
    assert_one_line,
    bounded,
    ipld_values,
    mutants,
)


def check(data: bytes) -> None:
    try:
        value = dagjson.decode(data)
    except CodecError as exc:
        assert_one_line(exc)
        assert str(exc).startswith("invalid DAG-JSON: ")
        event("refused")
        return
    event("accepted as canonical" if dagjson.encode(value) == data else "accepted")
    canonical = dagjson.encode(value)
    assert typed(dagjson.decode(canonical)) == typed(value)
    assert dagjson.encode(dagjson.decode(canonical)) == canonical


@given(ipld_values(json_keys=True))
def test_values_round_trip(value: Any) -> None:
    data = dagjson.encode(value)
    assert typed(dagjson.decode(data)) == typed(value)


@given(FLOATS)
def test_floats_round_trip_exactly(f: float) -> None:
    back = dagjson.decode(dagjson.encode(f))
    assert type(back) is float and back == f and math.copysign(1, back) == math.copysign(1, f)


@given(st.binary(max_size=64))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


@given(JSON_TEXTS)
def test_json_texts(text: str) -> None:
    """JSON in every spelling, with links, bytes, lone surrogates, NaN, duplicate keys..."""
    check(text.encode("utf-8", "surrogatepass"))


@given(mutants(ipld_values(json_keys=True).map(dagjson.encode), JSON_FRAGMENTS))
def test_mutated_blocks(data: bytes) -> None:
    check(data)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b"[" * 100_000,
        b'{"/":' * 100_000,
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
    ],
)
def test_deep_nesting_is_refused(data: bytes) -> None:
    with bounded(seconds=2), pytest.raises(CodecError) as exc:
        dagjson.decode(data)
    assert_one_line(exc.value)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"1" * 5000, "out-of-range integer of over 4300 digits"),
        (b"18446744073709551616", "out-of-range integer 18446744073709551616"),
        (b"-18446744073709551617", "out-of-range integer -18446744073709551617"),
        (b"1e400", "number too large for a 64-bit float"),
        (b"1" * 5000 + b".0", "number too large for a 64-bit float"),
        (b"1e" + b"9" * 100_000, "number too large for a 64-bit float"),
        (b"NaN", "NaN is not a JSON number"),
        (b"-Infinity", "-Infinity is not a JSON number"),
    ],
)
def test_numbers_outside_the_data_model_are_refused(data: bytes, message: str) -> None:
    with bounded(seconds=1), pytest.raises(CodecError) as exc:
        dagjson.decode(data)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "data, value",
    [
        (b"18446744073709551615", 2**64 - 1),
        (b"-18446744073709551616", -(2**64)),
        (b"0." + b"0" * 100_000 + b"1", 0.0),
        (b"1e-400", 0.0),
        (b"-0", 0),
    ],
)
def test_numbers_at_the_edges_are_read(data: bytes, value: Any) -> None:
    with bounded(seconds=1):
        assert typed(dagjson.decode(data)) == typed(value)


def test_long_links_in_other_multibases_are_refused_quickly() -> None:
    """Was: multiformats decodes base36 in quadratic time, ~2 minutes for a 1 MiB link."""
    data = b'{"/":"k' + b"2" * 1_000_000 + b'"}'
    with bounded(seconds=1), pytest.raises(CodecError) as exc:
        dagjson.decode(data)
    message = str(exc.value)
    assert message.startswith("invalid DAG-JSON: bad link: invalid CID 'k222")
    assert "1000001 characters, over the 4096" in message and len(message) < 300


@pytest.mark.parametrize(
    "data, where",
    [
        (b'{"\\r":"\\ud800"}', "/\\r"),  # was: a line break in the message
        (b'{"a":{"\\u2028\\u0085\\n":["\\udc00"]}}', "/a/\\u2028\\x85\\n/0"),
        (b'{"a/b~c":"\\ud800"}', "/a~1b~0c"),
        (b'{"' + b"k" * 100 + b'":"\\ud800"}', "/" + "k" * 60 + "..."),
    ],
)
def test_paths_in_messages_stay_on_one_line(data: bytes, where: str) -> None:
    with pytest.raises(CodecError) as exc:
        dagjson.decode(data)
    assert str(exc.value) == (
        f"invalid DAG-JSON: string with an unpaired surrogate (not valid UTF-8) at {where}"
    )
