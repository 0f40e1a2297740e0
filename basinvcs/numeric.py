"""Exact byte layouts for the vectors in a basin packet.

A 1024-dimensional packet must fit in 4 KiB, so float32 coordinates (4096 bytes alone) cannot be
stored as they are. Coordinates are stored as *float24*: the top 24 bits of the IEEE-754 binary32
pattern, rounded to nearest even (relative precision 2^-16), big-endian. The Fisher diagonal only
weights and scales, so it is stored as 5-bit log codes relative to its maximum (steps of sqrt(2),
15.5 octaves of range). See docs/format.md.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence

from .errors import SchemaError

FISHER_BITS = 5
_FISHER_TOP = (1 << FISHER_BITS) - 1  # code 31 is the maximum; code 0 is "no information"
_EXP_MASK = 0x7F80  # exponent bits of a float24's upper 16 bits
FLOAT24_MAX = (2 - 2**-15) * 2.0**127  # the largest finite float24: 0x7F7FFF, about 3.4e38


def to_float32(values: Iterable[float]) -> array:
    """Values as float32, refusing NaN and infinities (also those that overflow float32)."""
    out = array("f", values)
    for i, v in enumerate(out):
        if not math.isfinite(v):
            raise SchemaError(f"coordinate {i} is {v}: coordinates must be finite")
    return out


def float24_encode(values: Sequence[float]) -> bytes:
    """float32-round, then keep the top 24 bits of each value (round half to even)."""
    words = array("I", to_float32(values).tobytes())
    out = bytearray(3 * len(words))
    for i, u in enumerate(words):
        top, low = u >> 8, u & 0xFF
        if low > 0x80 or (low == 0x80 and top & 1):
            top += 1
        if (top >> 8) & _EXP_MASK == _EXP_MASK:
            raise SchemaError(f"coordinate {i} overflows float24")
        out[3 * i : 3 * i + 3] = top.to_bytes(3, "big")
    return bytes(out)


def float24_decode(data: bytes) -> array:
    """float24 bytes to float32 values (exact); NaN or infinity patterns are refused."""
    if len(data) % 3:
        raise SchemaError(f"float24 vector has {len(data)} bytes, not a multiple of 3")
    words = array(
        "I", (int.from_bytes(data[i : i + 3], "big") << 8 for i in range(0, len(data), 3))
    )
    for i, u in enumerate(words):
        if (u >> 16) & _EXP_MASK == _EXP_MASK:
            raise SchemaError(f"coordinate {i} is not finite")
    return array("f", words.tobytes())


def quantize(values: Sequence[float]) -> array:
    """What `values` become after a float24 round trip: the coordinates a packet really holds."""
    return float24_decode(float24_encode(values))


def fisher_encode(values: Sequence[float]) -> tuple[float, bytes]:
    """Fisher diagonal -> (maximum, packed 5-bit codes). Values must be finite and >= 0."""
    for i, v in enumerate(values):
        if not math.isfinite(v) or v < 0:
            raise SchemaError(f"Fisher value {i} is {v}: it must be finite and >= 0")
    top = max(values, default=0.0)
    if top <= 0:
        raise SchemaError("Fisher diagonal is all zero: leave it out instead")
    acc = 0
    for v in values:
        ratio = v / top  # 0.0 when v is that far below the maximum: no information, code 0
        code = 0 if ratio <= 0 else round(_FISHER_TOP + 2 * math.log2(ratio))
        acc = (acc << FISHER_BITS) | max(code, 0)
    return float(top), _pack_bits(acc, len(values))


def fisher_decode(top: float, codes: bytes, dim: int) -> array:
    """Inverse of fisher_encode for a vector of `dim` values."""
    if len(codes) != fisher_nbytes(dim):
        raise SchemaError(f"Fisher codes have {len(codes)} bytes, expected {fisher_nbytes(dim)}")
    if not math.isfinite(top) or top <= 0:
        raise SchemaError(f"Fisher maximum {top} must be finite and > 0")
    acc = int.from_bytes(codes, "big")
    padding = 8 * len(codes) - FISHER_BITS * dim
    if acc & ((1 << padding) - 1):
        raise SchemaError("Fisher codes have non-zero padding bits")
    acc >>= padding
    out = array("d", bytes(8 * dim))
    for i in range(dim - 1, -1, -1):
        code = acc & _FISHER_TOP
        acc >>= FISHER_BITS
        out[i] = top * 2.0 ** ((code - _FISHER_TOP) / 2) if code else 0.0
    return out


def fisher_nbytes(dim: int) -> int:
    return (FISHER_BITS * dim + 7) // 8


def _pack_bits(acc: int, count: int) -> bytes:
    nbytes = fisher_nbytes(count)
    return (acc << (8 * nbytes - FISHER_BITS * count)).to_bytes(nbytes, "big")
