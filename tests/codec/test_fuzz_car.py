"""Fuzzing CARv1 reading: a CAR that reads is exactly what write_car writes for its roots and
blocks (so nothing in it was skipped or altered), streamed or not, and every fault is a one-line
CarError found without reading more than one section's worth at a time."""

from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.cid import _MAX_VARINT_BYTES, CID, DAG_CBOR, DAG_JSON, DAG_PB, RAW, _varint
from basinvcs.codec import dagcbor
from basinvcs.codec.car import _MAX_SECTION, car_bytes, read_car, read_car_bytes
from basinvcs.errors import CarError
from basinvcs.store.base import MAX_BLOCK_SIZE
from tests.fuzzing import CIDS, assert_one_line, bounded, mutants, node_mutants, v1_cid


class Source(io.RawIOBase):
    """A stream that hands out at most `chunk` bytes a read and fails the test if asked for more
    than a section can hold: a reader must not trust a declared length before checking it."""

    def __init__(self, data: bytes, chunk: int = 1 << 30) -> None:
        self.data, self.pos, self.chunk = data, 0, chunk

    def read(self, size: int = -1) -> bytes:
        assert 0 <= size <= _MAX_SECTION, f"asked to read {size} bytes at once"
        out = self.data[self.pos : self.pos + min(size, self.chunk)]
        self.pos += len(out)
        return out


def _block(kind: str, codec: int, data: bytes) -> tuple[CID, bytes]:
    digest = hashlib.sha256(data).digest()
    if kind == "v0":
        return CID(b"\x12\x20" + digest), data
    if kind == "identity":
        return v1_cid(codec, 0x00, data), data
    if kind == "wide":  # a 9-byte codec varint, the longest a CID may have
        return v1_cid(2**63 - 1, 0x12, digest), data
    return CID.for_block(data, codec), data


BLOCKS = st.builds(
    _block,
    st.sampled_from(["sha256", "sha256", "v0", "identity", "wide"]),
    st.sampled_from([RAW, DAG_CBOR, DAG_JSON, DAG_PB]),
    st.binary(max_size=40),
)
CARS = st.builds(car_bytes, st.lists(CIDS, max_size=3), st.lists(BLOCKS, max_size=4))
VARINT_FRAGMENTS = [
    b"\xff" * 8 + b"\x7f",  # 2^63 - 1
    b"\xff" * 9,  # no end within 9 bytes
    b"\x80\x00",  # not minimal
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # 2^56
    _varint(MAX_BLOCK_SIZE + 1),
    _varint(_MAX_SECTION + 1),
    b"\x00",
    b"\x12\x20",
    b"\x01\x71\x12\x20",
    b"\x01\x55\x00",
]


def outcome(read: object) -> tuple[list[CID], list[tuple[CID, bytes]]] | str:
    try:
        return read()  # type: ignore[operator]
    except CarError as exc:
        assert_one_line(exc)
        return f"CarError: {exc}"


def streamed(data: bytes, chunk: int) -> tuple[list[CID], list[tuple[CID, bytes]]]:
    roots, blocks = read_car(Source(data, chunk))
    return roots, list(blocks)


def check(data: bytes, chunk: int = 1 << 30) -> None:
    whole = outcome(lambda: read_car_bytes(data))
    assert outcome(lambda: streamed(data, chunk)) == whole
    event("refused" if isinstance(whole, str) else f"read, {len(whole[1])} blocks")
    if isinstance(whole, tuple):
        roots, blocks = whole
        assert car_bytes(roots, blocks) == data


@given(st.lists(CIDS, max_size=3), st.lists(BLOCKS, max_size=4))
def test_round_trip(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> None:
    data = car_bytes(roots, blocks)
    assert read_car_bytes(data) == (roots, blocks)
    check(data)


@given(st.binary(max_size=80), st.integers(1, 9))
def test_arbitrary_bytes(data: bytes, chunk: int) -> None:
    check(data, chunk)


@given(mutants(CARS, VARINT_FRAGMENTS), st.integers(1, 40))
def test_mutated_cars(data: bytes, chunk: int) -> None:
    check(data, chunk)


@st.composite
def framed_cars(draw: st.DrawFn) -> bytes:
    """CARs put together part by part, every block hashing to its CID: headers that are any
    canonical DAG-CBOR near {"roots": [...], "version": 1}, section lengths off by a little."""
    header = draw(node_mutants(st.builds(lambda r: {"roots": r, "version": 1}, st.lists(CIDS))))
    encoded = dagcbor.encode(header)
    out = [_varint(len(encoded) + draw(st.sampled_from([0, 0, 0, -1, 1]))), encoded]
    for cid, data in draw(st.lists(BLOCKS, max_size=3)):
        size = len(cid.buffer) + len(data) + draw(st.sampled_from([0, 0, 0, 0, -1, 1, -33]))
        out += [_varint(max(size, 0)), cid.buffer, data]
    return b"".join(out)


@given(framed_cars(), st.integers(1, 40))
def test_framed_cars(data: bytes, chunk: int) -> None:
    check(data, chunk)


# -- regressions: lengths that must not be believed ----------------------------------------------

HEADER = car_bytes([], [])  # 18 bytes


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xff" * 8 + b"\x7f", "invalid CAR: header declares 9223372036854775807 bytes, over"),
        (b"\xff" * 9, "invalid CAR: header at byte 0: length varint is longer than 9 bytes"),
        (_varint(MAX_BLOCK_SIZE + 1), "invalid CAR: header declares 1048577 bytes, over"),
        (_varint(MAX_BLOCK_SIZE), "truncated CAR: header declares 1048576 bytes, 0 remain"),
        (HEADER + b"\xff" * 8 + b"\x7f", "invalid CAR: section 1 at byte 18 declares 92233"),
        (HEADER + _varint(_MAX_SECTION + 1), "invalid CAR: section 1 at byte 18 declares 1048621"),
        (HEADER + _varint(_MAX_SECTION), "truncated CAR: section 1 at byte 18 declares 1048620"),
        (HEADER + b"\x80", "truncated CAR: section 1 at byte 18: input ends inside its length"),
        (HEADER + b"\x80\x00", "invalid CAR: section 1 at byte 18: length varint is not minimal"),
    ],
)
def test_huge_lengths_are_refused_before_reading(data: bytes, message: str) -> None:
    with bounded(seconds=1, megabytes=4), pytest.raises(CarError) as exc:
        streamed(data, chunk=1 << 30)
    assert str(exc.value).startswith(message)


def test_a_stream_of_endless_length_prefixes_is_refused() -> None:
    """A stream that never ends (a pipe, say) with ever-longer varints: refused at byte 9."""

    class Endless(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            assert size <= _MAX_VARINT_BYTES
            return b"\xff" * size

    with bounded(seconds=1), pytest.raises(CarError, match="longer than 9 bytes"):
        read_car(Endless())
