"""The IPLD codec fixtures (ipld/codec-fixtures): byte-for-byte agreement with other IPLD stacks.

The fixtures live outside the repository, beside it in shared/; they are never copied in.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from basinvcs.cid import CID, DAG_JSON
from basinvcs.codec import dagcbor, dagjson
from basinvcs.errors import CodecError
from tests.codec.common import typed

FIXTURES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ipld-codec-fixtures"
)

if not (FIXTURES / "fixtures").is_dir():
    pytest.skip(
        f"IPLD codec fixtures not found at {FIXTURES} (they are kept outside the repository)",
        allow_module_level=True,
    )

CBOR_BLOCKS = sorted(FIXTURES.glob("fixtures/*/*.dag-cbor"))
JSON_TWINS = [
    (cbor, json_files[0])
    for cbor in CBOR_BLOCKS
    if (json_files := sorted(cbor.parent.glob("*.dag-json")))
]
NEGATIVE = [
    case
    for path in sorted(FIXTURES.glob("negative-fixtures/dag-cbor/decode/*.json"))
    for case in json.loads(path.read_text())
]


def _name(path: Path) -> str:
    return path.parent.name


def _twin_name(pair: tuple[Path, Path]) -> str:
    return pair[0].parent.name


def test_fixture_set_is_complete() -> None:
    """Guards against a glob silently matching nothing."""
    assert len(CBOR_BLOCKS) >= 100
    assert len(JSON_TWINS) == len(CBOR_BLOCKS)
    assert NEGATIVE


@pytest.mark.parametrize("path", CBOR_BLOCKS, ids=_name)
def test_dag_cbor_decodes_and_re_encodes_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    value = dagcbor.decode(data)
    assert dagcbor.encode(value) == data
    assert str(CID.for_block(data)) == path.stem


@pytest.mark.parametrize("path", CBOR_BLOCKS, ids=_name)
def test_fast_path_scanner_and_trusted_decoder_agree(path: Path) -> None:
    data = path.read_bytes()
    value = typed(dagcbor.decode(data))
    assert typed(dagcbor._Scanner(data).document()) == value  # the slow path accepts it too
    assert typed(dagcbor.decode_trusted(data)) == value


@pytest.mark.parametrize("case", NEGATIVE, ids=lambda case: case["name"])
def test_negative_dag_cbor_is_rejected(case: dict[str, str]) -> None:
    with pytest.raises(CodecError) as exc:
        dagcbor.decode(bytes.fromhex(case["hex"]))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("pair", JSON_TWINS, ids=_twin_name)
def test_dag_json_twin_decodes_to_the_same_value(pair: tuple[Path, Path]) -> None:
    cbor, json_path = pair
    assert typed(dagjson.decode(json_path.read_bytes())) == typed(dagcbor.decode(cbor.read_bytes()))


@pytest.mark.parametrize("pair", JSON_TWINS, ids=_twin_name)
def test_dag_json_twin_is_reproduced_byte_exact(pair: tuple[Path, Path]) -> None:
    cbor, json_path = pair
    data = json_path.read_bytes()
    assert dagjson.encode(dagcbor.decode(cbor.read_bytes())) == data
    assert str(CID.for_block(data, DAG_JSON)) == json_path.stem
