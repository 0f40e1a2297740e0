"""Quarantine: the judgement alone, then a real coordinator over its journal quarantining a
signer that works against its cohort, refusing it, keeping that across a restart, and the
operator's `basin hive release` beside it."""

from __future__ import annotations

import numpy as np
import pytest

from basinvcs import porcelain
from basinvcs.errors import BasinError
from basinvcs.hive import coordinator as hc
from basinvcs.hive import quarantine
from basinvcs.identity import format_key
from basinvcs.repository import Repository
from tests.conftest import vec
from tests.hive.test_coordinator import EDGES, coordinator, update

AFTER = 3


def unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=float)
    return v / np.linalg.norm(v)


KEYS = [bytes([k]) * 32 for k in range(6)]


def sums(*vectors, count: int = 20) -> dict[bytes, tuple[np.ndarray, int]]:
    return {KEYS[k]: (unit(*v), count) for k, v in enumerate(vectors)}


def test_a_signer_against_every_other_of_its_cohort_is_quarantined():
    found = quarantine.judge(
        sums((1, 0.3, 0), (1, -0.3, 0), (1, 0, 0.3), (-1, 0, 0)), dict.fromkeys(KEYS[:4], "neg")
    )
    assert list(found) == [KEYS[3]]
    assert found[KEYS[3]].startswith("its updates point against every other signer of cohort neg")
    assert "over 20 updates" in found[KEYS[3]]


@pytest.mark.parametrize(
    "vectors, cohorts, count, why",
    [
        ([(1, 0), (-1, 0)], ["a", "a"], 20, "two: neither can be told from the other"),
        ([(1, 0), (1, 0.1), (-1, 0)], ["a", "b", "a"], 20, "its cohort has two"),
        ([(1, 0), (1, 0.1), (-1, 0)], ["a", "a", None], 20, "no cohort, not judged"),
        ([(1, 0), (1, 0.1), (-1, 0)], ["a", "a", "a"], 19, "fewer updates than `after`"),
        ([(1, 0.2), (-1, 0.2), (0, -1)], ["a", "a", "a"], 20, "the others do not agree"),
        ([(1, 0), (1, 0.1), (-1, 3)], ["a", "a", "a"], 20, "against, but only by -0.32 < τ"),
        ([(1, 0), (1, 0.1), (-1, 0), (-1, 0.1)], ["a"] * 4, 20, "two colluders agree"),
    ],
)
def test_no_one_is_quarantined_on_too_little_or_mixed_evidence(vectors, cohorts, count, why):
    given = {KEYS[k]: c for k, c in enumerate(cohorts) if c is not None}
    assert quarantine.judge(sums(*vectors, count=count), given) == {}, why


def test_a_zero_direction_is_not_judged_and_bad_settings_are_refused():
    judged = sums((1, 0), (1, 0.1), (-1, 0))
    judged[KEYS[1]] = (np.zeros(2), 20)
    assert quarantine.judge(judged, dict.fromkeys(KEYS[:3], "a")) == {}
    for tau, after in ((1.0, 20), (-0.1, 20), (float("nan"), 20), (0.3, 0)):
        with pytest.raises(BasinError):
            hc.Settings(quarantine_tau=tau, quarantine_after=after).check()


@pytest.fixture
def cohort_hub(repo_dir):
    """A hub trusting edge1..edge4 in cohort "neg" and edge5 in none (and its own key, which
    `init` trusts: it signs the heads, and sends no updates)."""
    with Repository.open(repo_dir) as repo:
        for k, ident in enumerate(EDGES):
            cohort = "neg" if k < 4 else None
            porcelain.trust(repo, format_key(ident.public_key), ident.name, cohort=cohort)
    return repo_dir


def play(c: hc.Coordinator, rounds: int, first_seq: int = 1, flipper: bool = True) -> None:
    """`rounds` rounds of five updates: edge1..3 push c0 up (each its own way on one other
    coordinate), edge4 pushes c0 down (up where not `flipper`), edge5 moves c9 alone."""
    for r in range(rounds):
        seq = first_seq + r
        for k, ident in enumerate(EDGES[:3]):
            c.submit(update(c, ident, vec(c0=1.0, **{f"c{k + 1}": 0.3}), seq=seq))
        c.submit(update(c, EDGES[3], vec(c0=-1.0 if flipper else 1.0), seq=seq))
        c.submit(update(c, EDGES[4], vec(c9=0.5), seq=seq))


def test_a_coordinator_quarantines_refuses_and_keeps_it_across_a_restart(cohort_hub, cli):
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=AFTER)
    play(c, AFTER - 1)
    assert c.journal.quarantined() == {}  # two updates each: not judged yet
    play(c, 1, first_seq=AFTER)
    (held,) = c.journal.quarantined().items()
    assert held[0] == EDGES[3].public_key and held[1][0] == AFTER  # as round 3 opened
    assert c.messages[-1].startswith(f"round {AFTER}: quarantined edge4 (")
    assert c.status()["quarantined"] == 1
    out = cli("hive", "signers").output.splitlines()
    row = next(line for line in out if line.startswith("edge4 "))
    assert row.split()[1] == "neg" and row.endswith(f"since round {AFTER}")
    assert out[-1].startswith(f"edge4 quarantined at round {AFTER}: its updates point against")
    assert next(line for line in out if line.startswith("edge5 ")).split()[1] == "-"
    with pytest.raises(hc.Refused) as refused:
        c.submit(update(c, EDGES[3], vec(c0=-1.0), seq=9))
    assert refused.value.status == 403
    assert f"is quarantined since round {AFTER}: its updates point against" in str(refused.value)
    assert str(refused.value).endswith("(the operator lifts it: basin hive release)")
    # the round closes with the four signers left (M is 5, but a round takes one per signer)
    play_round = c.round
    for ident in EDGES[:3]:
        c.submit(update(c, ident, vec(c0=1.0), seq=AFTER + 1))
    c.submit(update(c, EDGES[4], vec(c9=0.5), seq=AFTER + 1))
    assert c.round == play_round + 1
    c.repo.close()
    again = coordinator(cohort_hub, round_updates=5, quarantine_after=AFTER)
    assert EDGES[3].public_key in again.journal.quarantined()  # the journal's, not memory's
    directions = again.journal.directions([e.public_key for e in EDGES])
    assert directions[EDGES[0].public_key][::2] == ("neg", AFTER + 1)
    assert directions[EDGES[3].public_key][2] == AFTER  # nothing since its quarantine
    assert EDGES[4].public_key not in directions  # no cohort: nothing kept
    # the operator releases it beside the running coordinator (another connection)
    assert cli("hive", "release", "edge4").output.startswith("released edge4 (z6Mk")
    assert again.journal.quarantined() == {} and again.status()["quarantined"] == 0
    assert again.submit(update(again, EDGES[3], vec(c0=1.0), seq=10))["round"] == again.round
    assert EDGES[3].public_key not in again.journal.directions([EDGES[3].public_key])
    again.repo.close()


def test_a_signer_moved_to_another_cohort_is_judged_on_its_updates_there(cohort_hub):
    """The operator moves edge4 to cohort "pos" (`basin key add` again): its sum from "neg" no
    longer counts, and starts again from its next update."""
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=AFTER)
    play(c, AFTER - 1)
    with Repository.open(cohort_hub) as operator:
        porcelain.trust(operator, format_key(EDGES[3].public_key), "edge4", cohort="pos")
    play(c, 2, first_seq=AFTER)  # would have made AFTER + 1 in "neg"
    assert c.journal.quarantined() == {}
    ((cohort, _, count),) = c.journal.directions([EDGES[3].public_key]).values()
    assert (cohort, count) == ("pos", 2)
    c.repo.close()


def test_an_update_refused_as_an_outlier_still_counts_where_its_signer_pushes(cohort_hub):
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=100)
    for k, ident in enumerate(EDGES[:3]):
        c.submit(update(c, ident, vec(c0=1.0, c1=0.1 * k)))
    c.submit(update(c, EDGES[3], vec(c0=-500.0)))  # far from the round's median
    c.submit(update(c, EDGES[4], vec(c0=1.0, c1=0.3)))
    commit = c.repo.read_commit(c.head())
    assert commit.metrics["refused"] == 1.0 and "outlier" in commit.message
    ((_, total, count),) = c.journal.directions([EDGES[3].public_key]).values()
    assert count == 1 and total[0] == pytest.approx(-1.0)  # at unit norm, not x500
    c.repo.close()


def test_release_refuses_what_is_not_quarantined_and_changes_nothing(cohort_hub, cli):
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=AFTER)
    play(c, 1)
    before = c.journal.directions([EDGES[0].public_key])
    for who, words in (
        ("edge1", "edge1 is not quarantined"),
        ("nobody", "no trusted signer or key 'nobody'"),
    ):
        result = cli.fails("hive", "release", who)
        assert words in result.stderr and len(result.stderr.splitlines()) == 1
    after = c.journal.directions([EDGES[0].public_key])
    assert after[EDGES[0].public_key][2] == before[EDGES[0].public_key][2] == 1
    c.repo.close()


def test_release_of_a_name_two_signers_share_asks_for_the_key(cohort_hub, cli):
    with Repository.open(cohort_hub) as operator:
        porcelain.trust(operator, format_key(EDGES[4].public_key), "edge4")  # edge4's name too
    result = cli.fails("hive", "release", "edge4")
    assert "'edge4' names several trusted keys: give the key itself" in result.stderr


def test_release_without_a_journal_is_one_line(repo_dir, cli):
    result = cli.fails("hive", "release", format_key(EDGES[0].public_key))
    assert "no hive journal in" in result.stderr and len(result.stderr.splitlines()) == 1


def test_honest_cohorts_and_quarantine_off_quarantine_no_one(cohort_hub):
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=AFTER)
    play(c, AFTER + 1, flipper=False)
    assert c.journal.quarantined() == {}
    c.repo.close()
    off = coordinator(cohort_hub, round_updates=5, quarantine_tau=None)
    play(off, AFTER + 1, first_seq=AFTER + 2)
    assert off.journal.quarantined() == {}
    # nothing summed while it is off
    assert off.journal.directions([EDGES[3].public_key])[EDGES[3].public_key][2] == AFTER + 1
    off.repo.close()


def test_a_waiting_update_of_a_signer_quarantined_at_start_is_refused_at_close(cohort_hub):
    """Judged late (a coordinator started again with a lower `after`): its update waiting in
    the round is refused when the round closes, as a removed key's is, and the round waits
    for as many updates that count as there are signers left."""
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=100)
    play(c, AFTER)
    c.submit(update(c, EDGES[3], vec(c0=-1.0), seq=AFTER + 1))  # waits in the round
    c.repo.close()
    again = coordinator(cohort_hub, round_updates=5, quarantine_after=AFTER)
    assert EDGES[3].public_key in again.journal.quarantined()
    # four signers left: edge1..3's updates and edge4's waiting one do not fill the round
    for ident in EDGES[:3]:
        again.submit(update(again, ident, vec(c0=1.0), seq=AFTER + 1))
    assert again.round == AFTER and again.room() == 1
    again.submit(update(again, EDGES[4], vec(c9=0.5), seq=AFTER + 1))
    commit = again.repo.read_commit(again.head())
    assert commit.metrics["taken"] == 4.0 and commit.metrics["refused"] == 1.0
    assert "signer quarantined" in commit.message
    again.repo.close()


def test_a_round_killed_after_its_commit_adds_each_direction_once(cohort_hub):
    c = coordinator(cohort_hub, round_updates=5, quarantine_after=100)
    play(c, 1)
    for ident in EDGES[:4]:
        c.submit(update(c, ident, vec(c0=1.0), seq=2))
    c.journal.close_round = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))
    with pytest.raises(SystemExit):
        c.submit(update(c, EDGES[4], vec(c9=0.5), seq=2))
    c.repo.close()
    again = coordinator(cohort_hub, round_updates=5, quarantine_after=100)  # recover() runs
    assert again.round == 2
    counted = again.journal.directions([e.public_key for e in EDGES[:4]])
    assert {n for _, _, n in counted.values()} == {2}
    again.repo.close()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--quarantine", "1"], 2, "not in the range 0<=x<1"),
        (["--quarantine", "-0.1"], 2, "not in the range 0<=x<1"),
        (["--quarantine", "nan"], 1, "quarantine threshold nan must be at least 0 and below 1"),
        (["--quarantine-after", "0"], 2, "not in the range 1<=x"),
        (["--no-quarantine", "--quarantine", "0.2"], 2, "--no-quarantine with --quarantine"),
    ],
)
def test_bad_quarantine_options_are_refused_and_start_nothing(repo_dir, cli, args, code, message):
    from tests.conftest import state

    before = state(repo_dir)
    result = cli("hive", "serve", "--listen", "127.0.0.1:1", *args, ok=False)
    assert result.exit_code == code and message in result.stderr, result.stderr
    assert state(repo_dir) == before


def test_colluders_who_are_all_of_a_cohort_but_one_have_that_one_quarantined():
    """The judgement is the cohort's majority (docs/hive.md says so): two signers pointing
    together against the third of a cohort of three quarantine it, whoever is honest; with two
    on each side, each has a partner that agrees with it, and no one is judged."""
    flipped = sums((1, 0.1, 0), (-1, 0, 0.1), (-1, 0.1, 0.1))
    assert set(quarantine.judge(flipped, dict.fromkeys(flipped, "a"), after=20)) == {KEYS[0]}
    even = sums((1, 0.1, 0), (1, 0, 0.1), (-1, 0.1, 0.1), (-1, 0, 0))
    assert quarantine.judge(even, dict.fromkeys(even, "a"), after=20) == {}
