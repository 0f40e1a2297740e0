"""Fuzzing the repository config reader (config.load_config, Config.from_json): a config.json
either loads as a Config that saves and loads back to itself, or is refused with one line
(RepositoryError), whatever the file holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from basinvcs.config import Config, Remote, SyncState, TrustedKey, load_config, save_config
from basinvcs.errors import RepositoryError
from basinvcs.identity import format_key
from tests.fuzzing import (
    CHARTS,
    JSON_FRAGMENTS,
    JSON_TEXTS,
    JSON_WRONG_KINDS,
    TEXT,
    assert_one_line,
    bounded,
    mutants,
    node_mutants,
)

FINITE_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=6,
).filter(lambda v: "Infinity" not in json.dumps(v))
OPTIONAL_TEXT = st.none() | TEXT.filter(bool)
COUNTS = st.integers(0, 2**63 - 1)

CONFIGS = st.builds(
    Config,
    chart=CHARTS,
    trusted=st.lists(
        st.builds(TrustedKey, st.binary(min_size=32, max_size=32), TEXT, st.floats(1e-3, 1e3)),
        max_size=3,
    ),
    settings=st.dictionaries(TEXT, FINITE_JSON, max_size=3)
    | st.builds(
        lambda d, i: {"merge": {"max_distance": d, "max_interference": i}},
        st.floats(0, 1e300),
        st.floats(0, 1e300),
    ),
    remotes=st.dictionaries(
        TEXT, st.builds(Remote, TEXT, OPTIONAL_TEXT, OPTIONAL_TEXT), max_size=2
    ),
    sync=st.builds(
        SyncState,
        OPTIONAL_TEXT,
        COUNTS,
        st.dictionaries(TEXT, TEXT, max_size=2),
        st.dictionaries(TEXT, COUNTS, max_size=2),
        OPTIONAL_TEXT,
    ),
)


@pytest.fixture(scope="module")
def basin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One repository directory whose config every example rewrites in turn."""
    return tmp_path_factory.mktemp("config")


def check(basin_dir: Path, data: bytes) -> None:
    (basin_dir / "config.json").write_bytes(data)
    try:
        config = load_config(basin_dir)
    except RepositoryError as exc:
        assert_one_line(exc)
        event("refused")
        return
    event("accepted")
    save_config(basin_dir, config)
    assert load_config(basin_dir) == config


@given(CONFIGS)
def test_configs_round_trip(basin_dir: Path, config: Config) -> None:
    save_config(basin_dir, config)
    assert load_config(basin_dir) == config


@given(st.binary(max_size=64))
def test_arbitrary_bytes(basin_dir: Path, data: bytes) -> None:
    check(basin_dir, data)


@given(JSON_TEXTS)
def test_json_texts(basin_dir: Path, text: str) -> None:
    check(basin_dir, text.encode("utf-8", "surrogatepass"))


@given(mutants(CONFIGS.map(lambda c: json.dumps(c.to_json()).encode()), JSON_FRAGMENTS))
def test_mutated_files(basin_dir: Path, data: bytes) -> None:
    check(basin_dir, data)


@given(node_mutants(CONFIGS.map(Config.to_json), JSON_WRONG_KINDS))
def test_mutated_documents(basin_dir: Path, doc: Any) -> None:
    """Valid configs with one value replaced by one of another kind (NaN, 10^400, nesting...),
    removed or added."""
    check(basin_dir, json.dumps(doc).encode())


@pytest.mark.parametrize(
    "text",
    [
        '{"chart":' + "[" * 100_000 + "]" * 100_000 + "}",
        '{"chart":{"kind":"srht","seed":1,"dim":8},"sync":{"seq":1e400}}',
        '{"chart":{"kind":"srht","seed":1,"dim":8},"sync":{"seen":{"a":NaN}}}',
        '{"chart":{"kind":"srht","seed":' + "9" * 5000 + ',"dim":8}}',
        '{"chart":{"kind":"srht","seed":1,"dim":8},"trusted":[{"key":"z","name":"a","weight":'
        + "9" * 400
        + "}]}",
        '{"chart":{"kind":"srht","seed":1,"dim":8},"remotes":{"a":[]}}',
        '{"chart":{"kind":"srht","seed":1,"dim":8},"settings":{"merge":{"max_distance":-1}}}',
        "[]",
        "",
    ],
)
def test_hostile_configs_are_refused(basin_dir: Path, text: str) -> None:
    (basin_dir / "config.json").write_text(text)
    with bounded(seconds=2), pytest.raises(RepositoryError) as exc:
        load_config(basin_dir)
    assert_one_line(exc.value)


def test_a_huge_trusted_key_is_refused_quickly(basin_dir: Path) -> None:
    """Was: base58 decoding in quadratic time: 10 s here, about two minutes for a 1 MiB key."""
    doc = {
        "chart": {"kind": "srht", "seed": 1, "dim": 8},
        "trusted": [{"key": "z" + "2" * 300_000, "name": "a", "weight": 1.0}],
    }
    (basin_dir / "config.json").write_text(json.dumps(doc))
    with bounded(seconds=2), pytest.raises(RepositoryError, match="too long for an Ed25519 key"):
        load_config(basin_dir)


def test_a_trusted_key_with_the_default_weight_reads_back(basin_dir: Path) -> None:
    key = bytes(range(32))
    doc = {"chart": {"kind": "srht", "seed": 1, "dim": 8}, "trusted": [{"key": format_key(key)}]}
    doc["trusted"][0]["name"] = "alice"
    (basin_dir / "config.json").write_text(json.dumps(doc))
    assert load_config(basin_dir).trusted == [TrustedKey(key, "alice", 1.0)]


@pytest.mark.parametrize(
    "doc",
    [
        {"chart": {"kind": "srht", "seed": 1, "dim": 8}, "remotes": {"a\nb": None}},
        {"chart": {"kind": "srht", "seed": 1, "dim": 8}, "sync": {"seen": {"a\u2028b": "x"}}},
    ],
)
def test_keys_are_quoted_in_messages(basin_dir: Path, doc: dict[str, Any]) -> None:
    (basin_dir / "config.json").write_text(json.dumps(doc))
    with pytest.raises(RepositoryError) as exc:
        load_config(basin_dir)
    assert_one_line(exc.value)
