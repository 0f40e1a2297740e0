"""Fuzzing CID parsing, from bytes and from strings: a CID read back names the same bytes and
prints to a string that reads back to it; anything else is a one-line CIDError."""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from multiformats import multibase

from basinvcs.cid import CID
from basinvcs.errors import BasinError, CIDError
from tests.fuzzing import CIDS, VARINTS, assert_one_line, bounded, mutants, v1_cid

OTHER_BASES = ["base32upper", "base36", "base58btc", "base16", "base64", "base64url", "base2"]


def check_bytes(data: bytes) -> None:
    try:
        cid = CID.from_bytes(data)
    except CIDError as exc:
        assert_one_line(exc)
        assert str(exc).startswith("invalid CID bytes: ")
        event("refused")
        return
    event("accepted")
    assert cid.buffer == data and bytes(cid) == data
    check_cid(cid)


def check_text(text: str) -> None:
    try:
        cid = CID.parse(text)
    except CIDError as exc:
        assert_one_line(exc)
        assert str(exc).startswith("invalid CID ")
        event("refused")
        return
    event("accepted")
    check_cid(cid)
    if text.startswith("b") or cid.version == 0:
        assert str(cid) == text  # the canonical forms are the only ones accepted there


def check_cid(cid: CID) -> None:
    """What every parsed CID must do: print, read back from its string and bytes, describe
    itself, and check a block without crashing."""
    assert CID.parse(str(cid)) == cid and str(CID.parse(str(cid))) == str(cid)
    assert CID.from_bytes(cid.buffer) == cid
    assert cid.version in (0, 1)
    assert cid.codec_name and isinstance(cid.hash_code, int)
    assert cid.buffer.endswith(cid.digest)
    try:
        cid.verify(b"")
    except BasinError as exc:
        assert_one_line(exc)


@given(VARINTS, VARINTS, st.binary(max_size=70))
def test_v1_round_trip(codec: int, hash_code: int, digest: bytes) -> None:
    cid = v1_cid(codec, hash_code, digest)
    check_bytes(cid.buffer)
    assert (cid.version, cid.codec, cid.hash_code, cid.digest) == (1, codec, hash_code, digest)
    assert str(cid).startswith("b")


@given(CIDS, st.sampled_from(OTHER_BASES))
def test_other_multibases_read_the_same_cid(cid: CID, base: str) -> None:
    text = multibase.encode(cid.buffer, base)
    if cid.version == 0:
        with pytest.raises(CIDError, match="a CIDv0 is written as bare base58btc"):
            CID.parse(text)
    else:
        assert CID.parse(text) == cid


@given(st.binary(max_size=48))
def test_arbitrary_bytes(data: bytes) -> None:
    check_bytes(data)


@given(mutants(CIDS.map(lambda cid: cid.buffer)))
def test_mutated_bytes(data: bytes) -> None:
    check_bytes(data)


@given(st.text(max_size=60))
def test_arbitrary_text(text: str) -> None:
    check_text(text)


@given(
    mutants(
        st.builds(
            lambda cid, base: str(cid) if base is None else multibase.encode(cid.buffer, base),
            CIDS,
            st.sampled_from([None, None, *OTHER_BASES]),
        ).map(str.encode)
    )
)
def test_mutated_text(data: bytes) -> None:
    check_text(data.decode("utf-8", "replace"))


@pytest.mark.parametrize("prefix", ["z", "k", "K", "9", "Z", "v", "h", "t", "7", "0", "f", "m"])
def test_long_text_is_refused_before_decoding(prefix: str) -> None:
    """Was: multiformats decodes base58btc, base36, base10... in quadratic time: a 1 MiB CID
    string (a DAG-JSON link, say) took about two minutes."""
    text = prefix + "2" * 1_000_000
    with bounded(seconds=1), pytest.raises(CIDError) as exc:
        CID.parse(text)
    message = str(exc.value)
    assert message == (
        f"invalid CID {text[:100]!r}...: 1000001 characters, over the 4096 read in a multibase"
        " other than base32 ('b')"
    )


def test_long_base32_text_is_read_in_linear_time() -> None:
    text = "b" + "a" * 1_000_000
    with bounded(seconds=1), pytest.raises(CIDError, match="unsupported CID version 0"):
        CID.parse(text)


def test_long_v1_cids_read_back() -> None:
    cid = v1_cid(0x55, 0x00, bytes(range(256)) * 4)  # a 1 KiB identity digest
    assert CID.parse(str(cid)) == cid and CID.from_bytes(cid.buffer) == cid
    assert CID.parse(multibase.encode(cid.buffer, "base58btc")) == cid  # 1,400 characters


@pytest.mark.parametrize(
    "hex_, name",
    [
        ("01000100", "0x1 (not a hash function)"),  # cidv1, a multicodec but no hash function
        ("01557000", "0x70 (not a hash function)"),  # dag-pb
        ("0155ffff0300", "0xffff"),  # no multicodec at all
        ("01551300", "sha2-512"),  # a hash function this cannot check
    ],
)
def test_verify_names_hash_functions_it_cannot_check(hex_: str, name: str) -> None:
    """Was: a hash code that multiformats knows as something else raised MultihashValueError."""
    cid = CID.from_bytes(bytes.fromhex(hex_))
    with pytest.raises(CIDError) as exc:
        cid.verify(b"")
    assert str(exc.value) == f"cannot verify block {cid}: unsupported hash function {name}"
