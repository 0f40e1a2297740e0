"""DAG-JSON (https://ipld.io/specs/codecs/dag-json/spec/): the IPLD data model as JSON.

For people and for interop with other IPLD tools; blocks are stored as DAG-CBOR.  encode writes
the canonical form (no whitespace, keys sorted by UTF-8 bytes) with floats laid out as the
JavaScript reference implementation writes them, so the bytes, and so the CIDs, agree with it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from json.encoder import encode_basestring  # json.dumps(s, ensure_ascii=False) minus its overhead
from typing import Any, NoReturn

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


def encode(value: Any) -> bytes:
    """Canonical DAG-JSON bytes; links as {"/": cid}, bytes as {"/": {"bytes": base64}}."""
    out: list[str] = []
    try:
        _write(value, 0, out)
    except Refusal as r:
        raise CodecError(f"cannot encode {r.what} at {r.at()}") from None
    except RecursionError:
        raise CodecError("cannot encode value: nesting too deep for the Python stack") from None
    return "".join(out).encode("utf-8")


def _write(value: Any, level: int, out: list[str]) -> None:
    t = type(value)
    if t is str:
        out.append(_string(value, "string"))
    elif t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise Refusal(f"out-of-range integer {int_text(value)}")
        out.append(str(value))
    elif t is float:
        if not math.isfinite(value):
            raise Refusal(non_finite_name(value))
        out.append(_float_text(value))
    elif t is dict:
        _write_map(value, level + 1, out)
    elif t is list or t is tuple:
        _write_list(value, level + 1, out)
    elif t is CID:
        out.append(f'{{"/":"{value}"}}')
    elif t is bytes:
        out.append(f'{{"/":{{"bytes":"{_base64(value)}"}}}}')
    elif t is bool:
        out.append("true" if value else "false")
    elif value is None:
        out.append("null")
    else:
        raise Refusal(f"value of type {t.__qualname__}")


def _write_map(value: dict[Any, Any], level: int, out: list[str]) -> None:
    if level > MAX_DEPTH:
        raise Refusal(f"map nested deeper than {MAX_DEPTH} levels")
    for key in value:
        if type(key) is not str:
            raise Refusal(f"map key of type {type(key).__qualname__}")
    if "/" in value:
        raise Refusal('map with the key "/", which DAG-JSON reserves for links and bytes')
    out.append("{")
    # Python orders str by code point, which is the UTF-8 byte order DAG-JSON asks for.
    for i, key in enumerate(sorted(value)):
        if i:
            out.append(",")
        out.append(_string(key, "map key"))
        out.append(":")
        try:
            _write(value[key], level, out)
        except Refusal as r:
            r.path.append(key)
            raise
    out.append("}")


def _write_list(value: list[Any] | tuple[Any, ...], level: int, out: list[str]) -> None:
    if level > MAX_DEPTH:
        raise Refusal(f"list nested deeper than {MAX_DEPTH} levels")
    out.append("[")
    for i, item in enumerate(value):
        if i:
            out.append(",")
        try:
            _write(item, level, out)
        except Refusal as r:
            r.path.append(str(i))
            raise
    out.append("]")


def _string(text: str, what: str) -> str:
    if not text.isascii():
        utf8_size(text, what)
    return encode_basestring(text)


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _float_text(f: float) -> str:
    """Shortest round-trip digits laid out as JavaScript's Number#toString does, with ".0"
    added to whole numbers so they read back as floats (as @ipld/dag-json writes them)."""
    if f == 0:
        return "-0.0" if math.copysign(1.0, f) < 0 else "0.0"
    mantissa, _, exponent = repr(abs(f)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    all_digits = whole + fraction
    digits = all_digits.lstrip("0")
    # The value is 0.<digits> * 10**point.
    point = len(whole) + int(exponent or 0) - (len(all_digits) - len(digits))
    digits = digits.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        text = digits + "0" * (point - k) + ".0"
    elif 0 < point <= 21:
        text = digits[:point] + "." + digits[point:]
    elif -6 < point <= 0:
        text = "0." + "0" * -point + digits
    else:
        e = point - 1
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + ("e+" if e > 0 else "e-")
        text += str(abs(e))
    return "-" + text if f < 0 else text


def decode(data: bytes) -> Any:
    """Decode DAG-JSON strictly: UTF-8, no duplicate keys, no NaN/Infinity, valid "/" forms."""
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodecError(f"invalid DAG-JSON: not valid UTF-8 at byte {exc.start}") from None
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise CodecError(f"invalid DAG-JSON: {exc}") from None
    except ValueError:  # int() refusing over 4300 digits: far outside the data model anyway
        raise CodecError("invalid DAG-JSON: out-of-range integer of over 4300 digits") from None
    except RecursionError:
        raise CodecError("invalid DAG-JSON: nesting too deep for the Python stack") from None
    try:
        _check(value, 0)
    except Refusal as r:
        raise CodecError(f"invalid DAG-JSON: {r.what} at {r.at()}") from None
    return value


def _constant(name: str) -> NoReturn:
    raise CodecError(f"invalid DAG-JSON: {name} is not a JSON number")


def _object(pairs: list[tuple[str, Any]]) -> Any:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise CodecError(f"invalid DAG-JSON: duplicate map key {quote(key)}")
            seen.add(key)
    if "/" not in obj:
        return obj
    inner = obj["/"]
    if len(obj) == 1 and type(inner) is str:
        try:
            return CID.parse(inner)
        except CIDError as exc:
            raise CodecError(f"invalid DAG-JSON: bad link: {exc}") from None
    if len(obj) == 1 and type(inner) is dict and len(inner) == 1 and "bytes" in inner:
        return _bytes(inner["bytes"])
    raise CodecError(
        'invalid DAG-JSON: a map with the key "/" must be a link {"/": "<cid>"}'
        ' or bytes {"/": {"bytes": "<base64>"}}'
    )


def _bytes(text: Any) -> bytes:
    if type(text) is str:
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if _base64(data) == text:
                return data
    raise CodecError("invalid DAG-JSON: bytes must be standard base64 without padding")


def _check(value: Any, level: int) -> None:
    """What json.loads lets through but the data model forbids: big ints, floats that overflowed
    to infinity, unpaired surrogates from \\u escapes, excessive nesting."""
    t = type(value)
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise Refusal(f"out-of-range integer {int_text(value)}")
    elif t is float:
        if not math.isfinite(value):
            raise Refusal("number too large for a 64-bit float")
    elif t is str:
        if not value.isascii():
            utf8_size(value, "string")
    elif t is list:
        level += 1
        if level > MAX_DEPTH:
            raise Refusal(f"list nested deeper than {MAX_DEPTH} levels")
        for i, item in enumerate(value):
            try:
                _check(item, level)
            except Refusal as r:
                r.path.append(str(i))
                raise
    elif t is dict:
        level += 1
        if level > MAX_DEPTH:
            raise Refusal(f"map nested deeper than {MAX_DEPTH} levels")
        for key, item in value.items():
            if not key.isascii():
                utf8_size(key, "map key")
            try:
                _check(item, level)
            except Refusal as r:
                r.path.append(key)
                raise
