"""IPLD codecs: strict DAG-CBOR for storage and hashing, DAG-JSON for people and interop.

This module holds the data-model limits both codecs share, so whatever one accepts the other
can encode.
"""

from __future__ import annotations

import json
import math

MAX_DEPTH = 256
"""Deepest nesting of lists and maps accepted, so hostile blocks cannot exhaust the stack."""

INT_MIN = -(1 << 64)
INT_MAX = (1 << 64) - 1


class Refusal(Exception):
    """A value a codec cannot take; enclosing containers add their key or index as it unwinds,
    so the path costs nothing unless something is refused."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what
        self.path: list[str] = []

    def at(self) -> str:
        """Where, as a JSON pointer (/key/0/...), keys cut short and escaped to stay on one line."""
        if not self.path:
            return "the top level"
        segments = (_segment(s) for s in reversed(self.path))
        return "/" + "/".join(segments)


def _segment(key: str) -> str:
    """A JSON-pointer segment for a message: ~ and / escaped as RFC 6901 says, line breaks and
    other unprintable characters as Python escapes (a key may hold any of them), cut at 60."""
    text = key[:60].replace("~", "~0").replace("/", "~1")
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text + ("..." if len(key) > 60 else "")


def int_text(n: int) -> str:
    """An integer for a message, unless it is too long to be worth printing."""
    return str(n) if n.bit_length() <= 256 else f"of {n.bit_length()} bits"


def non_finite_name(f: float) -> str:
    return "NaN" if math.isnan(f) else "Infinity" if f > 0 else "-Infinity"


def quote(key: str) -> str:
    """A string for a one-line message: JSON-quoted (so escaped) and cut short."""
    return json.dumps(key[:60]) + ("..." if len(key) > 60 else "")


def utf8_size(text: str, what: str) -> int:
    """Length of text in UTF-8; strings with unpaired surrogates are not IPLD strings."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Refusal(f"{what} with an unpaired surrogate (not valid UTF-8)") from None
