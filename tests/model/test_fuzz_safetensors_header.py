"""Fuzzing the safetensors header reader (substrate.read_header, modelio.read_safetensors_header):
a file either reads as the names, dtypes and shapes its header declares, in data order, or is
refused with one line; length prefixes claiming huge sizes are never believed."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.errors import BasinError
from basinvcs.model.modelio import DTYPE_BYTES, MAX_HEADER_BYTES
from basinvcs.model.substrate import read_header
from tests.fuzzing import JSON_FRAGMENTS, JSON_VALUES, assert_one_line, bounded, mutants

NAMES = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
    lambda n: n != "__metadata__"
)
TENSORS = st.dictionaries(
    NAMES,
    st.tuples(st.sampled_from(sorted(DTYPE_BYTES)), st.lists(st.integers(0, 4), max_size=3)),
    max_size=4,
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file, rewritten by every example (hypothesis runs them in turn)."""
    return tmp_path_factory.mktemp("safetensors") / "model.safetensors"


def file_bytes(header: bytes, data_bytes: int = 0, length: int | None = None) -> bytes:
    return struct.pack("<Q", len(header) if length is None else length) + header + bytes(data_bytes)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[int, str, tuple, str]], int]:
    """A valid header document, what it declares in data order, and its data size."""
    tensors = draw(TENSORS)
    order = draw(st.permutations(sorted(tensors)))
    doc: dict[str, Any] = {}
    expected = []
    offset = 0
    for name in order:
        dtype, shape = tensors[name]
        size = DTYPE_BYTES[dtype]
        for n in shape:
            size *= n
        doc[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        expected.append((offset, dtype, tuple(shape), name))
        offset += size
    if draw(st.booleans()):
        doc["__metadata__"] = draw(st.dictionaries(NAMES, NAMES, max_size=2))
    keys = draw(st.permutations(list(doc)))
    return {k: doc[k] for k in keys}, sorted(expected), offset + draw(st.integers(0, 8))


def read(path: Path) -> dict[str, tuple[str, tuple[int, ...]]] | None:
    """read_header(path), or None when refused with one line."""
    try:
        header = read_header(path)
    except BasinError as exc:
        assert_one_line(exc)
        event("refused")
        return None
    event("accepted")
    for dtype, shape in header.values():
        assert dtype in DTYPE_BYTES and all(type(n) is int and n >= 0 for n in shape)
    return header


@given(layouts())
def test_valid_headers_read_back_in_data_order(scratch: Path, layout: Any) -> None:
    doc, expected, data_bytes = layout
    scratch.write_bytes(file_bytes(json.dumps(doc).encode(), data_bytes))
    header = read_header(scratch)
    assert list(header.items()) == [(name, (dtype, shape)) for _, dtype, shape, name in expected]


@given(st.binary(max_size=80))
def test_arbitrary_bytes(scratch: Path, data: bytes) -> None:
    scratch.write_bytes(data)
    read(scratch)


@given(st.binary(max_size=80), st.integers(0, 2**64 - 1) | st.integers(0, 100))
def test_arbitrary_headers(scratch: Path, header: bytes, length: int) -> None:
    scratch.write_bytes(file_bytes(b"{" + header, 16, length))
    read(scratch)


@given(mutants(layouts().map(lambda lay: json.dumps(lay[0]).encode()), JSON_FRAGMENTS))
def test_mutated_headers(scratch: Path, header: bytes) -> None:
    scratch.write_bytes(file_bytes(header, 64))
    read(scratch)


@st.composite
def replaced(draw: st.DrawFn) -> dict[str, Any]:
    """A valid header with one field of one entry (or the metadata) replaced by any JSON value:
    NaN, huge integers, nested lists and objects..."""
    doc, _, _ = draw(layouts())
    if not doc:
        return {"t": draw(JSON_VALUES)}
    name = draw(st.sampled_from(sorted(doc)))
    if name == "__metadata__" or draw(st.booleans()):
        doc[name] = draw(JSON_VALUES)
    else:
        field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "extra"]))
        doc[name][field] = draw(JSON_VALUES)
    return doc


@given(replaced())
def test_headers_with_values_of_any_kind(scratch: Path, doc: dict[str, Any]) -> None:
    scratch.write_bytes(file_bytes(json.dumps(doc).encode(), 64))
    read(scratch)


@pytest.mark.parametrize(
    "length", [2**64 - 1, 2**63, MAX_HEADER_BYTES + 1, MAX_HEADER_BYTES, 1 << 40, 3]
)
def test_length_prefixes_beyond_the_file_are_refused(tmp_path: Path, length: int) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(file_bytes(b'{"a":1}', 0, length))
    with bounded(seconds=1, megabytes=4), pytest.raises(BasinError) as exc:
        read_header(path)
    assert_one_line(exc.value)


@pytest.mark.parametrize(
    "header",
    [
        b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"a":' + b'{"b":' * 100_000 + b"1" + b"}" * 100_001,
        b"{" + b"[" * 1_000_000,
        b'{"a":{"dtype":"F32","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,4]}}',
        b'{"a":{"dtype":"F32","shape":[1e999],"data_offsets":[0,4]}}',
        b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,4]}}',
        b'{"a":{"dtype":"F32","shape":[' + b"4294967296," * 8 + b'1],"data_offsets":[0,4]}}',
    ],
)
def test_hostile_headers_are_refused(tmp_path: Path, header: bytes) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(file_bytes(header, 4))
    with bounded(seconds=2), pytest.raises(BasinError) as exc:
        read_header(path)
    assert_one_line(exc.value)


@pytest.mark.parametrize("dtype", ["[]", "{}", '["F32"]'])
def test_an_unhashable_dtype_is_refused(tmp_path: Path, dtype: str) -> None:
    path = tmp_path / "m.safetensors"
    header = b'{"t":{"dtype":' + dtype.encode() + b',"shape":[],"data_offsets":[0,0]}}'
    path.write_bytes(file_bytes(header))
    with pytest.raises(BasinError, match="unsupported dtype"):
        read_header(path)


@given(st.text(st.sampled_from('[{]}"\\x'), max_size=60).map(lambda text: text + "[{" * 60))
def test_brackets_quotes_and_backslashes_in_names_are_no_nesting(scratch: Path, name: str) -> None:
    """The nesting check skips whole strings, escapes and all: names ending in 120 open
    brackets read."""
    doc = {name: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    scratch.write_bytes(file_bytes(json.dumps(doc).encode(), 4))
    assert read_header(scratch) == {name: ("F32", (1,))}


@pytest.mark.parametrize("depth, refusal", [(100, "bad shape"), (101, "nests deeper than 100")])
def test_nesting_is_counted_to_the_limit_outside_strings(tmp_path: Path, depth, refusal) -> None:
    """The header object and its entry are two levels, the shape's lists the rest; brackets
    and escaped quotes in the name do not count."""
    name = json.dumps('a\\"[{' * 80 + "[" * 200).encode()
    shape = b"[" * (depth - 2) + b"]" * (depth - 2)
    header = b"{" + name + b':{"dtype":"F32","shape":' + shape + b',"data_offsets":[0,4]}}'
    path = tmp_path / "m.safetensors"
    path.write_bytes(file_bytes(header, 4))
    with pytest.raises(BasinError, match=refusal):
        read_header(path)
