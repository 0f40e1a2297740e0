"""CARv1 (https://ipld.io/specs/transport/car/carv1/): blocks in one stream, as IPFS exchanges them.

A CAR is varint(len(header)) header, then sections varint(len(cid + block)) cid block.  Reading
trusts nothing: varints must be minimal, the header canonical DAG-CBOR, and every block must hash to
its CID, so a CAR from anywhere can be imported block by block without a second check.  Blocks are
not decoded: a CAR may hold any codec, and the store checks what it keeps.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, BinaryIO

from basinvcs.cid import _MAX_VARINT_BYTES, CID, IDENTITY, SHA2_256, _read_varint, _varint
from basinvcs.codec import dagcbor, quote
from basinvcs.errors import CarError, CIDError, CodecError, HashMismatch
from basinvcs.store.base import MAX_BLOCK_SIZE

_MAX_IDENTITY_DIGEST = 128  # the most Kubo accepts inlined in an identity CID (boxo's verifcid)
# The longest section we accept: the largest block under the longest sha2-256 CIDv1 (a 9-byte
# codec varint).  Identity sections are far shorter: their block is their digest.  A longer
# declared length is refused before anything is read.
_MAX_SECTION = MAX_BLOCK_SIZE + 1 + _MAX_VARINT_BYTES + 2 + 32

_KINDS = {
    dict: "a map",
    list: "a list",
    str: "a string",
    bytes: "bytes",
    int: "an integer",
    float: "a float",
    bool: "a boolean",
    type(None): "null",
    CID: "a link",
}


def write_car(
    out: BinaryIO, roots: Sequence[CID], blocks: Iterable[tuple[CID, bytes]]
) -> tuple[int, int]:
    """Stream a CARv1 to out; return (blocks written, bytes written).

    Each block is checked as read_car checks it, so nothing is written that readers would refuse;
    a refused block raises CarError after the sections before it were written.
    """
    header = _header_bytes(roots)
    prefix = _varint(len(header))
    out.write(prefix)
    out.write(header)
    written = len(prefix) + len(header)
    count = 0
    for cid, data in blocks:
        count += 1
        _check_cid(cid, f"cannot write CAR: block {count}")
        _check_block(cid, data, f"cannot write CAR: block {count}")
        prefix = _varint(len(cid.buffer) + len(data))
        out.write(prefix)
        out.write(cid.buffer)
        out.write(data)
        written += len(prefix) + len(cid.buffer) + len(data)
    return count, written


def car_bytes(roots: Sequence[CID], blocks: Iterable[tuple[CID, bytes]]) -> bytes:
    """The whole CARv1 in memory (write_car into a buffer)."""
    buffer = io.BytesIO()
    write_car(buffer, roots, blocks)
    return buffer.getvalue()


def _header_bytes(roots: Sequence[CID]) -> bytes:
    """Canonical DAG-CBOR {"roots": [...], "version": 1}, refusing what read_car would refuse."""
    for i, root in enumerate(roots):
        _check_cid(root, f"cannot write CAR: root {i}")
    return dagcbor.encode({"roots": list(roots), "version": 1})


def read_car(stream: BinaryIO) -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """Read and check the header now; return its roots and a lazy iterator of verified blocks.

    Errors number sections (and the block each holds) from 1 and give the byte offset where each
    starts.  The iterator raises CarError at the first fault, having yielded only the whole,
    verified blocks before it.
    Roots may be empty: the spec asks for one or more, but js-car and go-car v2 write none.
    """
    reader = _Reader(stream)
    return reader.header(), reader.sections()


def read_car_bytes(data: bytes) -> tuple[list[CID], list[tuple[CID, bytes]]]:
    """Read a whole CAR held in memory: its roots and all its blocks, every one verified."""
    roots, blocks = read_car(io.BytesIO(data))
    return roots, list(blocks)


class _Reader:
    """A stream and the offset reached in it, for errors that say where."""

    __slots__ = ("stream", "pos")

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.pos = 0

    def read(self, size: int) -> bytes:
        """Up to size bytes, fewer only at the end of the stream (short reads are retried)."""
        data = self.stream.read(size)
        while len(data) < size:
            more = self.stream.read(size - len(data))
            if not more:
                break
            data += more
        self.pos += len(data)
        return data

    def length(self, where: str) -> int | None:
        """The varint length prefix of a header or section; None at a clean end of the stream."""
        buf = bytearray()
        while len(buf) < _MAX_VARINT_BYTES:
            byte = self.read(1)
            if not byte:
                break
            buf += byte
            if byte[0] < 0x80:
                break
        if not buf:
            return None
        if buf[-1] >= 0x80 and len(buf) < _MAX_VARINT_BYTES:
            raise CarError(f"truncated CAR: {where}: input ends inside its length")
        try:
            return _read_varint(bytes(buf), 0, "length")[0]
        except CIDError as exc:
            reason = str(exc).removeprefix("invalid CID bytes: ")
            raise CarError(f"invalid CAR: {where}: {reason}") from None

    def header(self) -> list[CID]:
        length = self.length("header at byte 0")
        if length is None:
            raise CarError("invalid CAR: empty input")
        if length > MAX_BLOCK_SIZE:
            raise CarError(
                f"invalid CAR: header declares {length} bytes, over the {MAX_BLOCK_SIZE}-byte limit"
            )
        start = self.pos
        data = self.read(length)
        if len(data) < length:
            raise CarError(f"truncated CAR: header declares {length} bytes, {len(data)} remain")
        try:
            header = dagcbor.decode(data)
        except CodecError as exc:
            raise CarError(
                f"invalid CAR header (the {length} bytes from byte {start}): {exc}"
            ) from None
        return _roots(header)

    def sections(self) -> Iterator[tuple[CID, bytes]]:
        number = 0
        while True:
            number += 1
            start = self.pos
            where = f"section {number} at byte {start}"
            length = self.length(where)
            if length is None:
                return
            if length == 0:
                raise CarError(f"invalid CAR: {where} has length 0")
            if length > _MAX_SECTION:
                raise CarError(
                    f"invalid CAR: {where} declares {length} bytes, over the {_MAX_SECTION}-byte"
                    f" limit (a {MAX_BLOCK_SIZE}-byte block and its CID)"
                )
            section = self.read(length)
            if len(section) < length:
                raise CarError(
                    f"truncated CAR: {where} declares {length} bytes, {len(section)} remain"
                )
            cid = _section_cid(section, where)
            data = section[len(cid.buffer) :]
            _check_block(cid, data, f"invalid CAR: block {number} at byte {start}")
            yield cid, data


def _roots(header: Any) -> list[CID]:
    """The roots of a decoded CARv1 header, which must be exactly {"roots", "version": 1}."""
    if type(header) is not dict:
        raise CarError(f"invalid CAR header: {_kind(header)}, not a map")
    if "version" not in header:
        raise CarError("invalid CAR header: no version")
    version = header["version"]
    if type(version) is int and version == 2:
        raise CarError("CARv2 is not supported; export as CARv1")
    if type(version) is not int or version != 1:
        raise CarError(f"invalid CAR header: version is {_describe(version)}, not 1")
    for key in header:
        if key not in ("roots", "version"):
            raise CarError(f"invalid CAR header: unexpected key {quote(key)}")
    if "roots" not in header:
        raise CarError("invalid CAR header: no roots")
    roots = header["roots"]
    if type(roots) is not list:
        raise CarError(f"invalid CAR header: roots is {_kind(roots)}, not a list")
    for i, root in enumerate(roots):
        if type(root) is not CID:
            raise CarError(f"invalid CAR header: root {i} is {_kind(root)}, not a link")
    return roots


def _section_cid(section: bytes, where: str) -> CID:
    """The CID that starts a section; CIDs carry no length, so its parts are read to find it."""
    if section[0] == SHA2_256:
        end = 34  # CIDv0: a bare sha2-256 multihash; from_bytes checks its second byte
    else:
        end = 0
        try:
            for part in ("version", "codec", "hash function", "digest length"):
                size, end = _read_varint(section, end, part)
        except CIDError as exc:
            raise CarError(f"invalid CAR: {where}: {exc}") from None
        end += size
    if end > len(section):
        raise CarError(
            f"invalid CAR: {where}: its CID needs {end} bytes, the section has {len(section)}"
        )
    try:
        return CID.from_bytes(section[:end])
    except CIDError as exc:
        raise CarError(f"invalid CAR: {where}: {exc}") from None


def _check_cid(value: Any, where: str) -> None:
    """Refuse what is not a CID, or a CID whose bytes a reader would not parse."""
    if type(value) is not CID:
        raise CarError(f"{where} is {_kind(value)}, not a CID")
    try:
        CID.from_bytes(value.buffer)
    except CIDError as exc:
        raise CarError(f"{where}: {exc}") from None


def _check_block(cid: CID, data: bytes, where: str) -> None:
    """Refuse a block over the size limit or not hashing to its CID (sha2-256 or identity)."""
    if len(data) > MAX_BLOCK_SIZE:
        raise CarError(f"{where}: {len(data)} bytes, over the {MAX_BLOCK_SIZE}-byte limit")
    code = cid.hash_code
    if code not in (SHA2_256, IDENTITY):
        raise CarError(f"{where}: unsupported hash function 0x{code:x} (CID {cid})")
    if code == IDENTITY and len(cid.digest) > _MAX_IDENTITY_DIGEST:
        raise CarError(
            f"{where}: identity CID inlines {len(cid.digest)} bytes,"
            f" over the {_MAX_IDENTITY_DIGEST}-byte limit"
        )
    try:
        cid.verify(data)
    except HashMismatch:
        raise CarError(f"{where} does not hash to its CID {cid}") from None
    except CIDError as exc:  # a sha2-256 digest that is not 32 bytes
        raise CarError(f"{where}: {exc}") from None


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__qualname__)


def _describe(value: Any) -> str:
    """A header value as it reads in an error: 3, "one", or its kind."""
    if type(value) is str:
        return quote(value)
    return str(value) if type(value) is int else _kind(value)
