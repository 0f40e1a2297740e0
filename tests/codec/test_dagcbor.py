"""Strict DAG-CBOR: canonical output, and every non-canonical or invalid input refused precisely."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from basinvcs.cid import CID, DAG_PB
from basinvcs.codec import MAX_DEPTH, dagcbor
from basinvcs.errors import CodecError
from tests.codec.common import LINK, LINK_V0, typed

NONCANONICAL = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "dag-cbor-noncanonical.json").read_text()
)


def test_noncanonical_fixture_file_covers_enough() -> None:
    assert len(NONCANONICAL) >= 15
    assert len({case["name"] for case in NONCANONICAL}) == len(NONCANONICAL)
    assert all(set(case) == {"name", "hex", "reason"} for case in NONCANONICAL)


@pytest.mark.parametrize("case", NONCANONICAL, ids=lambda case: case["name"])
def test_noncanonical_fixture_is_rejected(case: dict[str, str]) -> None:
    data = bytes.fromhex(case["hex"])
    with pytest.raises(CodecError) as exc:
        dagcbor.decode(data)
    message = str(exc.value)
    assert "\n" not in message
    assert message.startswith(("invalid DAG-CBOR: ", "non-canonical DAG-CBOR: "))


NON_CANONICAL = "non-canonical DAG-CBOR: "
INVALID = "invalid DAG-CBOR: "
OUT_OF_ORDER = "is out of order (keys sort length-first, then bytewise)"


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("a16161811801", NON_CANONICAL + "integer 1 not minimally encoded at byte 4"),
        ("82013b0000000000000000", NON_CANONICAL + "integer -1 not minimally encoded at byte 2"),
        ("a2616201616102", NON_CANONICAL + f'map key "a" at byte 4 {OUT_OF_ORDER}'),
        ("a262610a01616202", NON_CANONICAL + f'map key "b" at byte 5 {OUT_OF_ORDER}'),
        ("a3636261720363666f6f0163666f6f02", INVALID + 'duplicate map key "foo" at byte 11'),
        ("8301f93c0002", NON_CANONICAL + "16-bit float at byte 2 (DAG-CBOR floats are 64-bit)"),
        ("81c11a514b67b0", INVALID + "tag 1 at byte 1 (only tag 42, a link, is allowed)"),
        ("a16161", INVALID + "truncated: input ends at byte 3 where a value should start"),
        ("82016261", INVALID + "truncated: 2-byte string at byte 2 runs past the end of input"),
        ("0101", INVALID + "1 trailing byte after the value, from byte 1"),
        ("010203", INVALID + "2 trailing bytes after the value, from byte 1"),
        ("a162c32801", INVALID + "string at byte 1 is not valid UTF-8"),
        ("a16161d82a4100", INVALID + "tag 42 at byte 3: invalid CID bytes: empty"),
    ],
)
def test_errors_name_the_violation_and_its_offset(hex_: str, message: str) -> None:
    with pytest.raises(CodecError) as exc:
        dagcbor.decode(bytes.fromhex(hex_))
    assert str(exc.value) == message


def test_control_characters_in_keys_stay_on_one_line() -> None:
    with pytest.raises(CodecError) as exc:
        dagcbor.decode(bytes.fromhex("a262620a0162610a02"))  # {"b\n": 1, "a\n": 2}
    assert str(exc.value) == NON_CANONICAL + f'map key "a\\n" at byte 5 {OUT_OF_ORDER}'
    with pytest.raises(CodecError) as exc:
        dagcbor.decode(bytes.fromhex("a262610a0162610a02"))
    assert str(exc.value) == 'invalid DAG-CBOR: duplicate map key "a\\n" at byte 5'


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


SURROGATE = "with an unpaired surrogate (not valid UTF-8)"
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"z": [0, 1, 2, float("nan")]}, "cannot encode NaN at /z/3"),
        ([float("inf")], "cannot encode Infinity at /0"),
        ({"a": {"b": float("-inf")}}, "cannot encode -Infinity at /a/b"),
        (float("nan"), "cannot encode NaN at the top level"),
        ({"a/b": {"~": 2**64}}, f"cannot encode out-of-range integer {2**64} at /a~1b/~0"),
        ([-(2**64) - 1], f"cannot encode out-of-range integer {-(2**64) - 1} at /0"),
        ([10**1000], "cannot encode out-of-range integer of 3322 bits at /0"),
        ({"m": {1: "x"}}, "cannot encode map key of type int at /m"),
        ({"m": {b"k": "x"}}, "cannot encode map key of type bytes at /m"),
        ({"s": {1, 2}}, "cannot encode value of type set at /s"),
        ([bytearray(b"x")], "cannot encode value of type bytearray at /0"),
        ([1.5, object()], "cannot encode value of type object at /1"),
        (["ok", "\ud800"], f"cannot encode string {SURROGATE} at /1"),
        ({"\udc00": 1}, f"cannot encode map key {SURROGATE} at the top level"),
        (_nested(MAX_DEPTH + 1), f"cannot encode list {TOO_DEEP} at " + "/0" * MAX_DEPTH),
    ],
)
def test_encode_refuses(value: Any, message: str) -> None:
    with pytest.raises(CodecError) as exc:
        dagcbor.encode(value)
    assert str(exc.value) == message


ROUND_TRIPS: list[tuple[Any, str]] = [
    (None, "f6"),
    (False, "f4"),
    (True, "f5"),
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (255, "18ff"),
    (256, "190100"),
    (65535, "19ffff"),
    (65536, "1a00010000"),
    (2**32 - 1, "1affffffff"),
    (2**32, "1b0000000100000000"),
    (2**64 - 1, "1bffffffffffffffff"),
    (-1, "20"),
    (-24, "37"),
    (-25, "3818"),
    (-(2**64), "3bffffffffffffffff"),
    (0.0, "fb0000000000000000"),
    (-0.0, "fb8000000000000000"),
    (1.0, "fb3ff0000000000000"),
    (1.5, "fb3ff8000000000000"),
    (5e-324, "fb0000000000000001"),
    (1.7976931348623157e308, "fb7fefffffffffffff"),
    ("", "60"),
    ("a", "6161"),
    ("水", "63e6b0b4"),
    ("𐅑", "64f0908591"),
    ("x" * 24, "7818" + "78" * 24),
    (b"", "40"),
    (b"\x00\xff", "4200ff"),
    (bytes(256), "590100" + "00" * 256),
    ([], "80"),
    ([[]], "8180"),
    ([1, [2, 3]], "8201820203"),
    (list(range(24)), "9818" + "".join(f"{i:02x}" for i in range(24))),
    ({}, "a0"),
    ({"b": 1, "aa": 2, "a": 3}, "a361610361620162616102"),
    ({"é": 1, "z": 2, "zz": 3}, "a3617a02627a7a0362c3a901"),
    (LINK, "d82a582500" + LINK.buffer.hex()),
    (LINK_V0, "d82a582300" + LINK_V0.buffer.hex()),
    ({"link": LINK, "list": [LINK_V0, None]}, None),
    (_nested(MAX_DEPTH), "81" * MAX_DEPTH + "00"),
]


@pytest.mark.parametrize(("value", "hex_"), ROUND_TRIPS, ids=lambda v: repr(v)[:40])
def test_round_trip(value: Any, hex_: str | None) -> None:
    data = dagcbor.encode(value)
    if hex_ is not None:
        assert data.hex() == hex_
    assert typed(dagcbor.decode(data)) == typed(value)
    assert typed(dagcbor.decode_trusted(data)) == typed(value)
    assert dagcbor.encode(dagcbor.decode(data)) == data


def test_tuples_encode_as_lists() -> None:
    assert dagcbor.encode((1, (2, "x"))) == dagcbor.encode([1, [2, "x"]])


def test_bool_is_not_int() -> None:
    assert dagcbor.encode([True, 1, False, 0]).hex() == "84f501f400"
    assert typed(dagcbor.decode(bytes.fromhex("82f501"))) == [(bool, True), (int, 1)]


def test_floats_are_always_64_bit() -> None:
    for f in (0.5, 1.0, 100.0, 65504.0, 1e-7, 3.4028234663852886e38):
        data = dagcbor.encode(f)
        assert len(data) == 9 and data[0] == 0xFB


def test_decoded_links_are_validated_cids() -> None:
    value = dagcbor.decode(dagcbor.encode({"a": LINK, "b": LINK_V0}))
    assert value == {"a": LINK, "b": LINK_V0}
    assert type(value["a"]) is CID and value["b"].codec == DAG_PB


def test_decode_trusted_skips_cid_validation() -> None:
    bogus = CID(b"\x01\x71\x12\x20" + bytes(3))  # digest too short: strict decode refuses it
    data = dagcbor.encode([bogus])
    assert dagcbor.decode_trusted(data) == [bogus]
    with pytest.raises(CodecError, match="invalid CID bytes: digest is 3 bytes"):
        dagcbor.decode(data)


def test_decode_trusted_reports_garbage_precisely() -> None:
    with pytest.raises(CodecError, match=r"^invalid DAG-CBOR: truncated"):
        dagcbor.decode_trusted(bytes.fromhex("a16161"))


def test_deep_nesting_is_bounded() -> None:
    for depth in (MAX_DEPTH + 1, 400, 100_000):
        with pytest.raises(CodecError) as exc:
            dagcbor.decode(b"\x81" * depth + b"\x00")
        expected = f"nesting deeper than {MAX_DEPTH} levels at byte {MAX_DEPTH}"
        assert str(exc.value) == INVALID + expected
    assert dagcbor.decode(b"\xa1\x61a" * MAX_DEPTH + b"\x00") is not None


def test_mutations_raise_only_codec_errors() -> None:
    """Truncations and random byte flips of valid blocks: either a CodecError or, if accepted,
    input that is exactly the canonical encoding of what it decoded to."""
    rng = random.Random(42)
    samples = [dagcbor.encode(v) for v, _ in ROUND_TRIPS[:-1]]
    samples.append(dagcbor.encode({"msg": "hello", "n": [1, -2, 3.5], "l": LINK, "b": b"\x00\x01"}))
    for data in samples:
        variants = [data[:i] for i in range(len(data))]
        for _ in range(60):
            flipped = bytearray(data)
            flipped[rng.randrange(len(data))] = rng.randrange(256)
            variants.append(bytes(flipped))
        for variant in variants:
            try:
                value = dagcbor.decode(variant)
            except CodecError as exc:
                assert "\n" not in str(exc)
            else:
                assert dagcbor.encode(value) == variant
