"""The repository config: every malformed field is one line naming it, on every command."""

import json

import pytest

from tests.conftest import state

BROKEN = {
    "deep nesting": lambda doc: "[" * 100_000,
    "seq Infinity": lambda doc: json.dumps(doc).replace('"seq": 0', '"seq": Infinity'),
    "seq NaN": lambda doc: json.dumps(doc).replace('"seq": 0', '"seq": NaN'),
    "seq 400 digits": lambda doc: json.dumps(doc).replace('"seq": 0', '"seq": ' + "9" * 400),
    "seq 5000 digits": lambda doc: json.dumps(doc).replace('"seq": 0', '"seq": ' + "9" * 5000),
    "seq negative": lambda doc: json.dumps(doc).replace('"seq": 0', '"seq": -1'),
    "seq a string": lambda doc: json.dumps(doc).replace('"seq": 0', '"seq": "1"'),
    "settings.merge a list": lambda doc: json.dumps({**doc, "settings": {"merge": []}}),
    "settings a list": lambda doc: json.dumps({**doc, "settings": []}),
    "trusted not a list": lambda doc: json.dumps({**doc, "trusted": {}}),
    "trusted key a number": lambda doc: json.dumps({**doc, "trusted": [{"key": 1, "name": "x"}]}),
    "remotes a list": lambda doc: json.dumps({**doc, "remotes": []}),
    "remote without node": lambda doc: json.dumps({**doc, "remotes": {"o": {}}}),
    "seen a list": lambda doc: json.dumps({**doc, "sync": {"seen": []}}),
    "seen value a float": lambda doc: json.dumps({**doc, "sync": {"seen": {"x": 1.5}}}),
    "not an object": lambda doc: "[]",
    "no chart": lambda doc: json.dumps({k: v for k, v in doc.items() if k != "chart"}),
    "chart a string": lambda doc: json.dumps({**doc, "chart": "srht"}),
    "not UTF-8": lambda doc: b"\xff\xfe{}",
    "empty": lambda doc: "",
    "a huge file": lambda doc: " " * (2 << 20) + "{}",
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("command", [("log",), ("status",), ("merge", "general"), ("key", "list")])
def test_a_broken_config_is_one_line_on_every_command(repo_dir, cli, kind, command):
    path = repo_dir / ".basin" / "config.json"
    broken = BROKEN[kind](json.loads(path.read_text()))
    path.write_bytes(broken if isinstance(broken, bytes) else broken.encode())
    before = state(repo_dir)
    result = cli.fails(*command)
    assert f"repository config {path} is unusable" in result.stderr, result.stderr
    assert state(repo_dir) == before


def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(repo_dir, cli):
    import os

    path = repo_dir / ".basin" / "config.json"
    path.unlink()
    os.mkfifo(path)
    assert "is not a regular file" in cli.fails("log").stderr
