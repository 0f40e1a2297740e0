"""The coordinator's batched intake (submit_many), rounds of hundreds of updates whose commit
message cannot list them all (a round record lists them), and recovery from the journaled
decision."""

import pytest

from basinvcs import porcelain
from basinvcs.cid import CID
from basinvcs.errors import BasinError, RepositoryError
from basinvcs.hive.fates import round_fates
from basinvcs.identity import Identity
from basinvcs.objects import MAX_MESSAGE_BYTES
from basinvcs.repository import Repository
from tests.conftest import vec
from tests.hive.test_coordinator import coordinator as make
from tests.hive.test_coordinator import trusting, update

MANY = [Identity(k.to_bytes(4, "big") + bytes(28), f"e{k}") for k in range(1, 301)]


@pytest.fixture
def hub(repo_dir):
    return trusting(repo_dir, MANY)


def test_a_batch_is_checked_in_order(hub):
    c = make(hub, round_updates=10)
    a = update(c, MANY[0], vec(c0=1.0))
    b = update(c, MANY[0], vec(c0=2.0), seq=2)  # same signer, same round
    d = update(c, MANY[1], vec(c0=1.0))
    answers = c.submit_many([a, a, b, d, b"junk"])
    assert answers[0]["round"] == 0
    assert answers[1].status == 409 and "replayed" in str(answers[1])
    assert answers[2].status == 429
    assert answers[3]["round"] == 0
    assert answers[4].status == 400
    assert c.status()["pending"] == 2
    c.repo.close()


def test_a_round_that_fills_mid_batch_closes_then_the_rest_goes_on(hub):
    c = make(hub, rule="mean", optimizer="average")
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(3)]
    late = update(c, MANY[3], vec(c0=1.0))  # built on the old head: still fresh (K = 2)
    answers = c.submit_many(ups + [late])
    assert [a["round"] for a in answers] == [0, 0, 0, 1]
    assert c.round == 1 and c.status()["pending"] == 1
    c.repo.close()


def test_without_close_the_batch_stops_at_the_full_round(hub):
    c = make(hub)
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(5)]
    answers = c.submit_many(ups, close=False)
    assert [a is None for a in answers] == [False] * 3 + [True] * 2
    assert c.room() == 0 and c.round == 0
    c.close_if_full()
    assert c.round == 1
    answers = c.submit_many(ups[3:], close=False)
    assert [a["round"] for a in answers] == [1, 1]
    c.repo.close()


def test_a_journal_failure_rolls_the_batch_back_and_acknowledges_none(hub, monkeypatch):
    c = make(hub, round_updates=10)
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(3)]
    real = c.journal._accept
    calls = []

    def failing(*a):
        calls.append(1)
        if len(calls) == 3:
            raise RepositoryError("disk full")
        return real(*a)

    monkeypatch.setattr(c.journal, "_accept", failing)
    answers = c.submit_many(ups)
    assert all(isinstance(a, RepositoryError) for a in answers)
    assert c.status().get("pending", 0) == 0 and c.room() == 10
    monkeypatch.setattr(c.journal, "_accept", real)
    assert [a["round"] for a in c.submit_many(ups)] == [0, 0, 0]  # nothing was journaled
    c.repo.close()


def test_a_round_of_300_closes_with_a_record_of_every_fate(hub):
    c = make(hub, round_updates=300, rule="mean", optimizer="average")
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(300)]
    answers = c.submit_many(ups[:299])
    with Repository.open(hub) as operator:  # 200 of them refused at the close: untrusted now
        for k in range(99, 299):
            porcelain.untrust(operator, f"e{k + 1}")
    assert all(isinstance(a, dict) for a in answers) and c.round == 0
    assert c.close_round() is not None and c.round == 1
    commit = c.repo.read_commit(c.head())
    assert len(commit.message.encode()) <= MAX_MESSAGE_BYTES
    assert commit.message.startswith("hive round 0: 99 updates taken, 200 refused")
    assert commit.message.rstrip().endswith("every update is in the round record this commit links")
    record = c.repo.read_record(commit.record)
    cids = [CID.for_block(u) for u in ups[:299]]
    assert [cid for cid, _ in record.taken] == cids[:99]
    assert [key for _, key in record.taken] == [m.public_key for m in MANY[:99]]
    assert {cid for cid, _ in record.refused} == set(cids[99:])  # more than the message holds
    fates = round_fates(commit, c.repo.read_record)
    assert len(fates) == 299 and fates[str(cids[0])] == "taken"
    assert fates[str(cids[298])].startswith("refused: ") and "trust" in fates[str(cids[298])]
    assert c.status()["taken"] == 99
    assert porcelain.verify(c.repo).records == 1 and porcelain.verify(c.repo).ok
    c.repo.close()


def test_a_round_that_fits_its_message_links_no_record(hub):
    c = make(hub, round_updates=20, rule="mean", optimizer="average")
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(20)]
    c.submit_many(ups)
    commit = c.repo.read_commit(c.head())
    assert commit.record is None
    assert round_fates(commit, c.repo.read_record) == {str(CID.for_block(u)): "taken" for u in ups}
    c.repo.close()


def test_recovery_from_the_journaled_decision_keeps_the_outer_state(hub):
    c = make(hub, round_updates=200, rule="mean", optimizer="nesterov")
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(200)]
    c.submit_many(ups[:199])
    c.journal.close_round = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))
    with pytest.raises(SystemExit):
        c.submit(ups[199])
    closing = c.journal.get("closing")
    head = c.head()
    c.repo.close()
    again = make(hub, round_updates=200, rule="mean", optimizer="nesterov")
    assert again.round == 1 and again.head() == head
    assert again.status()["taken"] == 200 and again.status().get("pending", 0) == 0
    assert again.journal.get("outer") == closing["outer"] and again.journal.get("closing") is None
    again.repo.close()


def test_a_full_round_closes_when_the_coordinator_starts(hub):
    c = make(hub)
    ups = [update(c, MANY[k], vec(c0=1.0)) for k in range(3)]
    assert all(a is not None for a in c.submit_many(ups, close=False))
    assert c.round == 0
    c.repo.close()
    again = make(hub)
    assert again.round == 1 and again.status()["taken"] == 3
    again.repo.close()


def test_keep_rounds_forgets_old_updates_but_not_their_counts_or_sequence_numbers(hub):
    c = make(hub, keep_rounds=2, round_updates=5, rule="mean", optimizer="average")
    sent = []
    for r in range(5):
        # the first signer sends a far update each round: refused as an outlier at the close
        far = [1000.0, 1.0, 1.1, 1.2, 1.3]
        ups = [update(c, MANY[k], vec(c0=far[k]), seq=r + 1) for k in range(5)]
        sent.append(ups)
        answers = c.submit_many(ups, close=False)
        assert all(isinstance(a, dict) for a in answers)
        c.close_round()
    rounds = {r for (r,) in c.journal._run("SELECT DISTINCT round FROM updates")}
    assert rounds == {3, 4}  # the two last closed rounds
    status = c.status()
    assert (status["taken"], status["refused"], status["pending"]) == (20, 5, 0)
    c.submit_many([update(c, MANY[k], vec(c0=1.0), seq=9) for k in range(2)], close=False)
    counted = c.journal.counts()  # what /status keeps in memory is what the journal holds
    assert (
        {k: c.status()[k] for k in counted} == counted == {"taken": 20, "refused": 5, "pending": 2}
    )
    # a forgotten update sent again is still a replay: sequence numbers are kept
    answer = c.submit_many([sent[0][1]])[0]
    assert answer.status == 409 and "replayed" in str(answer)
    c.repo.close()
    again = make(hub, keep_rounds=2, round_updates=5)  # restarted: counts from the journal
    assert again.round == 5 and again.status()["taken"] == 20 and again.status()["refused"] == 5
    assert again.status()["pending"] == 2
    again.repo.close()


def test_keep_rounds_below_one_is_refused(hub):
    with pytest.raises(BasinError, match="keep_rounds 0 must be at least 1"):
        make(hub, keep_rounds=0)


def test_a_round_closes_once_it_holds_what_a_record_can_list(hub, monkeypatch):
    from basinvcs.hive import coordinator as hc

    with pytest.raises(BasinError, match="over 5,000: the most one round's record lists"):
        hc.Settings(round_updates=5001).check()
    c = make(hub, round_updates=10, rule="mean", optimizer="average")
    monkeypatch.setattr(hc, "MAX_ROUND_ENTRIES", 4)  # M is 10: the record's bound closes it
    answers = c.submit_many([update(c, MANY[k], vec(c0=1.0)) for k in range(4)])
    assert [a["round"] for a in answers] == [0, 0, 0, 0] and c.round == 1
    assert c.repo.read_commit(c.head()).metrics["taken"] == 4.0
    c.repo.close()
