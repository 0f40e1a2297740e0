"""The `basin` command line as a new user meets it, and every bad input it must refuse cleanly."""

import json
import sqlite3

import pytest

from basinvcs.cid import CID
from basinvcs.codec import dagjson
from basinvcs.objects import Basin, Chart
from basinvcs.repository import Repository
from tests.conftest import DIM, commit_z, packet, state, vec


def write_packet(path, seed, **kw):
    path.write_bytes(packet(seed, **kw).encode())
    return path


def test_walkthrough_init_fork_commit_log_show_verify(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    out = cli("init", "work", "--dim", str(DIM), "--seed", "7").output
    assert "genesis:" in out and "branch general" in out and "new identity created" in out
    monkeypatch.chdir(tmp_path / "work")

    out = cli("fork", "general", "--specialize", "medicine").output
    assert "Switched to a new branch 'medicine'" in out
    assert "* medicine" in cli("branch").output

    p = write_packet(tmp_path / "p.cbor", 1)
    out = cli("commit", "--packet", str(p), "-m", "first medicine basin").output
    assert out.startswith("[medicine bafyrei")
    commit_cid = out.splitlines()[-1]

    log = cli("log").output
    assert log.count("\ncommit ") + log.startswith("commit ") == 3
    assert f"commit {commit_cid} (HEAD -> medicine)" in log
    assert "Author: tester <z6Mk" in log and "first medicine basin" in log

    oneline = cli("log", "--oneline").output.splitlines()
    assert len(oneline) == 3 and oneline[0].endswith("first medicine basin")
    assert oneline[2].endswith("(general) genesis")
    assert len(cli("log", "-n", "1", "--oneline").output.splitlines()) == 1

    show = cli("show").output
    assert f"commit {commit_cid}" in show and "labels:     general, medicine" in show
    assert f"{DIM} coordinates nonzero" in show or "coordinates nonzero" in show
    shown = json.loads(cli("show", "--format", "dag-json").output)
    assert shown["type"] == "basin/commit" and shown["message"] == "first medicine basin"

    st = cli("status").output
    assert st.startswith("On branch medicine") and "chart srht(d=64, seed=7)" in st

    out = cli("verify").output
    assert "checked 3 commits and 3 basin packets" in out and out.rstrip().endswith("ok")


def test_revisions_resolve_like_git(repo_dir, cli):
    first = cli(
        "commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a"
    ).output.split()[-1]
    second = cli(
        "commit", "--packet", str(write_packet(repo_dir / "b", 2)), "-m", "b"
    ).output.split()[-1]
    assert cli("block", "stat", "HEAD~1").output.startswith(f"Key: {first}")
    assert cli("block", "stat", "HEAD^").output.startswith(f"Key: {first}")
    assert cli("block", "stat", "general").output.startswith(f"Key: {second}")
    assert cli("block", "stat", second[:20]).output.startswith(f"Key: {second}")
    cli.fails("block", "stat", "HEAD~9")
    cli.fails("block", "stat", "nonexistent-branch")


def test_log_graph_all_shows_the_fork(repo_dir, cli):
    cli("fork", "general", "--specialize", "medicine")
    cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "med")
    cli("fork", "general", "--specialize", "law")
    cli("commit", "--packet", str(write_packet(repo_dir / "b", 2)), "-m", "law")
    graph = cli("log", "--graph", "--oneline", "--all").output.splitlines()
    assert len([ln for ln in graph if "*" in ln]) == 5
    assert graph[0].startswith("* ") and any(ln.startswith("| * ") for ln in graph)
    assert graph[-1].startswith("* ") and graph[-1].endswith("genesis")


def test_branch_create_and_delete(repo_dir, cli):
    cli("branch", "exp")
    assert "  exp" in cli("branch").output
    cli.fails("branch", "exp")  # exists
    cli.fails("branch", "-d", "general")  # checked out
    assert "Deleted branch exp" in cli("branch", "-d", "exp").output
    cli.fails("branch", "bad..name")


def test_keys(repo_dir, cli):
    me = cli("key").output.strip()
    assert me.startswith("tester <z6Mk")
    key = me.split("<")[1].rstrip(">")
    assert cli("key", "--public-key").output == key + "\n"
    misused = cli("key", "--public-key", "list", ok=False)  # a usage error: exit 2
    assert misused.exit_code == 2 and "not of list" in misused.stderr
    assert key in cli("key", "list").output
    cli("key", "add", key, "--name", "me-again", "--weight", "2.5")
    assert "me-again  weight=2.5" in cli("key", "list").output
    added = cli("key", "add", key, "--name", "me-again", "--cohort", "negation").output
    assert added == "trusted me-again (weight 1, cohort negation)\n"  # replaced whole
    assert f"{key}  me-again  weight=1  cohort=negation" in cli("key", "list").output
    before = state(repo_dir)
    for bad in ("neg ation", "", "x" * 65, "négation"):
        result = cli.fails("key", "add", key, "--name", "x", "--cohort", bad)
        assert "must be 1 to 64 letters, digits" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert state(repo_dir) == before
    cli("key", "remove", "me-again")
    assert key not in cli("key", "list").output
    cli.fails("key", "add", "not-a-key", "--name", "x")
    cli.fails("key", "remove", "nobody")


# -- bad input: one line, non-zero exit, nothing changed -----------------------------------------


def refuses_without_change(cli, repo_dir, *args, input=None, match=None):
    before = state(repo_dir)
    result = cli.fails(*args, input=input)
    assert state(repo_dir) == before
    if match:
        assert match in result.stderr, result.stderr
    return result


def test_commit_bad_packets(repo_dir, cli, tmp_path):
    node = packet(1).to_node()
    cases = {
        "malformed": (b"\xa1\x61", "invalid DAG-CBOR"),
        "noncanonical": (bytes.fromhex("a2616202616101"), "DAG-CBOR"),
        "not-a-packet": (bytes.fromhex("a0"), "not a 'basin/packet'"),
        "wrong-dim": (
            Basin.create(Chart(seed=7, dim=32), [0.5] * 32).encode(),
            "differs from the repository",
        ),
        "other-seed": (Basin.create(Chart(seed=8, dim=DIM), [0.5] * DIM).encode(), "differs"),
        "nan": (dagjson.encode({**node, "z": b"\x7f\xc0\x00" * DIM}), "not finite"),
        "unknown-chart": (
            dagjson.encode({**node, "chart": {"kind": "x", "seed": 7, "dim": DIM}}),
            "unknown chart kind",
        ),
    }
    for name, (data, match) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        refuses_without_change(
            cli, repo_dir, "commit", "--packet", str(path), "-m", "x", match=match
        )


def test_commit_same_basin_is_nothing_to_commit(repo_dir, cli):
    p = write_packet(repo_dir / "a", 1)
    cli("commit", "--packet", str(p), "-m", "a")
    refuses_without_change(
        cli, repo_dir, "commit", "--packet", str(p), "-m", "again", match="nothing to commit"
    )


def test_dag_json_packet_commits(repo_dir, cli):
    p = repo_dir / "p.json"
    p.write_bytes(dagjson.encode(packet(4).to_node()))
    out = cli("commit", "--packet", str(p), "-m", "from json").output
    assert out.startswith("[general ")


def test_bad_refs_and_names(repo_dir, cli):
    refuses_without_change(cli, repo_dir, "fork", "general", "--specialize", "bad name")
    refuses_without_change(
        cli, repo_dir, "fork", "general", "--specialize", "x", "--branch", "a..b"
    )
    refuses_without_change(cli, repo_dir, "fork", "nowhere", "--specialize", "x")
    refuses_without_change(cli, repo_dir, "fork", "general", "--specialize", "general")
    refuses_without_change(cli, repo_dir, "log", "bafyreinotacid")


def test_no_repository(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    result = cli.fails("log")
    assert "not a basin repository" in result.stderr


def test_init_twice_is_refused(repo_dir, cli):
    refuses_without_change(cli, repo_dir, "init", ".", match="already")


def test_corrupt_database(repo_dir, cli):
    db = repo_dir / ".basin" / "basin.db"
    for suffix in ("-wal", "-shm"):
        (repo_dir / ".basin" / ("basin.db" + suffix)).unlink(missing_ok=True)
    db.write_bytes(b"garbage" * 1000)
    result = cli.fails("log")
    assert "corrupt repository database" in result.stderr


def test_missing_identity_is_a_clear_error(repo_dir, cli, basin_home):
    (basin_home / "identity.json").unlink()
    p = write_packet(repo_dir / "a", 1)
    refuses_without_change(
        cli, repo_dir, "commit", "--packet", str(p), "-m", "a", match="no identity"
    )


# -- verify catches tampering ---------------------------------------------------------------------


def test_verify_names_a_tampered_block(repo_dir, cli):
    cid = cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a").output.split()[
        -1
    ]
    with Repository.open(repo_dir) as repo:
        basin_cid = repo.read_commit(CID.parse(cid)).basin
    conn = sqlite3.connect(repo_dir / ".basin" / "basin.db")
    conn.execute("UPDATE blocks SET data = ? WHERE cid = ?", (packet(9).encode(), str(basin_cid)))
    conn.commit()
    conn.close()
    result = cli("verify", ok=False)
    assert result.exit_code == 1
    assert f"error: {basin_cid}: " in result.stderr
    assert f"block {basin_cid} does not match its hash" in result.stderr


def test_verify_names_a_bad_signature(repo_dir, cli):
    from basinvcs.codec import dagcbor

    cid = cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a").output.split()[
        -1
    ]
    with Repository.open(repo_dir) as repo:
        node = dagcbor.decode(repo.get_block(CID.parse(cid)))
        node["signature"] = bytes(64)
        forged = repo.put_block(dagcbor.encode(node))
        parents = [CID.parse(p) for p in repo.parents(CID.parse(cid))]
        repo._store.index_commit(forged, parents, node["time"], node["author"], node["message"])
        repo.set_ref("refs/heads/general", str(forged), cid, "forge")
    result = cli("verify", ok=False)
    assert result.exit_code == 1
    assert f"error: {forged}: bad signature by z6Mk" in result.stderr


@pytest.mark.parametrize(
    "column, value, field",
    [
        ("message", "not what was signed", "message"),
        ("author", bytes(32), "author"),
        ("time", 5, "time"),
        ("parents", "", "parents"),
    ],
)
def test_verify_cross_checks_the_commit_index_log_lists(repo_dir, cli, column, value, field):
    """`log` lists the commit-graph index without reading blocks; verify checks every field of
    it against the commit blocks, so a forged or stale row cannot go unnoticed."""
    cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a")
    cid = cli("commit", "--packet", str(write_packet(repo_dir / "b", 2)), "-m", "b").output.split()[
        -1
    ]
    conn = sqlite3.connect(repo_dir / ".basin" / "basin.db")
    conn.execute(f"UPDATE commits SET {column} = ? WHERE cid = ?", (value, cid))
    conn.commit()
    conn.close()
    if field == "message":
        assert "    not what was signed" in cli("log").output  # log believes the index
    result = cli("verify", ok=False)
    assert result.exit_code == 1
    assert f"error: {cid}: commit-graph index disagrees with the commit's {field}\n" in (
        result.stderr
    )


def test_verify_reports_a_commit_missing_from_the_index(repo_dir, cli):
    cid = cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a").output.split()[
        -1
    ]
    conn = sqlite3.connect(repo_dir / ".basin" / "basin.db")
    conn.execute("DELETE FROM commits WHERE cid = ?", (cid,))
    conn.commit()
    conn.close()
    result = cli("verify", ok=False)
    assert f"error: {cid}: commit is not in the commit-graph index" in result.stderr


def _log_from_blocks(repo, rev: str, limit: int, all_refs: bool, oneline: bool) -> str:
    """`basin log` as it was printed from the commit blocks before the index held messages."""
    import time

    from basinvcs import porcelain
    from basinvcs.identity import format_key

    deco = porcelain.decorations(repo)
    names = {t.key: t.name for t in repo.config.trusted}
    out = []
    for cid, m in porcelain.log(repo, rev, limit, all_refs):
        text = str(cid)
        refs = f" ({', '.join(deco[text])})" if text in deco else ""
        if oneline:
            out.append(f"{text[:16]}{refs} {m.message.partition(chr(10))[0]}\n")
            continue
        merge = ""
        if len(m.parents) > 1:
            merge = "Merge: " + " ".join(str(p)[:16] for p in m.parents) + "\n"
        msg = "".join(f"    {line}\n" for line in m.message.splitlines())
        author = f"{names.get(m.author, 'untrusted')} <{format_key(m.author)}>"
        date = time.strftime("%a %b %d %H:%M:%S %Y %z", time.localtime(m.time / 1000))
        out.append(f"commit {text}{refs}\n{merge}Author: {author}\nDate:   {date}\n\n{msg}\n")
    return "".join(out)


def test_log_from_the_index_prints_what_the_blocks_say(repo_dir, cli):
    """`log` lists the index, byte for byte as it printed the blocks: merges, messages of several
    lines and odd line breaks, decorations, -n, --all, --oneline."""
    cli("fork", "general", "--specialize", "med")
    commit_z(repo_dir, vec(c0=1.0), "two\n\nparagraphs\n")
    cli("checkout", "general")
    commit_z(repo_dir, vec(c5=-2.0), "x\r\ny\u2028z\x85end")
    cli("merge", "med", "-m", "merge med\n\ninto general")
    cli("key", "remove", cli("key").output.split("<")[1].strip().rstrip(">"))  # "untrusted"
    assert "Merge: bafyrei" in cli("log", "-n", "1").output
    for rev, limit, all_refs in (("HEAD", -1, True), ("med", -1, False), ("HEAD", 2, False)):
        for oneline in (False, True):
            args = [rev, "-n", str(limit)] if limit >= 0 else [rev]
            args += ["--all"] * all_refs + ["--oneline"] * oneline
            with Repository.open(repo_dir) as repo:
                want = _log_from_blocks(repo, rev, limit, all_refs, oneline)
            assert cli("log", *args).stdout_bytes.decode() == want  # (.output folds \r\n)


def test_verify_reports_untrusted_signers(repo_dir, cli):
    cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a")
    me = cli("key").output.split("<")[1].strip().rstrip(">")
    cli("key", "remove", me)
    result = cli("verify")
    assert "untrusted key" in result.stderr and "ok" in result.output
    assert cli("verify", "--require-trusted", ok=False).exit_code == 1


# -- block and dag plumbing -----------------------------------------------------------------------


def test_block_put_get_stat(repo_dir, cli):
    cid = cli("block", "put", input=b"hello").output.strip()
    assert cid.startswith("bafkrei")  # raw codec, as Kubo's default
    assert cli("block", "get", cid).stdout_bytes == b"hello"
    assert cli("block", "stat", cid).output == f"Key: {cid}\nSize: 5\n"
    refuses_without_change(cli, repo_dir, "block", "put", "--cid-codec", "dag-cbor", input=b"\xff")


def test_dag_put_get_round_trip(repo_dir, cli):
    cid = cli("dag", "put", input='{"a":1,"b":[true,null,"x"]}').output.strip()
    assert cli("dag", "get", cid).output.strip() == '{"a":1,"b":[true,null,"x"]}'
    assert cli("dag", "get", cid + "/b/2").output.strip() == '"x"'
    cbor = cli("dag", "get", cid, "--output-codec", "dag-cbor").stdout_bytes
    assert cli("dag", "put", "--input-codec", "dag-cbor", input=cbor).output.strip() == cid
    refuses_without_change(cli, repo_dir, "dag", "put", input='{"a":1,"a":2}')
    refuses_without_change(cli, repo_dir, "dag", "put", input="{nope")
    refuses_without_change(
        cli,
        repo_dir,
        "dag",
        "put",
        "--input-codec",
        "dag-cbor",
        input=bytes.fromhex("a2616202616101"),
    )


def test_dag_get_follows_links_into_the_basin(repo_dir, cli):
    out = cli("dag", "get", "HEAD/basin/chart").output.strip()
    assert json.loads(out) == {"dim": DIM, "kind": "srht", "seed": 7}


@pytest.mark.parametrize("args", [["--help"], ["log", "--help"], ["dag", "put", "--help"]])
def test_help(cli, args):
    assert "Usage:" in cli(*args).output


def test_reflog_records_every_move(repo_dir, cli):
    cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a")
    cli("fork", "general", "--specialize", "law")
    lines = cli("reflog", "general").output.splitlines()
    assert [ln.split(" ", 1)[1] for ln in lines] == [
        "general@{0}: commit: a",
        "general@{1}: init: genesis",
    ]
    assert "HEAD@{0}: fork: switch to law" in cli("reflog").output
    cli.fails("reflog", "nope")


def test_head_reflog_records_commits_on_its_branch(repo_dir, cli):
    cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "a")
    head = cli("reflog").output.splitlines()
    assert (
        head[0].endswith("HEAD@{0}: commit: a") and head[-1] == "refs/heads/general HEAD@{1}: init"
    )


def test_log_graph_joins_lanes(repo_dir, cli):
    cli("fork", "general", "--specialize", "medicine")
    cli("commit", "--packet", str(write_packet(repo_dir / "a", 1)), "-m", "med")
    cli("fork", "general", "--specialize", "law")
    rows = [
        ln.split(" bafy")[0] if "bafy" in ln else ln
        for ln in cli("log", "--graph", "--oneline", "--all").output.splitlines()
    ]
    assert rows == ["*", "| *", "| *", "|/", "*"]  # law fork; med, med fork; join; genesis


def test_dag_put_refuses_non_canonical_dag_json(repo_dir, cli):
    refuses_without_change(
        cli, repo_dir, "dag", "put", input='{"n":1, "a":2}', match="non-canonical DAG-JSON"
    )
    refuses_without_change(cli, repo_dir, "dag", "put", input='{"n":1,"a":2}')
    assert cli("dag", "put", input='{"a":2,"n":1}\n').output.startswith("bafyrei")


def test_dag_put_of_several_inputs_is_all_or_nothing(repo_dir, cli, tmp_path):
    (tmp_path / "good").write_text('{"a":1}')
    (tmp_path / "bad").write_text("{nope")
    refuses_without_change(
        cli, repo_dir, "dag", "put", str(tmp_path / "good"), str(tmp_path / "bad")
    )


def test_dag_get_follows_the_last_link_and_refs_roots(repo_dir, cli):
    basin = json.loads(cli("dag", "get", "HEAD/basin").output)
    assert basin["type"] == "basin/packet"
    assert json.loads(cli("dag", "get", "refs/heads/general/basin/chart/dim").output) == DIM


def test_show_dag_json_of_a_raw_block(repo_dir, cli):
    cid = cli("block", "put", input=b"hi").output.strip()
    assert json.loads(cli("show", cid, "--format", "dag-json").output) == {"/": {"bytes": "aGk"}}


def test_basin_dir_names_the_repository_directory(repo_dir, cli, tmp_path, monkeypatch):
    custom = tmp_path / "elsewhere" / "custom"
    (repo_dir / ".basin").rename(custom.parent.mkdir() or custom)
    monkeypatch.setenv("BASIN_DIR", str(custom))
    monkeypatch.chdir(tmp_path)
    assert "genesis" in cli("log", "--oneline").output


def test_failed_init_leaves_no_identity_behind(repo_dir, cli, basin_home):
    (basin_home / "identity.json").unlink()
    refuses_without_change(cli, repo_dir, "init", ".")
    assert not (basin_home / "identity.json").exists()


def test_key_remove_accepts_did_key(repo_dir, cli):
    key = cli("key").output.split("<")[1].strip().rstrip(">")
    cli("key", "remove", "did:key:" + key)
    assert key not in cli("key", "list").output


def test_fork_from_a_packet_says_it_is_a_packet(repo_dir, cli):
    basin = json.loads(cli("dag", "get", "HEAD").output)["basin"]["/"]
    result = refuses_without_change(cli, repo_dir, "fork", basin, "--specialize", "x")
    assert "is a 'basin/packet', not a 'basin/commit'" in result.stderr


def test_a_commit_stored_as_a_plain_block_is_not_history(repo_dir, cli):
    from basinvcs.codec import dagcbor

    node = dagcbor.decode(cli("dag", "get", "HEAD", "--output-codec", "dag-cbor").stdout_bytes)
    node["version"] = 1.0  # a re-encoding of the genesis commit: its signature still verifies
    path = repo_dir / "c.cbor"
    path.write_bytes(dagcbor.encode(node))
    cid = cli("block", "put", "--cid-codec", "dag-cbor", str(path)).output.strip()
    refuses_without_change(cli, repo_dir, "branch", "x", cid, match="not a valid commit")
    refuses_without_change(cli, repo_dir, "log", cid, match="not a valid commit")
    packet_cid = json.loads(cli("dag", "get", "HEAD").output)["basin"]["/"]
    refuses_without_change(cli, repo_dir, "log", packet_cid, match="not a 'basin/commit'")


def test_dag_put_allows_one_trailing_newline_only(repo_dir, cli):
    assert cli("dag", "put", input='{"a":1}\n').output.startswith("bafyrei")
    refuses_without_change(cli, repo_dir, "dag", "put", input='{"a":1}\n\n')


def test_dag_get_reports_refs_roots_that_name_nothing(repo_dir, cli):
    result = refuses_without_change(cli, repo_dir, "dag", "get", "refs/heads/nosuch/x")
    assert "no ref names the start of 'refs/heads/nosuch/x'" in result.stderr


def test_dag_get_of_a_raw_block_shows_bytes(repo_dir, cli):
    cid = cli("block", "put", input=b"hi").output.strip()
    assert json.loads(cli("dag", "get", cid).output) == {"/": {"bytes": "aGk"}}


def test_init_where_it_cannot_create_is_one_line_and_makes_no_identity(tmp_path, cli, basin_home):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli.fails("init", str(blocker / "repo"))
    assert "cannot create" in result.stderr
    assert not (basin_home / "identity.json").exists()


def test_log_graph_puts_connectors_beside_the_entry(repo_dir, cli):
    cli("fork", "general", "--specialize", "med")
    cli("fork", "general", "--specialize", "law")
    lines = cli("log", "--graph", "--all").output.splitlines()
    med = next(i for i, ln in enumerate(lines) if ln.startswith("| * commit"))
    assert lines[med + 1].startswith("|/  Author:")


# -- every input bounded --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("commit", "--packet", "/dev/zero", "-m", "x"),
        ("dag", "put", "/dev/zero"),
        ("dag", "put", "--input-codec", "dag-cbor", "/dev/zero"),
        ("block", "put", "/dev/zero"),
        ("import", "/dev/zero"),
    ],
)
def test_endless_input_is_refused_not_swallowed(repo_dir, cli, args):
    before = state(repo_dir)
    result = cli.fails(*args)
    assert "limit" in result.stderr or "CAR" in result.stderr, result.stderr
    assert state(repo_dir) == before


@pytest.mark.parametrize("args", [("commit", "--packet", "-", "-m", "x"), ("block", "put")])
def test_endless_stdin_is_refused(repo_dir, cli, args):
    result = cli.fails(*args, input=b"\0" * ((1 << 20) + 1))
    assert "over the 1048576-byte limit" in result.stderr


def test_a_car_over_the_import_limit_is_refused_while_streaming(
    repo_dir, cli, tmp_path, monkeypatch
):
    from basinvcs import carfile

    out = tmp_path / "h.car"
    cli("export", "-o", str(out))
    monkeypatch.setattr(carfile, "MAX_IMPORT_BYTES", 100)  # the genesis packet alone is larger
    before = state(repo_dir)
    assert "holds over 100 bytes of blocks" in cli.fails("import", str(out)).stderr
    assert state(repo_dir) == before


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2, 3]", "the input is DAG-JSON holding a list, not a basin packet"),
        (b'  "a packet"', "the input is DAG-JSON holding a string, not a basin packet"),
        (b"17", "the input is DAG-JSON holding an integer, not a basin packet"),
        (b"null", "the input is DAG-JSON holding null, not a basin packet"),
        (b"\x83\x01\x02\x03", "starts with byte 0x83, and a packet is a DAG-CBOR map"),
        (b"", "the input is empty, not a basin packet"),
        (b"\n\t ", "the input is empty, not a basin packet"),
    ],
)
def test_a_packet_that_is_not_a_map_says_what_it_is(repo_dir, cli, tmp_path, content, message):
    (tmp_path / "p").write_bytes(content)
    before = state(repo_dir)
    assert message in cli.fails("commit", "--packet", str(tmp_path / "p"), "-m", "x").stderr
    assert state(repo_dir) == before


def damage_pages(repo_dir) -> None:
    """Overwrite the middle of every page but the first (the schema) of the block database."""
    db = repo_dir / ".basin" / "basin.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = db.stat().st_size
    with db.open("r+b") as fh:
        for page in range(1, size // 4096):
            fh.seek(page * 4096 + 100)
            fh.write(b"\xde\xad\xbe\xef" * 200)


def test_a_damaged_database_is_named_in_one_line_by_verify(repo_dir, cli):
    for i in range(8):
        cli("fork", "general", "--specialize", f"s{i}")
    damage_pages(repo_dir)
    result = cli("verify", ok=False)
    assert result.exit_code == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "database check failed" in errors[0], result.stderr
    assert errors[0].startswith("error:") and "more findings" in errors[0]
    # other commands read what they can, or stop at the damage with one line; never a traceback
    for command in (("log",), ("status",), ("show", "HEAD"), ("branch",), ("log", "s3")):
        result = cli(*command, ok=False)
        errors = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert result.exit_code == 0 or (len(errors) == 1 and "damaged" in errors[0]), errors


def test_show_says_when_a_signature_is_bad(repo_dir, cli):
    from basinvcs.identity import Identity, format_key
    from basinvcs.objects import Commit

    bob = Identity(bytes(range(32)), "bob")
    mallory = Identity(bytes(range(1, 33)), "mallory")
    cli("key", "add", format_key(bob.public_key), "--name", "bob")
    with Repository.open(repo_dir) as repo:
        basin = repo.write_basin(packet(3))
        forged = Commit(basin, (repo.head_commit(),), bob.public_key, 1, "from bob, honest")
        forged = forged.signed(mallory.sign)  # signed by mallory, naming bob
        honest = Commit(basin, (repo.head_commit(),), bob.public_key, 2, "really bob")
        honest = honest.signed(bob.sign)
        forged_cid, honest_cid = repo.write_commit(forged), repo.write_commit(honest)
    out = cli("show", str(forged_cid))
    assert "Author: bob" in out.output
    assert "Signature: BAD: the author's key did not sign this commit" in out.output
    assert f"warning: commit {forged_cid} has a bad signature" in out.stderr
    out = cli("show", str(honest_cid))
    assert "Signature: BAD" not in out.output and not out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (("log", "HEAD" + "^" * 5000), "is longer than 1024 characters"),
        (("log", "HEAD" + "~1" * 500), "has no parent number 1"),
        (("log", "HEAD~" + "9" * 30), "has no parent number 1"),
        (("log", "HEAD^" + "9" * 30), "has no parent number"),
        (("show", "x" * 100_000), "(100000 chars)"),
        (("branch", "x" * 100_000), "is longer than 255 bytes"),
        (("fork", "general", "--specialize", "x", "--branch", "y" * 300), "longer than 255"),
    ],
)
def test_oversized_revisions_and_names_are_one_short_line(repo_dir, cli, args, message):
    before = state(repo_dir)
    err = cli.fails(*args).stderr
    assert message in err and len(err) < 400
    assert state(repo_dir) == before


@pytest.mark.parametrize("command", ["log", "reflog"])
def test_counts_beyond_any_history_are_usage_errors(repo_dir, cli, command):
    result = cli(command, "-n", "9" * 30, ok=False)
    assert result.exit_code == 2 and "Invalid value" in result.stderr
