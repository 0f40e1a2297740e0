"""Hypothesis strategies and checks shared by the fuzz tests (test_fuzz_*.py).

The settings profiles ("ci" by default, "long" for scripts/fuzz) are registered in conftest.py.
Every reader of untrusted bytes must either return a value that survives the round trip its
format promises, or raise a BasinError whose message is one line; anything else is a crash.
"""

from __future__ import annotations

import base64
import copy
import json
import signal
import struct
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hypothesis import strategies as st

from basinvcs.cid import CID, DAG_CBOR, DAG_JSON, DAG_PB, RAW, _varint
from basinvcs.codec import INT_MAX, INT_MIN
from basinvcs.errors import BasinError
from basinvcs.objects import Chart

# -- the IPLD data model -------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=16)  # no lone surrogates: valid UTF-8
INTS = st.one_of(
    st.integers(-30, 30),
    st.integers(INT_MIN, INT_MAX),
    st.sampled_from([INT_MIN, INT_MAX, -(2**63), 2**63 - 1, 23, 24, 255, 256, 65535, 65536]),
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
VARINTS = st.one_of(st.integers(0, 0x7F), st.integers(0, 2**63 - 1))  # what a CID may hold

BLOCK_CIDS = st.builds(
    CID.for_block, st.binary(max_size=8), st.sampled_from([DAG_CBOR, DAG_JSON, RAW, DAG_PB])
)
V0_CIDS = st.binary(min_size=32, max_size=32).map(lambda d: CID(b"\x12\x20" + d))


def v1_cid(codec: int, hash_code: int, digest: bytes) -> CID:
    return CID(b"\x01" + _varint(codec) + _varint(hash_code) + _varint(len(digest)) + digest)


ODD_CIDS = st.builds(v1_cid, VARINTS, VARINTS, st.binary(max_size=70))  # well-formed, unusual
CIDS = st.one_of(BLOCK_CIDS, V0_CIDS, ODD_CIDS)


def ipld_values(*, json_keys: bool = False, max_leaves: int = 16) -> st.SearchStrategy[Any]:
    """Values of the IPLD data model. `json_keys` leaves out the map key "/", which DAG-JSON
    reserves for links and bytes."""
    keys = TEXT.filter(lambda k: k != "/") if json_keys else TEXT
    scalars = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT, st.binary(max_size=24), CIDS)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


# -- raw CBOR: well-formed or nearly, canonical or not -------------------------------------------

WIDTHS = st.sampled_from([None, None, None, 0, 1, 2, 3])  # None: minimal head


def head(major: int, arg: int, width: int | None = None) -> bytes:
    """A CBOR head: minimal when width is None, else with a 1-, 2-, 4- or 8-byte argument (width
    0..3), minimal or not; an argument too wide for the width is cut to fit."""
    if width is None:
        if arg < 24:
            return bytes([major << 5 | arg])
        width = next(w for w in range(4) if arg < 1 << (8 << w))
    arg &= (1 << (8 << width)) - 1
    return bytes([major << 5 | (24 + width)]) + arg.to_bytes(1 << width, "big")


def link_bytes(cid: CID) -> bytes:
    return b"\xd8\x2a" + head(2, len(cid.buffer) + 1) + b"\x00" + cid.buffer


def text_item(text: str) -> bytes:
    data = text.encode()
    return head(3, len(data)) + data


# tags cbor2 decodes itself (dagcbor._NO_SEMANTIC_TAGS), the link tag, and any other
TAGS = st.one_of(
    st.sampled_from([42, 42, 0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 256, 258, 55799]),
    st.integers(0, 2**64 - 1),
)
_ANY_FLOAT = st.floats()
_CBOR_LEAVES = st.one_of(
    st.builds(head, st.sampled_from([0, 1]), st.integers(0, 2**64 - 1), WIDTHS),
    st.builds(
        lambda major, payload, width: head(major, len(payload), width) + payload,
        st.sampled_from([2, 3]),
        st.one_of(st.binary(max_size=12), TEXT.map(str.encode)),
        WIDTHS,
    ),
    st.lists(st.binary(max_size=4).map(lambda b: head(2, len(b)) + b), max_size=3).map(
        lambda chunks: b"\x5f" + b"".join(chunks) + b"\xff"
    ),
    _ANY_FLOAT.map(lambda f: b"\xfb" + struct.pack(">d", f)),
    st.binary(min_size=2, max_size=2).map(lambda b: b"\xf9" + b),
    st.binary(min_size=4, max_size=4).map(lambda b: b"\xfa" + b),
    st.integers(0, 23).map(lambda v: bytes([0xE0 | v])),
    st.integers(0, 255).map(lambda v: b"\xf8" + bytes([v])),
    CIDS.map(link_bytes),
    st.sampled_from([b"\xff", b"\x1c", b"\xfc", b"\x5c", b"\x7f", b"\x9f", b"\xbf"]),
)
_CBOR_KEYS = st.one_of(TEXT.map(text_item), TEXT.map(text_item), _CBOR_LEAVES)


def _cbor_containers(inner: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.builds(
            lambda items, width: head(4, len(items), width) + b"".join(items),
            st.lists(inner, max_size=4),
            WIDTHS,
        ),
        st.lists(inner, max_size=3).map(lambda items: b"\x9f" + b"".join(items) + b"\xff"),
        st.builds(
            lambda pairs, width: head(5, len(pairs), width) + b"".join(k + v for k, v in pairs),
            st.lists(st.tuples(_CBOR_KEYS, inner), max_size=4),
            WIDTHS,
        ),
        st.builds(lambda tag, width, item: head(6, tag, width) + item, TAGS, WIDTHS, inner),
    )


CBOR_STREAMS = st.recursive(_CBOR_LEAVES, _cbor_containers, max_leaves=12)

# Fragments worth splicing into CBOR: heads claiming 2^63 or 2^64 - 1 bytes or items, the
# reference and link tags, indefinite lengths, NaN, undefined, big integers.
CBOR_FRAGMENTS = [
    head(major, arg) for major in (2, 3, 4, 5) for arg in (2**63, 2**64 - 1, 2**32, 1 << 20)
] + [
    b"\x1b" + b"\xff" * 8,  # 2^64 - 1
    b"\x3b" + b"\xff" * 8,  # -2^64
    b"\xc2\x49\x01" + bytes(8),  # bignum 2^64
    b"\xd8\x1c",  # tag 28, shareable
    b"\xd8\x1d\x00",  # tag 29, reference 0
    b"\xd9\x01\x00",  # tag 256, string-reference namespace
    b"\xd8\x19\x00",  # tag 25, string reference 0
    b"\xd8\x2a",
    b"\xd8\x2a\x58\x25\x00",
    b"\x9f",
    b"\xff",
    b"\xf7",
    b"\xf9\x7e\x00",
    b"\xfb\x7f\xf8" + bytes(6),
    b"\x61",
]

# -- JSON text: valid or nearly, canonical or not ------------------------------------------------

_WS = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])
_NUMBERS = st.one_of(
    INTS.map(str),
    st.integers().map(str),
    FLOATS.map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "-0.0", "01", "1.", ".5"]),
)
_STRINGS = st.one_of(
    TEXT.map(lambda s: json.dumps(s, ensure_ascii=False)),
    st.text(max_size=8).map(json.dumps),  # \u escapes, lone surrogates among them
    st.sampled_from(['"\\ud800"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"', '"\\u0000"', '"/"']),
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _link_json(cid: CID) -> str:
    return json.dumps({"/": str(cid)})


def _bytes_json(data: bytes, encode: Any = _b64) -> str:
    return json.dumps({"/": {"bytes": encode(data)}})


_JSON_LEAVES = st.one_of(
    _NUMBERS,
    _STRINGS,
    st.sampled_from(["null", "true", "false"]),
    CIDS.map(_link_json),
    st.binary(max_size=12).map(_bytes_json),
    st.binary(max_size=12).map(lambda b: _bytes_json(b, lambda d: base64.b64encode(d).decode())),
    st.binary(max_size=12).map(
        lambda b: _bytes_json(b, lambda d: base64.urlsafe_b64encode(d).decode())
    ),
)


def _json_containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    member = st.builds(lambda a, k, b, v: f"{a}{k}{b}:{a}{v}", _WS, _STRINGS, _WS, inner)
    return st.one_of(
        st.builds(
            lambda a, items: "[" + a + ",".join(items) + a + "]", _WS, st.lists(inner, max_size=4)
        ),
        st.builds(
            lambda a, items: "{" + a + ",".join(items) + "}", _WS, st.lists(member, max_size=4)
        ),
    )


JSON_TEXTS = st.recursive(_JSON_LEAVES, _json_containers, max_leaves=12)
JSON_FRAGMENTS = [
    b"[", b"]", b"{", b"}", b'"', b",", b":", b"\\", b"\\ud800", b"\\u0000", b"1e999", b"-0",
    b"NaN", b"Infinity", b'{"/":', b'"bytes"', b"9" * 30, b"\xff", b"\xc3", b" ", b"null",
]  # fmt: skip

# Python values as JSON documents hold them, NaN, infinities and integers of any size included.
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([2**64, -(2**64) - 1, 10**400]),
        st.floats(),
        TEXT,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=8,
)
JSON_WRONG_KINDS = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 2**63, 1.5, -0.0, "", "x", [], {}, ["x"]]),
    JSON_VALUES,
)

# -- mutations -----------------------------------------------------------------------------------

_OPS = ("flip", "set", "insert", "delete", "truncate", "duplicate")


@st.composite
def mutants(
    draw: st.DrawFn, originals: st.SearchStrategy[bytes], fragments: Sequence[bytes] = ()
) -> bytes:
    """An original with one to three edits: bit flips, bytes set, inserted, deleted or repeated,
    a truncation, or a fragment (say a head claiming 2^63 bytes) spliced in."""
    data = bytearray(draw(originals))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from((*_OPS, "fragment") if fragments else _OPS))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[at:]
        elif op == "fragment":
            data[at:at] = draw(st.sampled_from(fragments))
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 16))]
    return bytes(data)


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) inside a decoded node, depth first."""
    if type(node) is dict:
        for key, value in node.items():
            yield node, key
            yield from _slots(value)
    elif type(node) is list:
        for i, value in enumerate(node):
            yield node, i
            yield from _slots(value)


WRONG_KINDS = st.one_of(
    st.sampled_from(
        [None, True, False, 0, 1, -1, 2, 2**64 - 1, -(2**64), 0.0, 1.0, -1.0, 1e300, "", "x"]
        + [b"", bytes(32), bytes(64), [], {}, [1.0], ["x"], {"x": 1}]
    ),
    ipld_values(max_leaves=4),
)


@st.composite
def node_mutants(
    draw: st.DrawFn, nodes: st.SearchStrategy[Any], values: st.SearchStrategy[Any] = WRONG_KINDS
) -> Any:
    """A decoded block (or JSON document) with one edit deep inside: a value replaced by one of
    `values` (or by a neighbour's), a map entry removed or added, a list item removed or
    repeated."""
    node = copy.deepcopy(draw(nodes))
    slots = list(_slots(node))
    if not slots:
        return draw(values)
    container, key = draw(st.sampled_from(slots))
    op = draw(st.sampled_from(["replace", "replace", "remove", "add", "swap"]))
    if op == "replace":
        container[key] = draw(values)
    elif op == "remove":
        del container[key]
    elif op == "add" and type(container) is dict:
        names = st.sampled_from([*map(str, container), "x", "type", "version", ""])
        container[draw(names)] = draw(values)
    elif op == "add":
        container.insert(key, container[key])
    else:
        other, other_key = draw(st.sampled_from(slots))
        container[key] = copy.deepcopy(other[other_key])
    return node


# -- objects -------------------------------------------------------------------------------------

LABELS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,12}", fullmatch=True)
PATTERNS = st.from_regex(r"[A-Za-z0-9._*?\[\]!-]{1,16}", fullmatch=True)


def charts(dims: st.SearchStrategy[int]) -> st.SearchStrategy[Chart]:
    return st.builds(
        Chart,
        kind=st.just("srht"),
        seed=st.one_of(st.integers(0, 99), st.integers(0, 2**64 - 1)),
        dim=dims,
        exclude=st.lists(PATTERNS, max_size=3, unique=True).map(lambda p: tuple(sorted(p))),
    )


CHARTS = charts(st.one_of(st.integers(1, 40), st.sampled_from([64, 1024, 65536])))

# -- checks --------------------------------------------------------------------------------------


def assert_one_line(exc: BasinError) -> None:
    message = str(exc)
    assert len(message.splitlines()) == 1, repr(message)


@contextmanager
def bounded(seconds: float, megabytes: float | None = None) -> Iterator[None]:
    """Fail, instead of hanging, when the block runs over `seconds` (SIGALRM, so the main thread
    only), or when its Python allocations peak over `megabytes` (tracemalloc)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    if megabytes is not None:
        tracemalloc.start()
    try:
        yield
        if megabytes is not None:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            assert peak < megabytes, f"allocated {peak:.0f} MiB at the peak"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if megabytes is not None:
            tracemalloc.stop()
