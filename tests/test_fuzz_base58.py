"""Fuzzing base58btc: decode inverts encode, refuses foreign characters with ValueError (which
its callers turn into their own errors), and costs little more than linear time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from basinvcs import base58
from tests.fuzzing import bounded


def slow_decode(text: str) -> bytes:
    """The textbook definition, a digit at a time."""
    n = 0
    for ch in text:
        n = n * 58 + base58.ALPHABET.index(ch)
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


@given(st.binary(max_size=300))
def test_round_trip(data: bytes) -> None:
    assert base58.decode(base58.encode(data)) == data


@given(st.text(base58.ALPHABET, max_size=400))
def test_decode_agrees_with_the_definition(text: str) -> None:
    data = base58.decode(text)
    assert data == slow_decode(text)
    assert base58.encode(data) == text


@given(st.text(max_size=40))
def test_arbitrary_text(text: str) -> None:
    try:
        data = base58.decode(text)
    except ValueError as exc:
        assert "is not a base58btc character" in str(exc)
        assert any(ch not in base58.ALPHABET for ch in text)
    else:
        assert base58.encode(data) == text


def test_long_text_is_decoded_quickly() -> None:
    """Was quadratic: 300,000 characters took 10 s, a 1 MiB string (a public key in a
    repository's config) about two minutes."""
    text = "2" * 300_000
    with bounded(seconds=2):
        data = base58.decode(text)
    assert int.from_bytes(data, "big") == (58**300_000 - 1) // 57  # every digit is 1


@pytest.mark.parametrize("text", ["0", "O", "I", "l", "+", "é", "\ud800", "\x00"])
def test_foreign_characters_are_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not a base58btc character"):
        base58.decode("2" + text)
