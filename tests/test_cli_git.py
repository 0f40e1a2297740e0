"""A git user's habits: help, tag, reset, revert, switch, checkout -b, reflog revisions, ranges,
branch -d/-D, safe checkout -o, Ctrl-C and shell completion, with git's meanings and exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from basinvcs import porcelain
from basinvcs.cli import main
from basinvcs.identity import basin_home
from basinvcs.objects import Basin, Commit
from basinvcs.repository import Repository
from tests.conftest import CHART, DIM, ROOT, commit_z, state, vec


def refused(cli, repo_dir, *args, match: str | None = None):
    """`basin ARGS` fails with one `error:` line, exit 1, and the repository is unchanged."""
    before = state(repo_dir)
    result = cli.fails(*args)
    assert result.exit_code == 1, result.output
    assert state(repo_dir) == before
    if match is not None:
        assert match in result.stderr, result.stderr
    return result


def usage_error(cli, repo_dir, *args, match: str | None = None):
    before = state(repo_dir)
    result = cli(*args, ok=False)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr and "Traceback" not in result.output
    assert state(repo_dir) == before
    if match is not None:
        assert match in result.stderr, result.stderr
    return result


def z_of(repo_dir, rev: str = "HEAD") -> list[float]:
    with Repository.open(repo_dir) as repo:
        return list(repo.read_basin(repo.read_commit(repo.resolve(rev)).basin).z)


def resolved(repo_dir, rev: str) -> str:
    with Repository.open(repo_dir) as repo:
        return str(repo.resolve(rev))


def oneline(cli, *args: str) -> list[str]:
    """`log --oneline ARGS`, each line's message (after the CID and decorations)."""
    messages = []
    for line in cli("log", "--oneline", *args).output.splitlines():
        rest = line.split(" ", 1)[1]
        messages.append(rest.split(") ", 1)[1] if rest.startswith("(") else rest)
    return messages


def three_commits(repo_dir):
    a = commit_z(repo_dir, vec(c0=1.0), "a")
    b = commit_z(repo_dir, vec(c0=1.0, c1=2.0), "b")
    c = commit_z(repo_dir, vec(c0=1.0, c1=2.0, c2=3.0), "c")
    return a, b, c


# -- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [["log"], ["remote", "add"], ["tag"], []])
def test_help_prints_the_commands_own_help(repo_dir, cli, path):
    assert cli("help", *path).output == cli(*path, "--help").output


@pytest.mark.parametrize(
    "path, message",
    [
        (["nosuch"], "no such command 'nosuch': see 'basin help'"),
        (["remote", "nosuch"], "no such command 'nosuch': see 'basin help remote'"),
        (["log", "extra"], "no such command 'extra': see 'basin help log'"),
    ],
)
def test_help_of_an_unknown_command_is_an_error(repo_dir, cli, path, message):
    refused(cli, repo_dir, "help", *path, match=message)


# -- tag ----------------------------------------------------------------------------------------


def test_tags_are_created_listed_resolved_and_deleted(repo_dir, cli):
    a, b, _ = three_commits(repo_dir)
    assert cli("tag", "v1", "HEAD~2").output == ""  # silent, as git
    cli("tag", "v2")
    cli("tag", "rc-1", str(b))
    assert cli("tag").output.splitlines() == ["rc-1", "v1", "v2"]
    assert cli("tag", "-l", "v*").output.splitlines() == ["v1", "v2"]
    assert cli("tag", "--list", "rc*", "v2").output.splitlines() == ["rc-1", "v2"]
    assert resolved(repo_dir, "v1") == str(a) == resolved(repo_dir, "tags/v1")
    assert resolved(repo_dir, "refs/tags/v1~1") == resolved(repo_dir, "general~3")
    assert cli("block", "stat", "v1").output.startswith(f"Key: {a}")
    assert "(tag: v1) a" in cli("log", "--oneline").output
    out = cli("tag", "-d", "v1").output
    assert out == f"Deleted tag 'v1' (was {str(a)[:16]})\n"
    assert cli("tag").output.splitlines() == ["rc-1", "v2"]
    refused(cli, repo_dir, "show", "v1", match="unknown revision 'v1'")


def test_an_existing_tag_is_replaced_only_with_force(repo_dir, cli):
    a, b, c = three_commits(repo_dir)
    cli("tag", "v1", str(a))
    refused(cli, repo_dir, "tag", "v1", match="tag 'v1' already exists")
    assert cli("tag", "-f", "v1").output == f"Updated tag 'v1' (was {str(a)[:16]})\n"
    assert resolved(repo_dir, "v1") == str(c)


def test_bad_tag_commands_change_nothing(repo_dir, cli):
    commit_z(repo_dir, vec(c0=1.0), "a")
    cli("tag", "v1")
    refused(cli, repo_dir, "tag", "bad..name", match="bad tag name 'bad..name'")
    refused(cli, repo_dir, "tag", "x", "nosuch", match="unknown revision 'nosuch'")
    refused(cli, repo_dir, "tag", "-d", "nosuch", match="tag 'nosuch' not found")
    basin_cid = cli("dag", "get", "HEAD").output.split('"basin":{"/":"')[1].split('"')[0]
    refused(cli, repo_dir, "tag", "packet", basin_cid, match="not a 'basin/commit'")
    usage_error(cli, repo_dir, "tag", "-d")
    usage_error(cli, repo_dir, "tag", "-d", "v1", "HEAD")
    usage_error(cli, repo_dir, "tag", "-d", "-l", "v1")


def test_a_tag_wins_over_a_branch_of_the_same_name_as_in_git(repo_dir, cli):
    a, _, c = three_commits(repo_dir)
    cli("branch", "x", str(a))
    cli("tag", "x", str(c))
    assert resolved(repo_dir, "x") == str(c)  # refs/tags before refs/heads
    assert resolved(repo_dir, "heads/x") == str(a) == resolved(repo_dir, "refs/heads/x")
    assert cli("checkout", "x").output == "Switched to branch 'x'\n"  # checkout prefers branches


def test_verify_counts_tagged_history(repo_dir, cli):
    commit_z(repo_dir, vec(c0=1.0), "a")
    cli("tag", "v1")
    assert cli("verify").output.rstrip().endswith("ok")


# -- reset --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["--soft"], ["--mixed"], ["--hard"]])
def test_reset_moves_the_branch_and_logs_it(repo_dir, cli, mode):
    a, b, c = three_commits(repo_dir)
    out = cli("reset", *mode, "HEAD~2").output
    assert out == f"HEAD is now at {str(a)[:16]} a\n"
    assert resolved(repo_dir, "general") == str(a)
    assert (
        cli("reflog", "general")
        .output.splitlines()[0]
        .endswith("general@{0}: reset: moving to HEAD~2")
    )
    assert cli("reflog").output.splitlines()[0].endswith("HEAD@{0}: reset: moving to HEAD~2")
    assert "On branch general" in cli("status").output
    cli("reset", "general@{1}")  # undo the reset through the reflog, as in git
    assert resolved(repo_dir, "general") == str(c)


def test_reset_on_a_detached_head_moves_head_only(repo_dir, cli):
    a, b, c = three_commits(repo_dir)
    cli("checkout", str(b))
    cli("reset", "HEAD~1")
    assert resolved(repo_dir, "HEAD") == str(a)
    assert resolved(repo_dir, "general") == str(c)
    assert "HEAD detached at" in cli("status").output


def test_bad_resets_change_nothing(repo_dir, cli):
    three_commits(repo_dir)
    refused(cli, repo_dir, "reset", "nosuch", match="unknown revision 'nosuch'")
    refused(cli, repo_dir, "reset", "HEAD~9", match="has no parent number 1")
    basin_cid = cli("dag", "get", "HEAD").output.split('"basin":{"/":"')[1].split('"')[0]
    refused(cli, repo_dir, "reset", basin_cid, match="not a 'basin/commit'")


# -- revert -------------------------------------------------------------------------------------


def test_revert_undoes_one_commits_change(repo_dir, cli):
    fisher = [1.0 + i for i in range(DIM)]
    a = commit_z(repo_dir, vec(c0=1.0), "add c0\n\nwith a body")
    commit_z(repo_dir, vec(c0=1.0, c1=2.0), "add c1", fisher=fisher, beta=[0.5])
    out = cli("revert", str(a)).output.splitlines()
    new = out[-1]
    assert out[0] == f'[general {new[:16]}] Revert "add c0"'
    assert z_of(repo_dir) == vec(c1=2.0)  # z_HEAD - (z_a - z_genesis)
    with Repository.open(repo_dir) as repo:
        commit = repo.read_commit(repo.resolve("HEAD"))
        head = repo.read_basin(commit.basin)
        before = repo.read_basin(repo.read_commit(repo.resolve("HEAD~1")).basin)
    assert commit.message == f'Revert "add c0"\n\nThis reverts commit {a}.'
    assert [str(p) for p in commit.parents] == [resolved(repo_dir, "HEAD~1")]
    assert head.fisher == before.fisher and head.beta == (0.5,) and head.labels == before.labels
    assert commit.signature_valid()
    assert cli("reflog").output.splitlines()[0].endswith('HEAD@{0}: revert: Revert "add c0"')
    cli("revert", "HEAD")  # reverting the revert brings a's change back
    assert z_of(repo_dir) == vec(c0=1.0, c1=2.0)


def test_revert_refuses_a_root_and_a_no_op(repo_dir, cli):
    refused(cli, repo_dir, "revert", "HEAD", match="it is a root commit")
    cli("fork", "general", "--specialize", "law")  # changes labels only
    refused(cli, repo_dir, "revert", "HEAD", match="nothing to commit")
    refused(cli, repo_dir, "revert", "nosuch", match="unknown revision")
    usage_error(cli, repo_dir, "revert")


def _merge_commit(repo_dir, first: str, second: str, z: list[float]) -> str:
    """A two-parent commit of basin z on the current branch, made as `merge` would sign it."""
    with Repository.open(repo_dir) as repo:
        ident = repo.identity()
        p1, p2 = repo.resolve(first), repo.resolve(second)
        with repo.transaction():
            basin = repo.write_basin(Basin.create(CHART, z, labels=["general"]))
            commit = Commit(basin, (p1, p2), ident.public_key, porcelain.now_ms(), "merge")
            cid = repo.write_commit(commit.signed(ident.sign))
            repo.move_head(cid, repo.head_commit(), "merge")
    return str(cid)


def test_revert_of_a_merge_needs_a_mainline(repo_dir, cli):
    commit_z(repo_dir, vec(c0=1.0), "base")
    cli("switch", "-c", "side")
    commit_z(repo_dir, vec(c0=1.0, c5=5.0), "side")
    cli("switch", "general")
    commit_z(repo_dir, vec(c0=2.0), "ours")
    merge = _merge_commit(repo_dir, "general", "side", vec(c0=2.0, c5=5.0))
    refused(cli, repo_dir, "revert", "HEAD", match=f"commit {merge} is a merge but no -m option")
    refused(cli, repo_dir, "revert", "-m", "3", "HEAD", match="does not have parent 3")
    refused(cli, repo_dir, "revert", "-m", "1", "HEAD~1", match="is not a merge")
    usage_error(cli, repo_dir, "revert", "-m", "0", "HEAD")
    cli("revert", "-m", "1", "HEAD")  # undo what the merge brought in from side
    assert z_of(repo_dir) == vec(c0=2.0)
    message = cli("log", "-n", "1").output
    assert f"This reverts commit {merge}, reversing" in message
    assert f"changes made to {resolved(repo_dir, 'HEAD~1^1')}." in message


# -- switch and checkout -b ---------------------------------------------------------------------


def test_switch_and_switch_c_and_checkout_b(repo_dir, cli):
    a, b, c = three_commits(repo_dir)
    assert cli("switch", "-c", "side", "HEAD~1").output == "Switched to a new branch 'side'\n"
    assert resolved(repo_dir, "side") == str(b)
    assert cli("status").output.startswith("On branch side")
    assert cli("switch", "general").output == "Switched to branch 'general'\n"
    assert cli("switch", "general").output == "Already on 'general'\n"
    assert cli("checkout", "-b", "other").output == "Switched to a new branch 'other'\n"
    assert resolved(repo_dir, "other") == str(c)
    cli("checkout", "-b", "old", str(a))
    assert resolved(repo_dir, "HEAD") == str(a) and "* old" in cli("branch").output
    assert cli("reflog").output.splitlines()[0].endswith("HEAD@{0}: checkout: moving to old")
    out = cli("switch", "--detach", "general~1").output
    assert out == f"HEAD is now at {str(b)[:16]} b\n"
    assert "HEAD detached at" in cli("status").output


def test_bad_switches_change_nothing(repo_dir, cli):
    three_commits(repo_dir)
    cli("tag", "v1")
    cli("branch", "side")
    msg = "a branch named 'side' already exists"
    refused(cli, repo_dir, "switch", "-c", "side", match=msg)
    refused(cli, repo_dir, "checkout", "-b", "side", match=msg)
    refused(cli, repo_dir, "switch", "v1", match="a branch is expected, got 'v1'")
    refused(cli, repo_dir, "switch", "HEAD~1", match="basin switch --detach HEAD~1")
    refused(cli, repo_dir, "switch", "nosuch", match="invalid reference: nosuch")
    refused(cli, repo_dir, "switch", "-c", "new", "nosuch", match="unknown revision 'nosuch'")
    refused(cli, repo_dir, "switch", "-c", "bad..name", match="bad branch name")
    refused(cli, repo_dir, "checkout", "-b", "x~1", match="bad branch name")
    usage_error(cli, repo_dir, "switch")
    usage_error(cli, repo_dir, "switch", "-c", "x", "--detach")
    usage_error(cli, repo_dir, "checkout")
    usage_error(cli, repo_dir, "checkout", "-b", "x", "--model", "tiny")
    usage_error(cli, repo_dir, "checkout", "HEAD", "--force", match="--force goes with --model")


# -- reflog revisions: NAME@{N}, @{N}, @ --------------------------------------------------------


def test_reflog_revisions_resolve_as_git_does(repo_dir, cli):
    a = str(commit_z(repo_dir, vec(c0=1.0), "a"))
    b = str(commit_z(repo_dir, vec(c0=1.0, c1=2.0), "b"))
    cli("switch", "-c", "side")
    c = str(commit_z(repo_dir, vec(c9=9.0), "on side"))
    cli("switch", "general")
    # HEAD's reflog: moving to general, commit on side, moving to side, commits, init
    assert resolved(repo_dir, "HEAD@{0}") == b == resolved(repo_dir, "@")
    assert resolved(repo_dir, "HEAD@{1}") == c
    assert resolved(repo_dir, "HEAD@{2}") == b  # HEAD pointed at side, which held b then
    assert resolved(repo_dir, "general@{1}") == a == resolved(repo_dir, "refs/heads/general@{1}")
    assert resolved(repo_dir, "@{1}") == a  # bare: the current branch's reflog, as in git
    assert resolved(repo_dir, "side@{1}") == b and resolved(repo_dir, "side@{0}") == c
    assert resolved(repo_dir, "HEAD@{1}~1") == b and resolved(repo_dir, "@~1") == a
    assert resolved(repo_dir, "@{1}^") == resolved(repo_dir, "general~2")
    # every command taking a revision takes them
    assert "on side" in cli("show", "HEAD@{1}").output
    assert oneline(cli, "-n", "1", "side@{0}") == ["on side"]
    cli("diff", "@{1}", "HEAD")
    cli("tag", "was", "HEAD@{1}")
    assert resolved(repo_dir, "was") == c
    cli("checkout", "HEAD@{1}")  # detached at c
    assert resolved(repo_dir, "HEAD") == c
    assert resolved(repo_dir, "@{0}") == c  # detached: HEAD's own reflog


def test_a_deleted_branch_keeps_its_reflog_revisions(repo_dir, cli):
    three_commits(repo_dir)
    cli("switch", "-c", "side")
    c = str(commit_z(repo_dir, vec(c9=9.0), "on side"))
    cli("switch", "general")
    cli("branch", "-D", "side")
    assert resolved(repo_dir, "side@{1}") == c
    refused(cli, repo_dir, "show", "side@{0}", match="was deleted by that reflog entry")


@pytest.mark.parametrize(
    "rev, message",
    [
        ("general@{9}", "the log of refs/heads/general only has 4 entries"),
        ("general@{" + "9" * 40 + "}", "only has 4 entries"),
        ("@{-1}", "only NAME@{N} and @{N}"),
        ("general@{yesterday}", "only NAME@{N} and @{N}"),
        ("nosuch@{1}", "no ref 'nosuch' with a reflog"),
        ("HEAD@{99}", "the log of HEAD only has"),
        ("@{1}" + "~1" * 600, "is longer than 1024 characters"),
    ],
)
def test_bad_reflog_revisions_are_one_line(repo_dir, cli, rev, message):
    three_commits(repo_dir)
    err = refused(cli, repo_dir, "show", rev, match=message).stderr
    assert len(err) < 400


# -- log ranges ---------------------------------------------------------------------------------


def test_log_ranges(repo_dir, cli):
    three_commits(repo_dir)
    cli("switch", "-c", "side", "HEAD~1")
    commit_z(repo_dir, vec(c7=7.0), "s1")
    commit_z(repo_dir, vec(c7=8.0), "s2")
    assert oneline(cli, "HEAD~1..HEAD") == ["s2"]
    assert oneline(cli, "general..side") == ["s2", "s1"]
    assert oneline(cli, "side..general") == ["c"]
    assert oneline(cli, "general..") == ["s2", "s1"]  # A.. is A..HEAD
    assert oneline(cli, "..general") == ["c"]  # ..B is HEAD..B
    assert oneline(cli, "general...side") == ["s2", "s1", "c"]
    assert oneline(cli, "side..side") == [] == oneline(cli, "..")
    assert oneline(cli, "-n", "1", "general..side") == ["s2"]
    assert oneline(cli, "--all", "side..general") == ["c"]
    assert oneline(cli, "--all", "general~1..general") == ["s2", "s1", "c"]
    full = cli("log", "general..side").output
    assert full.count("\ncommit ") + full.startswith("commit ") == 2 and "Author:" in full


def test_log_graph_of_a_range(repo_dir, cli):
    three_commits(repo_dir)
    cli("switch", "-c", "side", "HEAD~1")
    commit_z(repo_dir, vec(c7=7.0), "s1")
    rows = [
        ln.split(" bafy")[0] if "bafy" in ln else ln
        for ln in cli("log", "--graph", "--oneline", "general...side").output.splitlines()
    ]
    assert rows == ["*", "*"]  # their common history is outside the range: no lanes join
    rows = cli("log", "--graph", "--oneline", "general~2..general").output.splitlines()
    assert [r.split(" bafy")[0] for r in rows] == ["*", "*"]
    assert rows[0].endswith(" c") and rows[1].endswith(" b")


def test_bad_ranges_change_nothing(repo_dir, cli):
    three_commits(repo_dir)
    refused(cli, repo_dir, "log", "nosuch..HEAD", match="unknown revision 'nosuch'")
    refused(cli, repo_dir, "log", "HEAD..nosuch", match="unknown revision 'nosuch'")
    refused(cli, repo_dir, "log", "HEAD....HEAD", match="unknown revision '.HEAD'")
    refused(cli, repo_dir, "log", "HEAD~9..HEAD", match="has no parent number 1")
    refused(cli, repo_dir, "show", "HEAD~1..HEAD", match="unknown revision")


# -- branch -d / -D -----------------------------------------------------------------------------


def test_branch_d_refuses_unmerged_work_and_D_forces(repo_dir, cli):
    three_commits(repo_dir)
    cli("branch", "merged", "HEAD~1")
    assert "Deleted branch merged" in cli("branch", "-d", "merged").output
    cli("switch", "-c", "side")
    commit_z(repo_dir, vec(c7=7.0), "s1")
    cli("switch", "general")
    result = refused(cli, repo_dir, "branch", "-d", "side")
    assert result.stderr == (
        "error: the branch 'side' is not fully merged. If you are sure you want to delete it, "
        "run 'basin branch -D side'.\n"
    )
    assert "Deleted branch side" in cli("branch", "-d", "-f", "side").output
    cli("branch", "side2", "side@{1}")
    assert "Deleted branch side2" in cli("branch", "-D", "side2").output
    for flag in ("-d", "-D"):
        refused(cli, repo_dir, "branch", flag, "general", match="it is checked out")
        refused(cli, repo_dir, "branch", flag, "nosuch", match="not found")
    usage_error(cli, repo_dir, "branch", "-f", "x")


# -- checkout --model -o ------------------------------------------------------------------------


def test_checkout_output_must_not_overwrite_or_create_parents(repo_dir, cli, tmp_path):
    commit_z(repo_dir, vec(c0=0.5), "a")
    out = tmp_path / "models" / "a.safetensors"

    def checkout_refused(output, match: str) -> None:
        refused(
            cli, repo_dir, "checkout", "HEAD", "--model", "tiny", "-o", str(output), match=match
        )

    checkout_refused(out, f"{out.parent} does not exist: create it first")
    assert not out.parent.exists()
    out.parent.mkdir()
    cli("checkout", "HEAD", "--model", "tiny", "-o", str(out))
    data = out.read_bytes()
    checkout_refused(out, "already exists: give --force")
    cli("checkout", "HEAD~1", "--model", "tiny", "-o", str(out), "--force")
    assert out.read_bytes() != data
    folder = tmp_path / "folder"
    folder.mkdir()
    cli("checkout", "HEAD", "--model", "tiny", "-o", str(folder))  # empty folder: fine
    assert (folder / "model.safetensors").is_file()
    checkout_refused(folder, "is a folder that is not empty")
    cli("checkout", "HEAD", "--model", "tiny", "-o", str(folder), "--force")
    checkout_refused(out / "x", "is not a directory")


def test_checkout_default_output_is_not_overwritten(repo_dir, cli):
    cli("checkout", "HEAD", "--model", "tiny")
    assert (repo_dir / "tiny.safetensors").is_file()
    refused(cli, repo_dir, "checkout", "HEAD", "--model", "tiny", match="already exists")


# -- Ctrl-C -------------------------------------------------------------------------------------


def test_ctrl_c_exits_130_without_a_traceback(repo_dir, cli, monkeypatch):
    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(porcelain, "status", interrupted)
    result = cli("status", ok=False)
    assert result.exit_code == 130 and result.output == ""


def wait_blocked(pid: int, timeout: float = 30.0) -> None:
    """Wait until the process sleeps without using CPU (blocked on its read), however loaded the
    machine: a fixed pause sent the signal before the command started when CI shared the cores."""
    stat = Path(f"/proc/{pid}/stat")
    deadline, last, still = time.monotonic() + timeout, None, 0
    while time.monotonic() < deadline:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        state, cpu = fields[0], int(fields[11]) + int(fields[12])  # utime + stime
        still = still + 1 if state == "S" and cpu == last else 0
        if still >= 3:
            return
        last = cpu
        time.sleep(0.1)
    raise AssertionError(f"process {pid} never blocked")


@pytest.mark.parametrize("waits_in", ["the command", "parsing"])
def test_sigint_to_a_waiting_basin_exits_130(repo_dir, tmp_path, waits_in):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # `block put` waits reading an empty stdin; `commit --packet FIFO` waits while click opens
    # the FIFO, before any command runs
    args = ["block", "put"] if waits_in == "the command" else ["commit", "--packet", str(fifo)]
    probe = (
        "from basinvcs.cli import main; print('ready', flush=True); "
        f"main({[*args, '-m', 'x'] if 'commit' in args else args!r}, prog_name='basin')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", probe],
        cwd=repo_dir,
        stdin=subprocess.PIPE,  # held open and empty
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        # as at a terminal: a run started in the background (`cmd &`) inherits SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout.readline() == "ready\n"
        wait_blocked(proc.pid)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""


# -- shell completion ---------------------------------------------------------------------------


def complete(cli, line: str) -> list[str]:
    """What bash completion offers for the last word of `line`."""
    words = line.split(" ")
    result = cli.runner.invoke(
        main,
        [],
        prog_name="basin",
        env={
            "_BASIN_COMPLETE": "bash_complete",
            "COMP_WORDS": line,
            "COMP_CWORD": str(len(words) - 1),
        },
    )
    assert result.exit_code == 0, result.output
    return [ln.split(",", 1)[1] for ln in result.output.splitlines() if ln.startswith("plain,")]


def test_completion_of_branches_tags_remotes_and_substrates(repo_dir, cli, tmp_path):
    commit_z(repo_dir, vec(c0=1.0), "a")
    cli("branch", "gamma")
    cli("tag", "v1")
    cli("remote", "add", "origin", "/ip4/127.0.0.1/tcp/5001")
    (basin_home() / "substrates" / "my-bert").mkdir(parents=True)
    (basin_home() / "substrates" / ".add-tmp").mkdir()
    assert complete(cli, "basin switch g") == ["gamma", "general"]
    assert complete(cli, "basin branch -d ") == ["gamma", "general"]
    assert complete(cli, "basin log ") == ["HEAD", "gamma", "general", "v1"]
    assert complete(cli, "basin show v") == ["v1"]
    assert complete(cli, "basin tag -d ") == ["v1"]
    assert complete(cli, "basin push ") == ["origin"]
    assert complete(cli, "basin push origin ge") == ["general"]
    assert complete(cli, "basin checkout HEAD --model ") == ["tiny", "100M", "1B", "10B", "my-bert"]
    assert complete(cli, "basin checkout HEAD --model my") == ["my-bert"]
    assert complete(cli, "basin help sw") == ["switch"]
    assert complete(cli, f"basin -C {repo_dir} reset g") == ["gamma", "general"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert complete(cli, f"basin -C {elsewhere} log ") == []  # no repository: nothing, quietly


def test_completion_never_loads_torch(repo_dir):
    probe = (
        "import sys\n"
        "from basinvcs.cli import main\n"
        "try:\n"
        "    main(prog_name='basin')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('HEAVY:' + ','.join(m for m in ('torch', 'networkx') if m in sys.modules))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "_BASIN_COMPLETE": "bash_complete",
        "COMP_WORDS": "basin checkout HEAD --model ",
        "COMP_CWORD": "4",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo_dir, env=env, capture_output=True, text=True
    )
    assert "plain,tiny" in done.stdout and "HEAVY:\n" in done.stdout, done.stdout + done.stderr


def test_completion_lists_the_registry_presets():
    from basinvcs.completion import PRESETS
    from basinvcs.model.registry import preset_names

    assert list(PRESETS) == preset_names()


def test_completion_is_documented():
    text = (ROOT / "docs" / "cli.md").read_text()
    for shell in ("bash_source", "zsh_source", "fish_source"):
        assert f"_BASIN_COMPLETE={shell} basin" in text
