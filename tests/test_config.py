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
    "cohort a number": lambda doc: json.dumps(
        {**doc, "trusted": [{**doc["trusted"][0], "cohort": 7}]}
    ),
    "cohort with a space": lambda doc: json.dumps(
        {**doc, "trusted": [{**doc["trusted"][0], "cohort": "neg ation"}]}
    ),
    "cohort empty": lambda doc: json.dumps(
        {**doc, "trusted": [{**doc["trusted"][0], "cohort": ""}]}
    ),
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


def test_a_running_repository_takes_up_the_trust_list_another_process_saved(repo_dir):
    """`Repository.refresh_trust`: what a coordinator calls so that `basin key add/remove` needs
    no restart. Only the trust list is taken; a broken file, or one naming another chart, is one
    error, once, and the list stays."""
    from basinvcs import porcelain
    from basinvcs.errors import RepositoryError
    from basinvcs.identity import Identity, format_key
    from basinvcs.repository import Repository

    key = format_key(Identity(bytes([9]) * 32, "alice").public_key)
    with Repository.open(repo_dir) as running, Repository.open(repo_dir) as other:
        assert running.refresh_trust() is False  # nothing changed since it was read
        porcelain.trust(other, key, "alice", 2.0)
        assert running.refresh_trust() is True
        assert [(t.name, t.weight) for t in running.config.trusted] == [
            ("tester", 1.0),  # the user's own key, which init trusts
            ("alice", 2.0),
        ]
        assert running.refresh_trust() is False
        porcelain.untrust(other, "alice")
        assert running.refresh_trust() is True
        assert [t.name for t in running.config.trusted] == ["tester"]
        porcelain.trust(running, key, "alice")  # its own save is no change to take up
        assert running.refresh_trust() is False

        path = repo_dir / ".basin" / "config.json"
        good = path.read_text()
        path.write_text("{")
        with pytest.raises(RepositoryError, match="config .* is unusable"):
            running.refresh_trust()
        assert running.refresh_trust() is False  # said once; the list as it was
        assert [t.name for t in running.config.trusted] == ["tester", "alice"]
        doc = json.loads(good)
        doc["chart"]["seed"] += 1
        doc["trusted"] = []
        path.write_text(json.dumps(doc))
        with pytest.raises(RepositoryError, match="now names another chart"):
            running.refresh_trust()
        assert [t.name for t in running.config.trusted] == ["tester", "alice"]


def test_config_changes_made_at_once_elsewhere_are_kept(repo_dir, monkeypatch):
    """Each change re-reads the file under a lock other processes take too (flock on .basin):
    a repository opened before another one changed the trust list or the remotes keeps that
    change when it saves its own, and writers racing each other each keep theirs. A change
    refused against the file as it is now saves nothing."""
    import threading
    import time

    from basinvcs import porcelain, remote
    from basinvcs import repository as repository_module
    from basinvcs.errors import SignatureError
    from basinvcs.identity import Identity, format_key
    from basinvcs.repository import Repository

    def key(k: int) -> str:
        return format_key(Identity(bytes([k]) * 32, f"k{k}").public_key)

    with Repository.open(repo_dir) as first, Repository.open(repo_dir) as second:
        porcelain.trust(first, key(1), "alice")
        remote.add_remote(first, "origin", "/ip4/127.0.0.1/tcp/5001")
        porcelain.trust(second, key(2), "bob")  # opened before both changes: keeps them
        assert [t.name for t in second.config.trusted] == ["tester", "alice", "bob"]
        assert "origin" in second.config.remotes
        porcelain.untrust(first, "alice")
        before = state(repo_dir)
        with pytest.raises(SignatureError, match="no trusted key named 'alice'"):
            porcelain.untrust(second, "alice")  # gone from the file: nothing saved
        assert state(repo_dir) == before

    save = repository_module.save_config

    def slow_save(basin_dir, config):  # widen the window between reading and writing
        time.sleep(0.002)
        save(basin_dir, config)

    monkeypatch.setattr(repository_module, "save_config", slow_save)
    start = threading.Barrier(4)

    def writer(first_key: int) -> None:
        with Repository.open(repo_dir) as repo:  # its own descriptor: as another process
            start.wait()
            for k in range(first_key, first_key + 10):
                porcelain.trust(repo, key(k), f"k{k}")

    threads = [threading.Thread(target=writer, args=(10 + 10 * n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Repository.open(repo_dir) as repo:
        names = {t.name for t in repo.config.trusted}
    assert {f"k{k}" for k in range(10, 50)} <= names and "bob" in names


def test_a_config_change_inside_another_or_behind_a_held_lock_is_refused_not_hung(repo_dir):
    import fcntl
    import os

    from basinvcs import porcelain
    from basinvcs import repository as repository_module
    from basinvcs.errors import RepositoryError
    from basinvcs.identity import Identity, format_key
    from basinvcs.repository import Repository

    key = format_key(Identity(bytes([9]) * 32, "alice").public_key)
    with Repository.open(repo_dir) as repo:
        before = state(repo_dir)
        with pytest.raises(RepositoryError, match="a config change inside another"):
            repo.change_config(lambda config: porcelain.trust(repo, key, "alice"))
        assert state(repo_dir) == before
        held = os.open(repo_dir / ".basin", os.O_RDONLY)  # as another process holding it
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            with (
                pytest.raises(RepositoryError, match="being changed by another process"),
                repository_module._flocked(repo_dir / ".basin", wait=0.05),
            ):
                pass
        finally:
            os.close(held)
        porcelain.trust(repo, key, "alice")  # released: it goes through
        assert [t.name for t in repo.config.trusted] == ["tester", "alice"]
