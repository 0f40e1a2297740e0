"""`basin diff` and `basin concepts` end to end."""

import math
import subprocess
import sys

from basinvcs.objects import Entanglement
from basinvcs.repository import Repository
from tests.conftest import DIM, commit_z, state, vec


def commit(repo_dir, z, message, **kw) -> str:
    return str(commit_z(repo_dir, z, message, **kw))


def test_diff_without_fisher_is_the_euclidean_distance(repo_dir, cli):
    a = commit(repo_dir, vec(c0=1.0, c1=2.0, c5=-0.5), "a")
    b = commit(repo_dir, vec(c0=4.0, c1=2.0, c3=0.25), "b")
    out = cli("diff", a, b).output
    # Δ = (+3 at 0, +0.25 at 3, +0.5 at 5): sqrt(9 + 1/16 + 1/4)
    expected = math.sqrt(9 + 0.0625 + 0.25)
    assert f"Fisher distance: {expected:.6g}" in out
    assert "metric: identity (neither packet has a Fisher diagonal)" in out
    assert f"|z_B - z_A|:     {expected:.6g} (3 of {DIM} coordinates changed)" in out
    rows = out.split("sqrt(F)*change): 3\n")[1].splitlines()[:3]
    assert rows == ["      0  +1  +4  +3", "      5  -0.5  +0  +0.5", "      3  +0  +0.25  +0.25"]
    assert "beta:      1\n" in out and "labels:    (unchanged)" in out
    assert "substrate: (none)" in out and "concepts:  (links unchanged)" in out


def test_diff_with_fisher_uses_the_mean_of_both_diagonals(repo_dir, cli):
    fa = [4.0, 1.0] + [1.0] * (DIM - 2)
    fb = [2.0, 0.25] + [1.0] * (DIM - 2)
    a = commit(repo_dir, vec(c0=1.0, c1=1.0), "a", fisher=fa)
    b = commit(repo_dir, vec(c0=2.0, c1=-1.0), "b", fisher=fb)
    out = cli("diff", a, b).output
    # each diagonal on the common scale (divided by its maximum, then by its mean), then averaged
    mean_a, mean_b = (1 + 0.25 * (DIM - 1)) / DIM, (1 + 0.125 + 0.5 * (DIM - 2)) / DIM
    f0, f1 = (1 / mean_a + 1 / mean_b) / 2, (0.25 / mean_a + 0.125 / mean_b) / 2
    # Δ = (1, -2)
    assert f"Fisher distance: {math.sqrt(f0 + 4 * f1):.6g}" in out
    assert "mean of both packets' Fisher diagonals" in out
    assert f"|z_B - z_A|:     {math.sqrt(5):.6g}" in out
    rows = out.split("change): 2\n")[1].splitlines()[:2]
    assert rows == [
        f"      0  +1  +2  {math.sqrt(f0):+.6g}",
        f"      1  +1  -1  {-2 * math.sqrt(f1):+.6g}",
    ]
    c = commit(repo_dir, vec(c0=2.0, c1=-1.0), "c, no fisher")
    out = cli("diff", "HEAD~1", c).output  # F̄ = (2 + 1, 0.25 + 1) / 2 on a zero Δ
    assert "Fisher distance: 0\n" in out and "mean of A's Fisher diagonal and identity" in out


def test_diff_stat_and_top_k(repo_dir, cli):
    commit(repo_dir, vec(**{f"c{i}": float(i + 1) for i in range(20)}), "twenty")
    out = cli("diff", "general~1", "general", "--stat").output
    norm = math.sqrt(sum((i + 1) ** 2 for i in range(20)))
    assert out == (
        f"general~1..general: Fisher distance {norm:.6g}, |dz| {norm:.6g}, 20 of {DIM} "
        "coordinates changed, labels +0 -0, links +0 -0 ~0\n"
    )
    full = cli("diff", "general~1", "general").output
    rows = full.split("change): 10\n")[1].split("beta:")[0].splitlines()
    assert len(rows) == 10 and rows[0] == "     19  +0  +20  +20" and rows[9].startswith("     10")
    three = cli("diff", "general~1", "general", "-n", "3").output
    assert len(three.split("change): 3\n")[1].split("beta:")[0].splitlines()) == 3
    assert "most changed" not in cli("diff", "general~1", "general", "-n", "0").output
    assert cli("diff", "general", "general", "--stat").output.startswith(
        "general..general: Fisher distance 0, |dz| 0, 0 of"
    )


def test_diff_shows_beta_labels_substrate_and_link_changes(repo_dir, cli):
    cli("fork", "general", "--specialize", "a")
    a = commit(repo_dir, vec(c0=1.0), "a", entanglements=[Entanglement("a", "b", 0.5)])
    b = commit(
        repo_dir,
        vec(c0=1.0),
        "b",
        beta=(1.0, 0.5),
        labels=["general", "b"],
        entanglements=[Entanglement("a", "b", -0.25), Entanglement("b", "c", 0.75)],
    )
    out = cli("diff", a, b).output
    assert "Fisher distance: 0\n" in out
    assert "beta:      1 -> 1, 0.5" in out
    assert "labels:    +b -a" in out
    assert "concepts:\n  + b ~ c  +0.75\n  ~ a ~ b  +0.50 -> -0.25\n" in out
    assert "links +1 -0 ~1" in cli("diff", a, b, "--stat").output
    assert "concepts:\n  - b ~ c  +0.75\n" in cli("diff", b, a).output


def test_bad_revisions_fail_with_one_error_line(repo_dir, cli):
    before = state(repo_dir)
    assert "unknown revision 'nope'" in cli.fails("diff", "general", "nope").stderr
    assert "no parent" in cli.fails("diff", "general~1", "general").stderr
    with Repository.open(repo_dir) as repo:
        basin = str(repo.read_commit(repo.head_commit()).basin)
    assert "not a valid commit" in cli.fails("diff", basin, "general").stderr
    assert state(repo_dir) == before
    assert cli("diff", "general", "nope", ok=False).exit_code == 1


def test_concepts_lists_concepts_and_links_by_strength(repo_dir, cli):
    assert "no concepts" in cli("concepts").output
    cli("fork", "general", "--specialize", "code")
    commit(repo_dir, vec(c0=3.0, c1=4.0), "code")
    cli("fork", "general", "--specialize", "math", "--branch", "m")
    commit(repo_dir, vec(c0=3.0, c1=4.0, c2=1.0), "math")
    cli("fork", "general", "--specialize", "poetry")
    commit(repo_dir, vec(c1=-4.0), "poetry")
    cli("fork", "general", "--specialize", "art")
    commit(repo_dir, vec(c7=1.0), "art: orthogonal to all")
    out = cli("concepts").output
    cos_cm = 25 / (5 * math.sqrt(26))
    assert out == (
        "concepts (4, metric: identity):\n"
        "  art     |u| = 1  branch art\n"
        "  code    |u| = 5  branch code\n"
        f"  math    |u| = {math.sqrt(26):.6g}  branch m\n"
        "  poetry  |u| = 4  branch poetry\n"
        "links (3, |strength| >= 0.1):\n"
        f"  code ~ math  {cos_cm:+.2f}\n"
        f"  code ~ poetry  {-16 / 20:+.2f}\n"
        f"  math ~ poetry  {-16 / (4 * math.sqrt(26)):+.2f}\n"
    )


def test_diff_starts_without_heavy_modules(repo_dir):
    probe = (
        "import sys\n"
        "from basinvcs.cli import main\n"
        "try:\n"
        "    main(['diff', 'general', 'general', '--stat'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = [m for m in ('torch', 'networkx', 'numpy') if m in sys.modules]\n"
        "    print('HEAVY:' + ','.join(heavy), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=repo_dir
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.rsplit("HEAVY:", 1)[1].strip() == "", done.stderr
