"""CID: our bytes-backed class must agree with multiformats' CID, and refuse malformed input."""

from __future__ import annotations

import base64
import hashlib

import pytest
from multiformats import CID as ReferenceCID
from multiformats import multihash

from basinvcs.cid import CID, CODECS, DAG_CBOR, DAG_JSON, DAG_PB, IDENTITY, RAW, SHA2_256
from basinvcs.errors import BasinError, CIDError, HashMismatch

# CIDs of every kind from the IPLD codec fixtures: v0, v1 in several codecs and hash functions.
CANONICAL = [
    "QmQg1v4o9xdT3Q14wh4S7dxZkDjyZ9ssFzFzyep1YrVJBY",
    "QmXg9Pp2ytZ14xgmQjYEiHjVjMFXzCVVEcRTWJBmLgR39V",
    "bafkqabiaaebagba",  # raw, identity hash
    "bafkreiebzrnroamgos2adnbpgw5apo3z4iishhbdx77gldnbk57d4zdio4",  # raw, sha2-256
    "bafyreidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm",  # dag-cbor
    "bafybeidskjjd4zmr7oh6ku6wp72vvbxyibcli2r6if3ocdcy7jjjusvl2u",  # dag-pb as v1
    "bagcqcera73rupyla6bauseyk75rslfys3st25spm75ykhvgusqvv2zfqtucq",  # dag-jose
    "bagyacvradn6dsgl6sw2jwoh7s3d37hq5wsu7g22wtdwnmaaaaaaaaaaaaaaa",  # 2-byte codec varint
    "baf4bcfgio3hovkftaer3yx6jsnm6navhg4yimwi",  # git-raw, sha1
    "bafykbzacecsojezibtcusm6e5viht7v4k3cap2dibolnx6wvembq54xqjdaxc",  # 2-byte hash varint
]
OTHER_BASES = [
    "z8mWaJ1dZ9fH5EetPuRsj8jj26pXsgpsr",
    "zdj7Wd8AMwqnhJGQCbFxBVodGSBG84TM7Hs1rcJuQMwTyfEDS",
    "zdpuAtX7ZibcWdSKQwiDCkPjWwRvtcKCPku9H7LhgA4qJW4Wk",
]


@pytest.mark.parametrize("text", CANONICAL + OTHER_BASES)
def test_parse_agrees_with_multiformats(text: str) -> None:
    ours, ref = CID.parse(text), ReferenceCID.decode(text)
    assert ours.buffer == bytes(ref)
    assert (ours.version, ours.codec) == (ref.version, ref.codec.code)
    assert ours.hash_code == ref.hashfun.code
    assert ours.digest == bytes(ref.raw_digest)
    assert ours.codec_name == ref.codec.name
    expected = str(ref) if ref.version == 0 else str(ref.set(base="base32"))
    assert str(ours) == expected


@pytest.mark.parametrize("text", CANONICAL)
def test_canonical_strings_round_trip(text: str) -> None:
    cid = CID.parse(text)
    assert str(cid) == text
    assert CID.from_bytes(bytes(cid)) == cid
    assert repr(cid) == f"CID({text!r})"


def test_for_block_is_cidv1_sha2_256() -> None:
    data = b"\xa1aa\x01"
    for codec in (DAG_CBOR, DAG_JSON, RAW, DAG_PB, 0x85):
        cid = CID.for_block(data, codec)
        ref = ReferenceCID("base32", 1, codec, multihash.digest(data, "sha2-256"))
        assert cid.buffer == bytes(ref)
        assert (cid.version, cid.codec, cid.hash_code) == (1, codec, SHA2_256)
        assert cid.digest == hashlib.sha256(data).digest()
    assert CID.for_block(data).codec == DAG_CBOR
    odd = CID.for_block(data, 0x7FFF00)  # a codec multiformats does not know
    assert odd.buffer == b"\x01\x80\xfe\xff\x03\x12\x20" + hashlib.sha256(data).digest()
    assert odd.codec == 0x7FFF00


def test_codec_table_and_names() -> None:
    assert CODECS == {"dag-cbor": 0x71, "dag-json": 0x0129, "raw": 0x55, "dag-pb": 0x70}
    for name, code in CODECS.items():
        assert CID.for_block(b"", code).codec_name == name
    assert CID.parse(CANONICAL[0]).codec_name == "dag-pb"
    assert CID.for_block(b"", 0x7FFF00).codec_name == "0x7fff00"


def test_equality_hash_and_order() -> None:
    a, b = CID.for_block(b"a"), CID.for_block(b"b")
    assert a == CID(bytes(a.buffer)) and hash(a) == hash(CID(a.buffer))
    assert a != b and a != str(a)
    assert len({a, b, CID(a.buffer)}) == 2
    cids = [CID.parse(t) for t in CANONICAL]
    assert [str(c) for c in sorted(cids)] == sorted(CANONICAL)
    assert bytes(a) == a.buffer


def test_verify() -> None:
    data = b"some block"
    CID.for_block(data).verify(data)
    with pytest.raises(HashMismatch) as exc:
        CID.for_block(data).verify(data + b"!")
    cid = CID.for_block(data)
    assert str(exc.value) == f"block {cid} does not match its hash (stored bytes are corrupt)"
    identity = CID(b"\x01\x55" + bytes([IDENTITY, 3]) + b"abc")
    identity.verify(b"abc")
    with pytest.raises(HashMismatch):
        identity.verify(b"abd")


def test_verify_refuses_what_it_cannot_check() -> None:
    sha1 = CID.parse("baf4bcfgio3hovkftaer3yx6jsnm6navhg4yimwi")
    with pytest.raises(CIDError, match="unsupported hash function sha1"):
        sha1.verify(b"")
    truncated = CID.from_bytes(b"\x01\x71\x12\x04" + hashlib.sha256(b"").digest()[:4])
    with pytest.raises(CIDError, match="truncated sha2-256 digest"):
        truncated.verify(b"")


V1 = CID.for_block(b"x").buffer


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\x12\x20" + bytes(31), "34-byte sha2-256 multihash"),
        (b"\x12\x21" + bytes(33), "34-byte sha2-256 multihash"),
        (b"\x02" + V1[1:], "unsupported CID version 2"),
        (b"\x00" + V1[1:], "unsupported CID version 0"),
        (b"\x81\x00" + V1[1:], "version varint is not minimally encoded"),
        (b"\x01\xf1\x00\x12\x20" + bytes(32), "codec varint is not minimally encoded"),
        (b"\x01\x71\x12", "truncated digest length varint"),
        (b"\x01\x71", "truncated hash function varint"),
        (b"\x01" + b"\xff" * 9 + b"\x01", "codec varint is longer than 9 bytes"),
        (V1[:-1], "digest is 31 bytes, multihash declares 32"),
        (V1 + b"\x00", "digest is 33 bytes, multihash declares 32"),
    ],
)
def test_from_bytes_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(CIDError) as exc:
        CID.from_bytes(raw)
    assert str(exc.value).startswith("invalid CID bytes: ")
    assert reason in str(exc.value)


GOOD = CANONICAL[4]
B32 = "not canonical unpadded lowercase base32"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty string"),
        ("xyz", "unknown multibase prefix 'x'"),
        ("b" + GOOD[1:].upper(), B32),
        (GOOD + "=", B32),
        (GOOD[:-1], B32),
        (GOOD[:-2], "digest is 31 bytes, multihash declares 32"),
        (GOOD[:-1] + "1", B32),
        (GOOD[:-1] + _ALPHABET[_ALPHABET.index(GOOD[-1]) ^ 1], B32),  # stray bits
        (GOOD + "é", B32),
        (GOOD + "\n", B32),
        ("b", B32),
        ("bafy_reidj5idub6mapiupjwjsyyxhyhedxycv4vihfsicm2vt46o7morwlm", B32),
        ("zQmXg9Pp2ytZ14xgmQjYEiHjVjMFXzCVVEcRTWJBmLgR39V", "a CIDv0 is written as bare base58btc"),
        ("QmXg9Pp2ytZ14xgmQjYEiHjVjMFXzCVVEcRTWJBmLgR390", "not valid in its multibase"),
        ("QmXg9Pp2ytZ14xgmQjYEiHjVjMFXzCVVEcRTWJBmLgR39", "unknown multibase prefix 'Q'"),
        ("z111", "unsupported CID version 0"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(CIDError) as exc:
        CID.parse(text)
    message = str(exc.value)
    assert message.startswith(f"invalid CID {text!r}: ")
    assert reason in message
    assert "\n" not in message and isinstance(exc.value, BasinError)


def test_other_multibases_are_accepted() -> None:
    assert CID.parse(GOOD.upper()) == CID.parse(GOOD)  # 'B': upper-case base32


def test_v0_in_base32_is_refused() -> None:
    v0 = CID.parse(CANONICAL[1])
    text = "b" + base64.b32encode(v0.buffer).decode().lower().rstrip("=")
    with pytest.raises(CIDError, match="a CIDv0 is written as bare base58btc"):
        CID.parse(text)


def test_constructor_does_not_validate() -> None:
    assert CID(b"\x01\x71\x12\x20").buffer == b"\x01\x71\x12\x20"
