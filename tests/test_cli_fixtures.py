"""The IPLD codec fixtures and our own non-canonical encodings, through `basin dag put`."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED, state

FIXTURES = SHARED / "fixtures" / "ipld-codec-fixtures"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"IPLD codec fixtures not found at {FIXTURES} (../shared absent)"
)


def positive() -> list[Path]:
    return sorted(FIXTURES.glob("fixtures/*/*.dag-cbor")) if FIXTURES.is_dir() else []


def negative() -> list[tuple[str, str]]:
    cases = []
    for f in sorted(FIXTURES.glob("negative-fixtures/dag-cbor/decode/*.json")):
        cases += [(f"{f.stem}: {c['name']}", c["hex"]) for c in json.loads(f.read_text())]
    return cases


OURS = [
    (c["name"], c["hex"])
    for c in json.loads((ROOT / "fixtures" / "dag-cbor-noncanonical.json").read_text())
]


@needs_fixtures
def test_every_positive_fixture_prints_its_cid(repo_dir, cli):
    files = positive()
    assert len(files) > 50
    out = cli("dag", "put", "--input-codec", "dag-cbor", *map(str, files)).output.split()
    assert out == [f.stem for f in files]


@needs_fixtures
@pytest.mark.parametrize("name, hexdata", negative(), ids=[n for n, _ in negative()])
def test_negative_fixtures_are_refused(repo_dir, cli, name, hexdata):
    before = state(repo_dir)
    cli.fails("dag", "put", "--input-codec", "dag-cbor", input=bytes.fromhex(hexdata))
    assert state(repo_dir) == before


@pytest.mark.parametrize("name, hexdata", OURS, ids=[n for n, _ in OURS])
def test_our_noncanonical_encodings_are_refused(repo_dir, cli, name, hexdata):
    before = state(repo_dir)
    result = cli.fails("dag", "put", "--input-codec", "dag-cbor", input=bytes.fromhex(hexdata))
    assert "DAG-CBOR" in result.stderr
    assert state(repo_dir) == before


@needs_fixtures
def test_dag_put_as_a_real_subprocess(repo_dir):
    basin = Path(sys.executable).with_name("basin")
    fixture = positive()[0]
    done = subprocess.run(
        [basin, "dag", "put", "--input-codec", "dag-cbor", fixture],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == fixture.stem
    bad = subprocess.run(
        [basin, "dag", "put", "--input-codec", "dag-cbor"],
        input=bytes.fromhex("a2616202616101"),
        capture_output=True,
    )
    assert bad.returncode == 1 and bad.stderr.decode().startswith("error: ")
    assert bad.stderr.decode().count("\n") == 1
