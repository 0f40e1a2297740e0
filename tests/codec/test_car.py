"""CARv1: exact bytes out, and nothing but CarError (or whole, verified blocks) back in."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path

import pytest

from basinvcs.cid import CID, DAG_CBOR, DAG_JSON, RAW
from basinvcs.codec import dagcbor
from basinvcs.codec.car import car_bytes, read_car, read_car_bytes, write_car
from basinvcs.errors import CarError
from basinvcs.store.base import MAX_BLOCK_SIZE

FIXTURES = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "ipld-codec-fixtures"
)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _v0(data: bytes) -> CID:
    return CID(b"\x12\x20" + hashlib.sha256(data).digest())


def _identity(data: bytes) -> CID:
    return CID(b"\x01\x55\x00" + _varint(len(data)) + data)


def _sha256_cid(data: bytes, codec: int = RAW) -> CID:
    return CID.for_block(data, codec)


CBOR_BLOCK = dagcbor.encode({"basin": [1, 2.5, "z"], "link": _v0(b"x")})
BLOCKS = [
    (_sha256_cid(CBOR_BLOCK, DAG_CBOR), CBOR_BLOCK),
    (_sha256_cid(bytes(range(200))), bytes(range(200))),  # a two-byte section length
    (_v0(b"\x0a\x02\x08\x01"), b"\x0a\x02\x08\x01"),
    (_identity(b"hello"), b"hello"),
    (_sha256_cid(b""), b""),
    (_sha256_cid(b'{"a":1}', DAG_JSON), b'{"a":1}'),
    (_sha256_cid(CBOR_BLOCK, DAG_CBOR), CBOR_BLOCK),  # duplicates are kept, in order
]
ROOTS = [BLOCKS[0][0], BLOCKS[2][0]]
CAR = car_bytes(ROOTS, BLOCKS)


def _section(cid_bytes: bytes, data: bytes) -> bytes:
    return _varint(len(cid_bytes) + len(data)) + cid_bytes + data


def _header(value: object) -> bytes:
    encoded = dagcbor.encode(value)
    return _varint(len(encoded)) + encoded


HEADER = _header({"roots": ROOTS, "version": 1})
ONE_BLOCK = HEADER + _section(BLOCKS[1][0].buffer, BLOCKS[1][1])


def _error(data: bytes) -> str:
    with pytest.raises(CarError) as exc:
        read_car_bytes(data)
    message = str(exc.value)
    assert "\n" not in message
    return message


class _Trickle(io.RawIOBase):
    """A real stream that hands out at most one byte per read, as pipes and sockets may."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self.data[self.pos : self.pos + min(1, len(buffer))]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


# -- writing and round trips ------------------------------------------------------------------


def test_one_block_car_is_byte_exact() -> None:
    cid = _identity(b"hi")  # 01 55 00 02 'h' 'i': CIDv1, raw, identity multihash of 2 bytes
    expected = bytes.fromhex(
        "1b"  # header length 27
        "a2"  # map of 2, keys length-first: "roots" before "version"
        "65" + b"roots".hex() + "81"  # "roots": list of 1
        "d82a"
        "47"
        "00"
        "015500026869"  # tag 42, 7-byte string: 0x00 then the CID
        "67" + b"version".hex() + "01"  # "version": 1
        "08"  # section length: 6 CID bytes + 2 block bytes
        "015500026869"
        "6869"
    )
    out = io.BytesIO()
    assert write_car(out, [cid], [(cid, b"hi")]) == (1, len(expected))
    assert out.getvalue() == expected
    assert read_car_bytes(expected) == ([cid], [(cid, b"hi")])


def test_sha256_section_layout() -> None:
    cid = _sha256_cid(b"basin", DAG_CBOR)
    digest = hashlib.sha256(b"basin").digest()
    assert car_bytes([cid], [(cid, b"basin")]).endswith(
        bytes([4 + 32 + 5]) + b"\x01\x71\x12\x20" + digest + b"basin"
    )


def test_round_trip_keeps_roots_and_blocks_in_order() -> None:
    out = io.BytesIO()
    assert write_car(out, ROOTS, iter(BLOCKS)) == (len(BLOCKS), len(CAR))
    assert out.getvalue() == CAR
    roots, blocks = read_car_bytes(CAR)
    assert roots == ROOTS
    assert blocks == BLOCKS
    assert [cid.version for cid, _ in blocks] == [1, 1, 0, 1, 1, 1, 1]


def test_header_only_and_rootless_cars_round_trip() -> None:
    assert read_car_bytes(car_bytes(ROOTS, [])) == (ROOTS, [])
    assert car_bytes([], []) == bytes.fromhex("11a265726f6f7473806776657273696f6e01")
    assert read_car_bytes(car_bytes([], BLOCKS)) == ([], BLOCKS)


def test_largest_block_round_trips() -> None:
    data = bytes(MAX_BLOCK_SIZE)
    cid = _sha256_cid(data)
    assert read_car_bytes(car_bytes([cid], [(cid, data)])) == ([cid], [(cid, data)])


def test_reading_is_lazy_and_survives_short_reads() -> None:
    roots, blocks = read_car(io.BufferedReader(_Trickle(CAR + b"\x00"), buffer_size=1))
    assert roots == ROOTS
    assert [next(blocks) for _ in BLOCKS] == BLOCKS
    with pytest.raises(CarError, match=f"^invalid CAR: section 8 at byte {len(CAR)} has length 0$"):
        next(blocks)
    roots, blocks = read_car(_Trickle(CAR))  # unbuffered: every read returns one byte
    assert (roots, list(blocks)) == (ROOTS, BLOCKS)


def test_header_is_checked_before_any_section() -> None:
    roots, blocks = read_car(io.BytesIO(HEADER + b"\x80"))
    assert roots == ROOTS
    with pytest.raises(CarError, match="input ends inside its length"):
        next(blocks)


# -- the IPLD codec fixtures' CAR, written by the JavaScript stack --------------------------------


@pytest.mark.skipif(
    not (FIXTURES / "fixtures.car").is_file(),
    reason=f"IPLD codec fixtures not found at {FIXTURES} (they are kept outside the repository)",
)
def test_ipld_fixtures_car_reads_fully_and_is_reproduced_byte_exact() -> None:
    data = (FIXTURES / "fixtures.car").read_bytes()
    roots, blocks = read_car_bytes(data)  # every block re-hashed against its CID
    files = {
        path.stem: path.read_bytes()
        for path in FIXTURES.glob("fixtures/*/*")
        if path.suffix in (".dag-cbor", ".dag-json")
    }
    by_cid = {str(cid): block for cid, block in blocks}
    dag_pb_fixtures = sorted(FIXTURES.glob("fixtures/dagpb_*"))
    # the directory holds a DAG-CBOR and a DAG-JSON form of each fixture, the CAR those and,
    # for each dagpb_* fixture, its DAG-PB form too (not in this data-only copy as a file)
    assert (len(files), len(dag_pb_fixtures)) == (256, 17)
    assert roots == []
    assert len(blocks) == len(by_cid) == 273
    assert {text: by_cid[text] for text in files} == files
    assert Counter(cid.codec_name for cid, _ in blocks) == {
        "dag-cbor": 128,
        "dag-json": 128,
        "dag-pb": len(dag_pb_fixtures),
    }
    assert car_bytes(roots, blocks) == data  # same canonical header, same section framing


# -- bad input -----------------------------------------------------------------------------------


def test_every_prefix_parses_whole_blocks_or_raises_car_error() -> None:
    boundaries = {len(car_bytes(ROOTS, BLOCKS[:n])): n for n in range(len(BLOCKS) + 1)}
    for size in range(len(CAR)):
        prefix = CAR[:size]
        if size in boundaries:
            assert read_car_bytes(prefix) == (ROOTS, BLOCKS[: boundaries[size]])
        else:
            message = _error(prefix)
            assert message.startswith("truncated CAR: ") or size == 0, (size, message)


def test_every_single_byte_corruption_is_caught_or_harmless() -> None:
    expected = [(cid.hash_code, cid.digest, data) for cid, data in BLOCKS]
    for pos in range(len(CAR)):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(CAR)
            corrupt[pos] ^= mask
            try:
                _, blocks = read_car_bytes(bytes(corrupt))
            except CarError as exc:
                assert "\n" not in str(exc)
                continue
            # what still parses can differ only where no hash reaches: the roots, a CID's codec
            assert [(cid.hash_code, cid.digest, data) for cid, data in blocks] == expected


def test_truncation_messages_say_where() -> None:
    assert _error(b"") == "invalid CAR: empty input"
    assert _error(b"\x9b") == "truncated CAR: header at byte 0: input ends inside its length"
    assert (
        _error(HEADER[:10]) == f"truncated CAR: header declares {len(HEADER) - 1} bytes, 9 remain"
    )
    cut = ONE_BLOCK[:-87]
    assert _error(cut) == (
        f"truncated CAR: section 1 at byte {len(HEADER)} declares 236 bytes, {236 - 87} remain"
    )
    assert _error(HEADER + b"\xee") == (
        f"truncated CAR: section 1 at byte {len(HEADER)}: input ends inside its length"
    )


def test_flipped_block_byte_names_the_cid() -> None:
    corrupt = bytearray(ONE_BLOCK)
    corrupt[-1] ^= 0x01
    assert _error(bytes(corrupt)) == (
        f"invalid CAR: block 1 at byte {len(HEADER)} does not hash to its CID {BLOCKS[1][0]}"
    )
    corrupt = CAR.replace(b"\x05hellohello", b"\x05hellojello")  # the block, not its CID
    assert _error(corrupt).endswith(f"does not hash to its CID {_identity(b'hello')}")
    assert " block 4 at byte " in _error(corrupt)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ([ROOTS, 1], "invalid CAR header: a list, not a map"),
        ({"roots": ROOTS}, "invalid CAR header: no version"),
        ({"version": 1}, "invalid CAR header: no roots"),
        ({"roots": ROOTS, "version": 3}, "invalid CAR header: version is 3, not 1"),
        ({"roots": ROOTS, "version": "1"}, 'invalid CAR header: version is "1", not 1'),
        ({"roots": ROOTS, "version": True}, "invalid CAR header: version is a boolean, not 1"),
        ({"roots": ROOTS, "version": 1.0}, "invalid CAR header: version is a float, not 1"),
        ({"roots": ROOTS, "version": 2}, "CARv2 is not supported; export as CARv1"),
        ({"roots": ROOTS, "version": 1, "x": 0}, 'invalid CAR header: unexpected key "x"'),
        ({"roots": ROOTS[0], "version": 1}, "invalid CAR header: roots is a link, not a list"),
        (
            {"roots": [ROOTS[0], "b"], "version": 1},
            "invalid CAR header: root 1 is a string, not a link",
        ),
    ],
)
def test_bad_header_values(header: object, message: str) -> None:
    assert _error(_header(header) + ONE_BLOCK[len(HEADER) :]) == message


def test_carv2_pragma_is_refused_clearly() -> None:
    pragma = bytes.fromhex("0aa16776657273696f6e02")  # the fixed first 11 bytes of every CARv2
    assert _error(pragma + bytes(40) + ONE_BLOCK) == "CARv2 is not supported; export as CARv1"


def test_header_bytes_must_be_canonical_dag_cbor() -> None:
    encoded = HEADER[1:]
    assert _error(_varint(len(encoded) + 1) + encoded + b"\x00") == (
        f"invalid CAR header (the {len(encoded) + 1} bytes from byte 1): invalid DAG-CBOR:"
        f" 1 trailing byte after the value, from byte {len(encoded)}"
    )
    swapped = (  # {"version": 1, "roots": []}: keys out of DAG-CBOR order
        b"\xa2\x67version\x01\x65roots\x80"
    )
    assert _error(_varint(len(swapped)) + swapped) == (
        f"invalid CAR header (the {len(swapped)} bytes from byte 1): non-canonical DAG-CBOR:"
        ' map key "roots" at byte 10 is out of order (keys sort length-first, then bytewise)'
    )
    assert _error(b"\x00") == (
        "invalid CAR header (the 0 bytes from byte 1): invalid DAG-CBOR: empty input"
    )
    assert _error(_varint(MAX_BLOCK_SIZE + 1)) == (
        f"invalid CAR: header declares {MAX_BLOCK_SIZE + 1} bytes,"
        f" over the {MAX_BLOCK_SIZE}-byte limit"
    )


def test_bad_varints() -> None:
    assert _error(bytes([HEADER[0] | 0x80, 0]) + HEADER[1:]) == (
        "invalid CAR: header at byte 0: length varint is not minimally encoded"
    )
    at = len(HEADER)
    section = ONE_BLOCK[at:]
    assert section[:2] == b"\xec\x01"  # 236: a 36-byte CID and 200 bytes
    assert _error(HEADER + b"\xec\x81\x00" + section[2:]) == (
        f"invalid CAR: section 1 at byte {at}: length varint is not minimally encoded"
    )
    assert _error(HEADER + b"\xff" * 9 + b"\x01") == (
        f"invalid CAR: section 1 at byte {at}: length varint is longer than 9 bytes"
    )


def test_trailing_garbage() -> None:
    at = len(ONE_BLOCK)
    assert _error(ONE_BLOCK + b"\x00") == f"invalid CAR: section 2 at byte {at} has length 0"
    assert _error(ONE_BLOCK + b"\x80") == (
        f"truncated CAR: section 2 at byte {at}: input ends inside its length"
    )
    assert (
        _error(ONE_BLOCK + b"\x05ab")
        == f"truncated CAR: section 2 at byte {at} declares 5 bytes, 2 remain"
    )


def test_oversized_sections_are_refused_unread() -> None:
    limit = MAX_BLOCK_SIZE + 44
    assert _error(HEADER + _varint(limit + 1)) == (
        f"invalid CAR: section 1 at byte {len(HEADER)} declares {limit + 1} bytes, over the"
        f" {limit}-byte limit (a {MAX_BLOCK_SIZE}-byte block and its CID)"
    )
    data = bytes(MAX_BLOCK_SIZE + 1)
    cid = _sha256_cid(data)
    assert _error(HEADER + _section(cid.buffer, data)) == (
        f"invalid CAR: block 1 at byte {len(HEADER)}: {MAX_BLOCK_SIZE + 1} bytes,"
        f" over the {MAX_BLOCK_SIZE}-byte limit"
    )


def test_unsupported_and_malformed_hashes() -> None:
    at = len(HEADER)
    sha512 = b"\x01\x55\x13\x40" + hashlib.sha512(b"hi").digest()
    assert _error(HEADER + _section(sha512, b"hi")) == (
        f"invalid CAR: block 1 at byte {at}: unsupported hash function 0x13 (CID {CID(sha512)})"
    )
    short = b"\x01\x55\x12\x10" + hashlib.sha256(b"hi").digest()[:16]
    assert _error(HEADER + _section(short, b"hi")) == (
        f"invalid CAR: block 1 at byte {at}: cannot verify block {CID(short)}:"
        " truncated sha2-256 digest"
    )
    inline = _identity(bytes(129))
    assert _error(HEADER + _section(inline.buffer, bytes(129))) == (
        f"invalid CAR: block 1 at byte {at}: identity CID inlines 129 bytes,"
        " over the 128-byte limit"
    )


@pytest.mark.parametrize(
    ("cid_bytes", "reason"),
    [
        (b"\x02\x55\x00\x00", "invalid CID bytes: unsupported CID version 2"),
        (b"\x01\xd5\x00\x00\x00", "invalid CID bytes: codec varint is not minimally encoded"),
        (b"\x01\x55\x00\x80", "invalid CID bytes: truncated digest length varint"),
        (
            b"\x12\x21" + bytes(32),
            "invalid CID bytes: a CIDv0 must be a 34-byte sha2-256 multihash",
        ),
        (b"\x01\x55\x00\x09abc", "its CID needs 13 bytes, the section has 7"),
        (b"\x12\x20" + bytes(10), "its CID needs 34 bytes, the section has 12"),
    ],
)
def test_bad_section_cids(cid_bytes: bytes, reason: str) -> None:
    assert _error(HEADER + _section(cid_bytes, b"")) == (
        f"invalid CAR: section 1 at byte {len(HEADER)}: {reason}"
    )


def test_writer_refuses_what_readers_would_refuse() -> None:
    cid, data = BLOCKS[1]
    cases = [
        (["bafy"], [], "cannot write CAR: root 0 is a string, not a CID"),
        (
            [CID(b"\x02\x55\x00\x00")],
            [],
            "cannot write CAR: root 0: invalid CID bytes: unsupported CID version 2",
        ),
        (
            [cid],
            [(cid, data), (cid, data + b"!")],
            f"cannot write CAR: block 2 does not hash to its CID {cid}",
        ),
        ([cid], [(str(cid), data)], "cannot write CAR: block 1 is a string, not a CID"),
    ]
    for roots, blocks, message in cases:
        with pytest.raises(CarError) as exc:
            car_bytes(roots, blocks)  # type: ignore[arg-type]
        assert str(exc.value) == message
    big = bytes(MAX_BLOCK_SIZE + 1)
    with pytest.raises(CarError, match=f"^cannot write CAR: block 1: {MAX_BLOCK_SIZE + 1} bytes"):
        car_bytes([cid], [(_sha256_cid(big), big)])
