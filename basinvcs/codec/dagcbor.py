"""Strict DAG-CBOR (https://ipld.io/specs/codecs/dag-cbor/spec/) on top of cbor2's C codec.

A block's CID hashes its exact bytes, so encode writes only the canonical form and decode accepts
only that form.  cbor2 does the work on the fast path; when anything fails there, a small
pure-Python decoder re-reads the bytes to name the first violation and its byte offset.
"""

from __future__ import annotations

import math
import struct
from typing import Any, NoReturn

import cbor2

from basinvcs.cid import CID
from basinvcs.codec import (
    INT_MAX,
    INT_MIN,
    MAX_DEPTH,
    Refusal,
    int_text,
    non_finite_name,
    quote,
    utf8_size,
)
from basinvcs.errors import CIDError, CodecError

_LINK_TAG = 42


def encode(value: Any) -> bytes:
    """Canonical DAG-CBOR: map keys sorted length-first then bytewise, floats always 64-bit.

    cbor2's canonical mode sorts keys but also shrinks floats, which DAG-CBOR forbids, so keys
    are sorted here and cbor2 encodes in its plain mode, which writes every float as 0xfb.
    """
    try:
        prepared = _prepare(value, 0)
    except Refusal as r:
        raise CodecError(f"cannot encode {r.what} at {r.at()}") from None
    except RecursionError:
        raise CodecError("cannot encode value: nesting too deep for the Python stack") from None
    return cbor2.dumps(prepared)


def _prepare(value: Any, level: int) -> Any:
    """Check value against the data model; return it with maps reordered and links tagged."""
    t = type(value)
    if t is str:
        if not value.isascii():
            utf8_size(value, "string")
        return value
    if t is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise Refusal(f"out-of-range integer {int_text(value)}")
    if t is dict:
        return _prepare_map(value, level + 1)
    if t is list or t is tuple:
        return _prepare_list(value, level + 1)
    if t is CID:
        return cbor2.CBORTag(_LINK_TAG, b"\x00" + value.buffer)
    if t is float:
        if math.isfinite(value):
            return value
        raise Refusal(non_finite_name(value))
    if t is bytes or t is bool or value is None:
        return value
    raise Refusal(f"value of type {t.__qualname__}")


def _prepare_map(value: dict[Any, Any], level: int) -> dict[str, Any]:
    if level > MAX_DEPTH:
        raise Refusal(f"map nested deeper than {MAX_DEPTH} levels")
    entries = []
    for key, item in value.items():
        if type(key) is not str:
            raise Refusal(f"map key of type {type(key).__qualname__}")
        size = len(key) if key.isascii() else utf8_size(key, "map key")
        try:
            entries.append((size, key, _prepare(item, level)))
        except Refusal as r:
            r.path.append(key)
            raise
    entries.sort()  # (UTF-8 length, key): str order is code-point order, i.e. UTF-8 byte order
    return {key: item for _, key, item in entries}


def _prepare_list(value: list[Any] | tuple[Any, ...], level: int) -> list[Any]:
    if level > MAX_DEPTH:
        raise Refusal(f"list nested deeper than {MAX_DEPTH} levels")
    out: list[Any] = []
    try:
        for item in value:
            out.append(_prepare(item, level))
    except Refusal as r:
        r.path.append(str(len(out)))
        raise
    return out


def _strict_link(tag: cbor2.CBORTag, immutable: bool) -> CID:
    """cbor2 tag hook on the strict fast path; any failure hands the block to the scanner."""
    content = tag.value
    if tag.tag != _LINK_TAG or type(content) is not bytes or content[:1] != b"\x00":
        raise ValueError("not a well-formed link")
    return CID.from_bytes(content[1:])


def _trusted_link(tag: cbor2.CBORTag, immutable: bool) -> CID:
    if tag.tag != _LINK_TAG:
        raise ValueError("not a link")
    return CID(tag.value[1:])


def _refuse_tag(*args: Any) -> NoReturn:
    """cbor2 semantic decoder for the tags below: stops cbor2, and the scanner names the tag."""
    raise ValueError("not a DAG-CBOR tag")


# Every tag cbor2 (6.x) decodes itself instead of calling the tag hook.  Some cost far more than
# their size: value sharing (28/29) and string references (256/25) expand a few hundred bytes into
# 2^n nodes or gigabytes of repeated strings, decimals (4, 5) and fractions (30) do quadratic
# arithmetic on huge integers.  DAG-CBOR has no tag but 42, so none of them may run on untrusted
# bytes (the scanner then names the tag); tests/codec/test_fuzz_dagcbor.py checks the list.
_CBOR2_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261)
_NO_SEMANTIC_TAGS = dict.fromkeys(_CBOR2_TAGS + (1004, 43000, 55799), _refuse_tag)
# Map keys must be strings or bytes, whose hashes are salted: keys of other kinds (tuples, say)
# can be chosen to collide, and cbor2 takes tens of seconds to build a 1 MiB map of them.
_CBOR2_OPTIONS: dict[str, Any] = {
    "semantic_decoders": _NO_SEMANTIC_TAGS,
    "strict_hashable_types": True,
}


def decode(data: bytes) -> Any:
    """Decode untrusted bytes, accepting nothing but canonical DAG-CBOR.

    Fast path: cbor2 decodes (it silently accepts much that DAG-CBOR forbids: duplicate keys,
    short floats, trailing bytes...), then re-encoding must give back the exact input, which only
    canonical DAG-CBOR does.  _CBOR2_OPTIONS keep cbor2's own work proportional to the input.
    """
    try:
        value = cbor2.loads(data, tag_hook=_strict_link, **_CBOR2_OPTIONS)
        if encode(value) == data:
            return value
    except Exception:  # whatever went wrong, the scanner below names it precisely
        pass
    try:
        return _Scanner(data).document()
    except RecursionError:
        raise CodecError("invalid DAG-CBOR: nesting too deep for the Python stack") from None


def parse(data: bytes) -> Any:
    """cbor2's parse of untrusted bytes, links checked, but not that the bytes are canonical
    (cbor2 accepts duplicate keys, short floats, trailing bytes...): only for a caller that
    re-encodes what it builds from the value and compares that with `data` (Update.decode),
    which proves them canonical. Any error is cbor2's, unchecked: such a caller goes on to
    `decode` for the precise one."""
    return cbor2.loads(data, tag_hook=_strict_link, **_CBOR2_OPTIONS)


def decode_trusted(data: bytes) -> Any:
    """Decode bytes whose hash matched a CID that was strictly validated when stored.

    Skips the re-encode check and CID validation: the hot path for walking history.
    """
    try:
        return cbor2.loads(data, tag_hook=_trusted_link, **_CBOR2_OPTIONS)
    except Exception:
        return decode(data)  # raises with a precise message (or decodes, if cbor2 was wrong)


_KINDS = {
    0: "an integer",
    1: "an integer",
    2: "a byte string",
    3: "a string",
    4: "a list",
    5: "a map",
    6: "a tag",
    7: "a float or simple value",
}
_LENGTH_OF = {2: "byte string", 3: "string", 4: "list", 5: "map"}
_MIN_ARGUMENT = {24: 24, 25: 1 << 8, 26: 1 << 16, 27: 1 << 32}


def _invalid(message: str) -> NoReturn:
    raise CodecError(f"invalid DAG-CBOR: {message}")


def _non_canonical(message: str) -> NoReturn:
    raise CodecError(f"non-canonical DAG-CBOR: {message}")


class _Scanner:
    """Pure-Python strict decoder: slow, but names the first violation and its byte offset."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def document(self) -> Any:
        if not self.data:
            _invalid("empty input")
        value = self.item(0)
        extra = len(self.data) - self.pos
        if extra:
            noun = "byte" if extra == 1 else "bytes"
            _invalid(f"{extra} trailing {noun} after the value, from byte {self.pos}")
        return value

    def item(self, level: int) -> Any:
        data, start = self.data, self.pos
        if start >= len(data):
            _invalid(f"truncated: input ends at byte {start} where a value should start")
        major, info = data[start] >> 5, data[start] & 0x1F
        if major == 7:
            return self.float_or_simple(start, info)
        arg = self.argument(start, major, info)
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return self.take(start, major, arg)
        if major == 3:
            try:
                return self.take(start, major, arg).decode("utf-8")
            except UnicodeDecodeError:
                _invalid(f"string at byte {start} is not valid UTF-8")
        if major == 6:
            return self.link(start, arg, level)
        level += 1
        if level > MAX_DEPTH:
            _invalid(f"nesting deeper than {MAX_DEPTH} levels at byte {start}")
        items = arg if major == 4 else 2 * arg
        if items > len(data) - self.pos:
            _invalid(
                f"truncated: {_LENGTH_OF[major]} at byte {start} declares {arg} entries,"
                f" more than the {len(data) - self.pos} bytes left"
            )
        if major == 4:
            return [self.item(level) for _ in range(arg)]
        return self.map(arg, level)

    def argument(self, start: int, major: int, info: int) -> int:
        """The head's argument (integer value, length or tag number), checked minimal."""
        if info < 24:
            self.pos = start + 1
            return info
        if info == 31 and major in _LENGTH_OF:
            _non_canonical(f"indefinite-length {_LENGTH_OF[major]} at byte {start}")
        if info > 27:
            _invalid(f"ill-formed initial byte 0x{self.data[start]:02x} at byte {start}")
        end = start + 1 + (1 << (info - 24))
        if end > len(self.data):
            _invalid(f"truncated: the head at byte {start} runs past the end of input")
        arg = int.from_bytes(self.data[start + 1 : end], "big")
        if arg < _MIN_ARGUMENT[info]:
            if major < 2:
                what = f"integer {arg if major == 0 else -1 - arg}"
            elif major == 6:
                what = f"tag number {arg}"
            else:
                what = f"{_LENGTH_OF[major]} length {arg}"
            _non_canonical(f"{what} not minimally encoded at byte {start}")
        self.pos = end
        return arg

    def take(self, start: int, major: int, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            kind = _LENGTH_OF[major]
            _invalid(f"truncated: {size}-byte {kind} at byte {start} runs past the end of input")
        self.pos = end
        return self.data[end - size : end]

    def float_or_simple(self, start: int, info: int) -> Any:
        if info == 27:
            end = start + 9
            if end > len(self.data):
                _invalid(f"truncated: float at byte {start} runs past the end of input")
            (value,) = struct.unpack_from(">d", self.data, start + 1)
            if not math.isfinite(value):
                _invalid(f"{non_finite_name(value)} at byte {start}")
            self.pos = end
            return value
        if 20 <= info <= 22:
            self.pos = start + 1
            return (False, True, None)[info - 20]
        if info in (25, 26):
            width = 16 if info == 25 else 32
            _non_canonical(f"{width}-bit float at byte {start} (DAG-CBOR floats are 64-bit)")
        if info == 23:
            _invalid(f"undefined (0xf7) at byte {start}")
        if info == 31:
            _invalid(f"unexpected break (0xff) at byte {start}")
        if info < 24:
            _invalid(f"simple value {info} at byte {start}")
        if info == 24:
            _invalid(f"two-byte simple value at byte {start}")
        _invalid(f"ill-formed initial byte 0x{self.data[start]:02x} at byte {start}")

    def link(self, start: int, tag: int, level: int) -> CID:
        if tag != _LINK_TAG:
            _invalid(f"tag {tag} at byte {start} (only tag 42, a link, is allowed)")
        if self.pos < len(self.data) and self.data[self.pos] >> 5 != 2:
            found = _KINDS[self.data[self.pos] >> 5]
            _invalid(f"tag 42 at byte {start} wraps {found}, not a byte string")
        content = self.item(level)
        if content[:1] != b"\x00":
            _invalid(f"tag 42 at byte {start}: link bytes must start with 0x00")
        try:
            return CID.from_bytes(content[1:])
        except CIDError as exc:
            _invalid(f"tag 42 at byte {start}: {exc}")

    def map(self, size: int, level: int) -> dict[str, Any]:
        out = {}
        previous = b""
        for _ in range(size):
            key_at = self.pos
            if key_at < len(self.data) and self.data[key_at] >> 5 != 3:
                found = _KINDS[self.data[key_at] >> 5]
                _invalid(f"map key at byte {key_at} is {found}, not a string")
            key = self.item(level)
            encoded = self.data[key_at : self.pos]
            # Encoded string keys compare bytewise exactly as DAG-CBOR orders them: the minimal
            # head makes a shorter key sort first, then the UTF-8 bytes decide.
            if encoded <= previous:
                if encoded == previous:
                    _invalid(f"duplicate map key {quote(key)} at byte {key_at}")
                _non_canonical(
                    f"map key {quote(key)} at byte {key_at} is out of order"
                    " (keys sort length-first, then bytewise)"
                )
            previous = encoded
            out[key] = self.item(level)
        return out
