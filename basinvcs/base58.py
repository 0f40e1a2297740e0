"""base58btc (the Bitcoin alphabet), for CIDv0 strings and public keys.

Small enough to own: multiformats would do it, but importing it costs ~25 ms of every command.
"""

from __future__ import annotations

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    chars = []
    while n:
        n, r = divmod(n, 58)
        chars.append(ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\x00"))
    return "1" * zeros + "".join(reversed(chars))


def decode(text: str) -> bytes:
    """Bytes of base58btc `text`; ValueError naming the first character outside the alphabet."""
    digits = []
    for ch in text:
        digit = _INDEX.get(ch)
        if digit is None:
            raise ValueError(f"{ch!r} is not a base58btc character")
        digits.append(digit)
    n = _value(digits, 0, len(digits))
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def _value(digits: list[int], start: int, end: int) -> int:
    """The number digits[start:end] spell in base 58, halves first: a digit at a time costs time
    quadratic in the length (minutes for a 1 MiB key in a config), halving uses fast products."""
    if end - start <= 64:
        n = 0
        for digit in digits[start:end]:
            n = n * 58 + digit
        return n
    mid = (start + end) // 2
    return _value(digits, start, mid) * 58 ** (end - mid) + _value(digits, mid, end)
