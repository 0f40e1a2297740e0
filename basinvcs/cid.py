"""Content identifiers as a thin wrapper over their binary form.

multiformats' CID costs ~150 µs per decode or str(); walking thousands of commits needs a few
µs, so a CID here is just its bytes, parsed on demand.  multiformats is used only off the hot
path (other multibases, CIDv0 strings, names of hash functions and codecs) and imported only
there, as importing it costs ~40 ms of every command's startup.
"""

from __future__ import annotations

import base64
import hashlib
import re

from basinvcs import base58
from basinvcs.errors import CIDError, HashMismatch

DAG_PB = 0x70
DAG_CBOR = 0x71
DAG_JSON = 0x0129
RAW = 0x55
IDENTITY = 0x00
SHA2_256 = 0x12

CODECS: dict[str, int] = {"dag-cbor": DAG_CBOR, "dag-json": DAG_JSON, "raw": RAW, "dag-pb": DAG_PB}
_CODEC_NAMES = {code: name for name, code in CODECS.items()}

_BASE32_TEXT = re.compile("[a-z2-7]+")
# int(s, 32) reads the digits 0-9a-v; RFC 4648 base32 spells the same values a-z2-7.
_BASE32_TO_INT_DIGITS = str.maketrans(
    "abcdefghijklmnopqrstuvwxyz234567", "0123456789abcdefghijklmnopqrstuv"
)
_MAX_VARINT_BYTES = 9  # the unsigned-varint spec caps values at 2^63 - 1
# multiformats decodes most multibases (base58btc, base36, base10...) in time quadratic in the
# length: a 1 MiB DAG-JSON link would take minutes.  Far longer than any CID in use (a CID with a
# 128-byte inlined identity digest is about 1,250 characters even in base2).
_MAX_MULTIBASE_TEXT = 4096


def _varint(n: int) -> bytes:
    """Unsigned LEB128, as multiformats prefixes are written."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """Strictly read one varint (minimal, at most 9 bytes); return it and the next position."""
    n = shift = 0
    for i in range(pos, min(len(buf), pos + _MAX_VARINT_BYTES)):
        byte = buf[i]
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and i > pos:
                raise CIDError(f"invalid CID bytes: {what} varint is not minimally encoded")
            return n, i + 1
        shift += 7
    if len(buf) - pos >= _MAX_VARINT_BYTES:
        raise CIDError(f"invalid CID bytes: {what} varint is longer than 9 bytes")
    raise CIDError(f"invalid CID bytes: truncated {what} varint")


def _prefix_length(buf: bytes, pos: int) -> int:
    """Position after the varint at pos, for trusted buffers (no checks)."""
    while buf[pos] >= 0x80:
        pos += 1
    return pos + 1


def _v1_prefix(codec: int) -> bytes:
    return b"\x01" + _varint(codec) + b"\x12\x20"


_V1_SHA256_PREFIXES = {code: _v1_prefix(code) for code in CODECS.values()}


class CID:
    """A CID held as its binary form: v0 is the bare 34-byte sha2-256 multihash, v1 is
    varint(1) varint(codec) multihash."""

    __slots__ = ("buffer", "_text")

    def __init__(self, buffer: bytes, text: str | None = None) -> None:
        """Wrap trusted bytes without checking them: the hot path for stored links.

        `text`, when given, must be this CID's canonical string; it saves encoding it again.
        """
        self.buffer = buffer
        self._text = text

    @classmethod
    def from_bytes(cls, b: bytes) -> CID:
        """Wrap untrusted bytes, checking version, varints and digest length."""
        b = bytes(b)
        if len(b) == 36 and b[0] == 1 and b[1] < 0x80 and b[2] == SHA2_256 and b[3] == 32:
            return cls(b)  # the usual shape: v1, one-byte codec, sha2-256
        if not b:
            raise CIDError("invalid CID bytes: empty")
        if b[0] == SHA2_256:
            if len(b) != 34 or b[1] != 0x20:
                raise CIDError("invalid CID bytes: a CIDv0 must be a 34-byte sha2-256 multihash")
            return cls(b)
        version, pos = _read_varint(b, 0, "version")
        if version != 1:
            raise CIDError(f"invalid CID bytes: unsupported CID version {version}")
        _, pos = _read_varint(b, pos, "codec")
        _, pos = _read_varint(b, pos, "hash function")
        size, pos = _read_varint(b, pos, "digest length")
        if len(b) - pos != size:
            raise CIDError(
                f"invalid CID bytes: digest is {len(b) - pos} bytes, multihash declares {size}"
            )
        return cls(b)

    @classmethod
    def parse(cls, text: str) -> CID:
        """Read a CID string: base32 v1 quickly, CIDv0 and other multibases via multiformats."""
        is_v0 = len(text) == 46 and text.startswith("Qm")
        if text[:1] == "b":
            raw = _base32_decode(text[1:])
            if raw is None:
                raise CIDError(
                    f"invalid CID {_shown(text)}: not canonical unpadded lowercase base32"
                )
        elif not text:
            raise CIDError("invalid CID '': empty string")
        elif len(text) > _MAX_MULTIBASE_TEXT:
            raise CIDError(
                f"invalid CID {_shown(text)}: {len(text)} characters, over the"
                f" {_MAX_MULTIBASE_TEXT} read in a multibase other than base32 ('b')"
            )
        else:
            from multiformats import multibase

            try:
                raw = multibase.decode("z" + text if is_v0 else text)
            except KeyError:
                reason = f"unknown multibase prefix {text[0]!r}"
                raise CIDError(f"invalid CID {_shown(text)}: {reason}") from None
            except ValueError:
                raise CIDError(f"invalid CID {_shown(text)}: not valid in its multibase") from None
        try:
            cid = cls.from_bytes(raw)
        except CIDError as exc:
            reason = str(exc).removeprefix("invalid CID bytes: ")
            raise CIDError(f"invalid CID {_shown(text)}: {reason}") from None
        if (cid.version == 0) != is_v0:
            raise CIDError(
                f"invalid CID {_shown(text)}: a CIDv0 is written as bare base58btc 'Qm...'"
            )
        if is_v0 or text[0] == "b":
            cid._text = text  # already the canonical form str() would produce
        return cid

    @classmethod
    def for_block(cls, data: bytes, codec: int = DAG_CBOR) -> CID:
        """The CIDv1 (sha2-256) that a block of the given codec is stored under."""
        prefix = _V1_SHA256_PREFIXES.get(codec) or _v1_prefix(codec)
        return cls(prefix + hashlib.sha256(data).digest())

    @property
    def version(self) -> int:
        return 0 if self.buffer[0] == SHA2_256 else 1

    @property
    def codec(self) -> int:
        buf = self.buffer
        if buf[0] == SHA2_256:
            return DAG_PB
        if buf[1] < 0x80:
            return buf[1]
        return _read_varint(buf, 1, "codec")[0]

    @property
    def codec_name(self) -> str:
        code = self.codec
        name = _CODEC_NAMES.get(code)
        if name is None:
            from multiformats import multicodec

            try:
                name = multicodec.get(code=code).name
            except KeyError:
                name = f"0x{code:x}"
        return name

    def _multihash_start(self) -> int:
        buf = self.buffer
        return 0 if buf[0] == SHA2_256 else _prefix_length(buf, 1)

    @property
    def hash_code(self) -> int:
        return _read_varint(self.buffer, self._multihash_start(), "hash function")[0]

    @property
    def digest(self) -> bytes:
        buf = self.buffer
        pos = _prefix_length(buf, self._multihash_start())
        return buf[_prefix_length(buf, pos) :]

    def verify(self, data: bytes) -> None:
        """Check that data is the block this CID names; corrupt storage raises HashMismatch."""
        buf = self.buffer
        if len(buf) == 36 and buf[0] == 1 and buf[1] < 0x80 and buf[2:4] == b"\x12\x20":
            # CIDv1, one-byte codec, sha2-256: every block we write; the hot path of `log`
            if hashlib.sha256(data).digest() != buf[4:]:
                raise HashMismatch(
                    f"block {self} does not match its hash (stored bytes are corrupt)",
                    subject=self,
                )
            return
        code, digest = self.hash_code, self.digest
        if code == SHA2_256:
            if len(digest) != 32:
                raise CIDError(f"cannot verify block {self}: truncated sha2-256 digest")
            ok = hashlib.sha256(data).digest() == digest
        elif code == IDENTITY:
            ok = bytes(data) == digest
        else:
            from multiformats import multihash

            try:
                name = multihash.get(code=code).name
            except KeyError:  # no such multicodec
                name = f"0x{code:x}"
            except ValueError:  # a multicodec that is no hash function, such as dag-pb
                name = f"0x{code:x} (not a hash function)"
            raise CIDError(f"cannot verify block {self}: unsupported hash function {name}")
        if not ok:
            raise HashMismatch(
                f"block {self} does not match its hash (stored bytes are corrupt)", subject=self
            )

    def __str__(self) -> str:
        if self._text is None:
            buf = self.buffer
            if buf[0] == SHA2_256:
                self._text = base58.encode(buf)
            else:
                self._text = "b" + base64.b32encode(buf).decode("ascii").lower().rstrip("=")
        return self._text

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"

    def __bytes__(self) -> bytes:
        return self.buffer

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CID):
            return NotImplemented
        return self.buffer == other.buffer

    def __hash__(self) -> int:
        return hash(self.buffer)

    def __lt__(self, other: object) -> bool:
        """Order by string form, so sorted output reads the way it prints."""
        if not isinstance(other, CID):
            return NotImplemented
        return str(self) < str(other)


def _shown(text: str) -> str:
    """A CID string for an error message, cut short: errors are one line of sensible length."""
    return repr(text) if len(text) <= 100 else repr(text[:100]) + "..."


def _base32_decode(text: str) -> bytes | None:
    """Canonical unpadded lowercase base32 (RFC 4648) to bytes, None if it is not that.

    base64.b32decode is pure Python before 3.13 and costs ~4 µs a CID; int(..., 32) is C.
    """
    if not _BASE32_TEXT.fullmatch(text) or len(text) % 8 in (1, 3, 6):
        return None
    size, spare_bits = divmod(5 * len(text), 8)
    n = int(text.translate(_BASE32_TO_INT_DIGITS), 32)
    if n & ((1 << spare_bits) - 1):
        return None  # stray bits past the last byte: another text for the same bytes
    return (n >> spare_bits).to_bytes(size, "big")
