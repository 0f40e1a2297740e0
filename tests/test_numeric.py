import math
import struct

import pytest

from basinvcs import numeric
from basinvcs.errors import SchemaError


def test_float24_is_the_top_24_bits_rounded_half_even():
    assert numeric.float24_encode([1.0]) == bytes.fromhex("3f8000")
    # float24 keeps 15 mantissa bits: the step just above 1.0 is 2^-15
    step = 2.0**-15
    assert numeric.quantize([1.0 + step])[0] == 1.0 + step
    # half a step rounds to even (down to 1.0), three halves round up to 1 + 2 steps
    assert numeric.quantize([1.0 + step / 2])[0] == 1.0
    assert numeric.quantize([1.0 + 3 * step / 2])[0] == 1.0 + 2 * step


def test_float24_relative_precision_and_idempotence():
    values = [math.sin(i) * 10 ** (i % 7 - 3) for i in range(1, 500)]
    q = numeric.quantize(values)
    for v, w in zip(values, q, strict=True):
        assert abs(v - w) <= abs(v) * 2.0**-16 * 1.0001
    assert numeric.quantize(q) == q  # a stored coordinate survives another round trip unchanged


def test_float24_refuses_non_finite():
    for bad in (math.nan, math.inf, -math.inf, 1e39):
        with pytest.raises(SchemaError, match="finite|overflow"):
            numeric.float24_encode([0.0, bad])
    nan24 = struct.pack(">I", 0x7FC00000)[:3]
    with pytest.raises(SchemaError, match="coordinate 1 is not finite"):
        numeric.float24_decode(b"\0\0\0" + nan24)
    with pytest.raises(SchemaError, match="multiple of 3"):
        numeric.float24_decode(b"\0\0")


def test_fisher_log_codes_within_a_quarter_octave():
    values = [0.0] + [2.0 ** (-x / 3) for x in range(40)]
    top, codes = numeric.fisher_encode(values)
    assert top == 1.0 and len(codes) == numeric.fisher_nbytes(len(values))
    back = numeric.fisher_decode(top, codes, len(values))
    assert back[0] == 0.0
    for v, w in zip(values[1:], back[1:], strict=True):
        if v >= 2.0**-15:
            assert 2**-0.25 - 1e-12 <= w / v <= 2**0.25 + 1e-12
        else:
            assert w == 0.0 or w / v <= 2**0.25  # below the range: dropped to zero


def test_fisher_refuses_bad_values():
    with pytest.raises(SchemaError, match="finite and >= 0"):
        numeric.fisher_encode([1.0, -1.0])
    with pytest.raises(SchemaError, match="all zero"):
        numeric.fisher_encode([0.0, 0.0])
    with pytest.raises(SchemaError, match="expected"):
        numeric.fisher_decode(1.0, b"\0", 10)


def test_fisher_padding_bits_must_be_zero():
    top, codes = numeric.fisher_encode([1.0, 0.5, 0.25])  # 15 bits in 2 bytes: 1 bit of padding
    with pytest.raises(SchemaError, match="padding"):
        numeric.fisher_decode(top, codes[:-1] + bytes([codes[-1] | 1]), 3)
