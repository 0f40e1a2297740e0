"""DAG-JSON: canonical text as the JS reference writes it, strict decoding of everything else."""

from __future__ import annotations

import random
import struct
from typing import Any

import pytest

from basinvcs.cid import CID
from basinvcs.codec import MAX_DEPTH, dagcbor, dagjson
from basinvcs.errors import CodecError
from tests.codec.common import LINK, LINK_V0, typed

ROUND_TRIPS: list[tuple[Any, str]] = [
    (None, "null"),
    (True, "true"),
    (False, "false"),
    (0, "0"),
    (-1, "-1"),
    (2**64 - 1, "18446744073709551615"),
    (-(2**64), "-18446744073709551616"),
    ("", '""'),
    ('a"b\\c\n\t\r\b\f\x00\x1f\x7f', '"a\\"b\\\\c\\n\\t\\r\\b\\f\\u0000\\u001f\x7f"'),
    ("é水𐅑 ☺ \u2028", '"é水𐅑 ☺ \u2028"'),
    ("</script>", '"</script>"'),
    (b"", '{"/":{"bytes":""}}'),
    (b"\xa1", '{"/":{"bytes":"oQ"}}'),
    (b"\xfb\xff\xbf", '{"/":{"bytes":"+/+/"}}'),
    (LINK, f'{{"/":"{LINK}"}}'),
    (LINK_V0, f'{{"/":"{LINK_V0}"}}'),
    ([], "[]"),
    ([1, [2, None]], "[1,[2,null]]"),
    ({}, "{}"),
    ({"b": 1, "aa": 2, "a": {"y": [], "x": {}}}, '{"a":{"x":{},"y":[]},"aa":2,"b":1}'),
    ({"é": 1, "z": 2, "zz": 3, "Z": 4}, '{"Z":4,"z":2,"zz":3,"é":1}'),
    ({"bytes": "not bytes", "link": LINK}, f'{{"bytes":"not bytes","link":{{"/":"{LINK}"}}}}'),
    ((1, "x"), '[1,"x"]'),
]


@pytest.mark.parametrize(("value", "text"), ROUND_TRIPS, ids=lambda v: repr(v)[:40])
def test_round_trip(value: Any, text: str) -> None:
    data = dagjson.encode(value)
    assert data == text.encode("utf-8")
    expected = list(value) if type(value) is tuple else value
    assert typed(dagjson.decode(data)) == typed(expected)


FLOATS = [
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1.0, "1.0"),
    (-1.0, "-1.0"),
    (100.0, "100.0"),
    (0.5, "0.5"),
    (-1.1, "-1.1"),
    (1e16, "10000000000000000.0"),
    (123456789012345680000.0, "123456789012345680000.0"),
    (1e21, "1e+21"),
    (1.5e300, "1.5e+300"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (0.000001, "0.000001"),
    (0.0000012, "0.0000012"),
    (1e-7, "1e-7"),
    (-8.940696716308594e-8, "-8.940696716308594e-8"),
    (5e-324, "5e-324"),
    (82497.63712086187, "82497.63712086187"),
]


@pytest.mark.parametrize(("value", "text"), FLOATS)
def test_floats_are_written_as_javascript_writes_them(value: float, text: str) -> None:
    assert dagjson.encode(value) == text.encode()
    assert typed(dagjson.decode(text.encode())) == typed(value)


def test_random_floats_round_trip() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        (value,) = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))
        if value != value or value in (float("inf"), float("-inf")):
            continue
        decoded = dagjson.decode(dagjson.encode([value]))
        assert typed(decoded) == typed([value])


def test_numbers_keep_their_kind() -> None:
    assert typed(dagjson.decode(b"[1,1.0,1e2,-0,1E-2]")) == typed([1, 1.0, 100.0, 0, 0.01])


def test_agrees_with_dagcbor() -> None:
    value = {"msg": "héllo", "n": [1, -2, 3.5, 1e300], "l": LINK, "b": b"\x00\x01", "z": None}
    via_json = dagjson.decode(dagjson.encode(value))
    assert typed(via_json) == typed(dagcbor.decode(dagcbor.encode(value)))


SURROGATE = "with an unpaired surrogate (not valid UTF-8)"
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"
DEEP = MAX_DEPTH + 1
RESERVED_KEY = 'map with the key "/", which DAG-JSON reserves for links and bytes'


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"z": [0, float("nan")]}, "cannot encode NaN at /z/1"),
        ([float("inf")], "cannot encode Infinity at /0"),
        (float("-inf"), "cannot encode -Infinity at the top level"),
        ({"a": {"/": LINK}}, f"cannot encode {RESERVED_KEY} at /a"),
        ([2**64], f"cannot encode out-of-range integer {2**64} at /0"),
        ({1: 2}, "cannot encode map key of type int at the top level"),
        ({"s": frozenset()}, "cannot encode value of type frozenset at /s"),
        (["\ud800"], f"cannot encode string {SURROGATE} at /0"),
        ({"k": {"\ud800": 1}}, f"cannot encode map key {SURROGATE} at /k"),
        (_nested(DEEP), f"cannot encode list {TOO_DEEP} at " + "/0" * MAX_DEPTH),
    ],
)
def test_encode_refuses(value: Any, message: str) -> None:
    with pytest.raises(CodecError) as exc:
        dagjson.encode(value)
    assert str(exc.value) == message


RESERVED = (
    'a map with the key "/" must be a link {"/": "<cid>"} or bytes {"/": {"bytes": "<base64>"}}'
)
BASE64 = "bytes must be standard base64 without padding"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "Expecting value: line 1 column 1 (char 0)"),
        (b"[1,]", "Expecting value: line 1 column 4 (char 3)"),
        (b"1 2", "Extra data: line 1 column 3 (char 2)"),
        (b'"\xff"', "not valid UTF-8 at byte 1"),
        (b'{"a":1,"a":2}', 'duplicate map key "a"'),
        (b"NaN", "NaN is not a JSON number"),
        (b"[Infinity]", "Infinity is not a JSON number"),
        (b"-Infinity", "-Infinity is not a JSON number"),
        (b"1e400", "number too large for a 64-bit float at the top level"),
        (b'{"a":[-1e400]}', "number too large for a 64-bit float at /a/0"),
        (b"18446744073709551616", "out-of-range integer 18446744073709551616 at the top level"),
        (b"[-18446744073709551617]", "out-of-range integer -18446744073709551617 at /0"),
        (b"[" + b"9" * 5000 + b"]", "out-of-range integer of over 4300 digits"),
        (b'"\\ud800"', "string with an unpaired surrogate (not valid UTF-8) at the top level"),
        (b'{"\\udc00":1}', "map key with an unpaired surrogate (not valid UTF-8) at the top level"),
        (b'{"/":"bx"}', "bad link: invalid CID 'bx': not canonical unpadded lowercase base32"),
        (b'{"/":""}', "bad link: invalid CID '': empty string"),
        (b'{"/":1}', RESERVED),
        (b'{"/":null}', RESERVED),
        (b'{"/":"' + str(LINK).encode() + b'","x":1}', RESERVED),
        (b'{"/":{"bytes":"oQ","x":1}}', RESERVED),
        (b'{"/":{"byte":"oQ"}}', RESERVED),
        (b'{"/":{"bytes":1}}', BASE64),
        (b'{"/":{"bytes":"oQ=="}}', BASE64),
        (b'{"/":{"bytes":"oR"}}', BASE64),
        (b'{"/":{"bytes":"o"}}', BASE64),
        (b'{"/":{"bytes":"-_8"}}', BASE64),
        (b'{"/":{"bytes":"o Q"}}', BASE64),
        (b"[" * DEEP + b"]" * DEEP, f"list {TOO_DEEP} at " + "/0" * MAX_DEPTH),
        (b"[" * 100_000 + b"]" * 100_000, "nesting too deep for the Python stack"),
    ],
)
def test_decode_rejects(text: bytes, message: str) -> None:
    with pytest.raises(CodecError) as exc:
        dagjson.decode(text)
    assert str(exc.value) == f"invalid DAG-JSON: {message}"


def test_decode_accepts_json_whitespace_and_other_multibases() -> None:
    text = b' { "b" : 1 , "a" : { "/" : "zdpuAtX7ZibcWdSKQwiDCkPjWwRvtcKCPku9H7LhgA4qJW4Wk" } } '
    value = dagjson.decode(text)
    assert value == {"a": CID.parse("zdpuAtX7ZibcWdSKQwiDCkPjWwRvtcKCPku9H7LhgA4qJW4Wk"), "b": 1}
    v1 = b"bafyreidykglsfhoixmivffc5uwhcgshx4j465xwqntbmu43nb2dzqwfvae"  # same CID, base32
    assert dagjson.encode(value) == b'{"a":{"/":"' + v1 + b'"},"b":1}'


def test_mutations_raise_only_codec_errors() -> None:
    """Truncations and random byte flips: a CodecError with a one-line message, or a value."""
    rng = random.Random(3)
    value = {"msg": "héllo\n", "n": [1, -2, 3.5, 1e-7], "l": LINK, "b": b"\x00\x01", "z": None}
    data = dagjson.encode(value)
    variants = [data[:i] for i in range(len(data))]
    for _ in range(2000):
        flipped = bytearray(data)
        flipped[rng.randrange(len(data))] = rng.choice(b'{}[]",:/\\0123456789eE.-+ \x00\xffa')
        variants.append(bytes(flipped))
    for variant in variants:
        try:
            dagjson.decode(variant)
        except CodecError as exc:
            assert "\n" not in str(exc)
