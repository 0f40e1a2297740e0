"""What each signer did, read back from a real coordinator's journal: counts, and which signer
its summed updates point against and along; and `basin hive signers` printing it."""

from __future__ import annotations

import pytest

from basinvcs import porcelain
from basinvcs.hive import signers
from basinvcs.hive.journal import REFUSED, TAKEN
from basinvcs.repository import Repository
from tests.conftest import vec
from tests.hive.test_coordinator import EDGES, coordinator, trusting, update

ROUNDS = 4


@pytest.fixture
def hub(repo_dir):
    return trusting(repo_dir, EDGES[:4])


@pytest.fixture
def played(hub):
    """Four rounds: edge1 and edge2 push c0 up (each its own way on c1), edge3 pushes it down,
    edge4 moves c5 alone; in round 2 edge4 sends an update 100 times too large (refused)."""
    c = coordinator(hub, round_updates=4, rule="mean", optimizer="average")
    for r in range(ROUNDS):
        c.submit(update(c, EDGES[0], vec(c0=1.0, c1=0.2), seq=r + 1))
        c.submit(update(c, EDGES[1], vec(c0=1.0, c1=-0.2), seq=r + 1))
        c.submit(update(c, EDGES[2], vec(c0=-1.0), seq=r + 1))
        c.submit(update(c, EDGES[3], vec(c5=100.0 if r == 2 else 0.5), seq=r + 1))
    c.submit(update(c, EDGES[0], vec(c0=1.0), seq=ROUNDS + 1))  # waits in round 4
    yield c
    c.repo.close()


def test_each_signer_is_counted_and_set_against_and_along_the_others(played):
    chart = played.repo.config.chart
    rows = {r.author: r for r in signers.report(played.journal.history(), chart)}
    one, two, flipped, alone = (rows[e.public_key] for e in EDGES[:4])
    assert (one.taken, one.refused, one.pending, one.last_round) == (ROUNDS, 0, 1, ROUNDS)
    assert (alone.taken, alone.refused, alone.last_round) == (ROUNDS - 1, 1, ROUNDS - 1)
    assert one.along == (EDGES[1].public_key, pytest.approx(0.92, abs=0.02))  # (1, ±0.2)
    assert flipped.against[1] == pytest.approx(-0.98, abs=0.02)
    assert flipped.against[0] in (EDGES[0].public_key, EDGES[1].public_key)
    assert flipped.along is None  # nobody points its way
    assert alone.against is None and alone.along is None  # orthogonal to every other
    later = {r.author: r for r in signers.report(played.journal.history(3), chart)}
    assert later[EDGES[2].public_key].taken == 1 and EDGES[3].public_key in later


def test_the_journal_is_read_page_by_page_in_order(played):
    whole = list(played.journal.history(page=10**6))
    assert len(whole) == played.journal.held() == 4 * ROUNDS + 1
    assert [r[1] for r in whole] == sorted(r[1] for r in whole)
    assert list(played.journal.history(page=3)) == whole  # pages meet without loss or overlap
    assert list(played.journal.history(2, page=1)) == [r for r in whole if r[1] >= 2]
    assert played.journal.held(2) == sum(r[1] >= 2 for r in whole)


def test_basin_hive_signers_prints_the_report_by_name(played, hub, cli):
    with Repository.open(hub) as repo:
        porcelain.untrust(repo, "edge3")
    out = cli("hive", "signers").output.splitlines()
    header = "signer cohort taken refused pending last round most against most along quarantined"
    assert " ".join(out[0].split()) == header
    by_name = {line.split()[0]: line for line in out[1:]}
    assert by_name["edge1"].split()[1:6] == ["-", "4", "0", "1", "4"]
    assert by_name["edge1"].split()[-1] == "-"  # not quarantined
    assert "edge2 +0.9" in by_name["edge1"]  # cos((1, 0.2), (1, -0.2)), 8-bit values
    (flipped,) = [line for line in out[1:] if line.startswith("z6Mk")]  # edge3, removed
    assert flipped.split()[1:8] == ["(not", "trusted)", "-", "4", "0", "0", "3"]
    assert "-0.98" in flipped
    assert cli("hive", "signers", "--since", "9").output == "no updates from round 9 on\n"


def test_basin_hive_signers_without_a_journal_is_one_line(repo_dir, cli):
    result = cli.fails("hive", "signers")
    assert "no hive journal in" in result.stderr and len(result.stderr.splitlines()) == 1
    assert cli("hive", "signers", "--since", "-1", ok=False).exit_code == 2


def test_a_journal_row_that_is_no_update_is_one_error_line(played, hub, cli):
    import sqlite3

    with sqlite3.connect(hub / ".basin" / "hive.db") as db:
        db.execute(
            "INSERT INTO updates (cid, round, author, seq, data, received, status)"
            " VALUES ('x', 9, ?, 99, ?, 0, 'taken')",
            (EDGES[0].public_key, b"\xa0"),
        )
    result = cli.fails("hive", "signers")
    assert "the hive journal holds an update that is not one" in result.stderr


def test_updates_refused_as_outliers_count_and_those_of_signers_who_may_not_send_do_not(played):
    """As the quarantine sums them: an outlier says where its signer pushes; an update refused
    because its signer was removed or quarantined says nothing."""
    chart = played.repo.config.chart
    up, down = update(played, EDGES[0], vec(c0=1.0)), update(played, EDGES[1], vec(c0=-1.0))
    rows = [(EDGES[0].public_key, 0, TAKEN, None, up)]

    def against(reason: str | None) -> tuple[bytes, float] | None:
        history = [*rows, (EDGES[1].public_key, 0, REFUSED, reason, down)]
        return {r.author: r for r in signers.report(history, chart)}[EDGES[0].public_key].against

    outlier = against("outlier: Fisher distance 9 > 3")
    assert outlier == (EDGES[1].public_key, pytest.approx(-1.0, abs=1e-6))
    for reason in signers.CANNOT_SEND:
        assert against(reason) is None  # its only update does not count: no direction
