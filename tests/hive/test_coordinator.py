"""The coordinator without HTTP: intake refusals, rounds, head commits, recovery after a crash."""

from __future__ import annotations

import dataclasses

import pytest

from basinvcs import porcelain
from basinvcs.errors import BasinError
from basinvcs.hive import coordinator as hc
from basinvcs.hive.update import SentFisher, Update, encode_change
from basinvcs.identity import Identity, format_key
from basinvcs.objects import Chart, Entanglement
from basinvcs.repository import Repository
from tests.conftest import CHART, vec

EDGES = [Identity(bytes([k]) * 32, f"edge{k}") for k in range(1, 6)]


def trusting(repo_dir, identities):
    """The repository at `repo_dir`, trusting `identities`: a hive's hub."""
    with Repository.open(repo_dir) as repo:
        for ident in identities:
            porcelain.trust(repo, format_key(ident.public_key), ident.name)
    return repo_dir


@pytest.fixture
def hub(repo_dir):
    return trusting(repo_dir, EDGES[:4])


def coordinator(repo_dir, **settings) -> hc.Coordinator:
    repo = Repository.open(repo_dir)
    return hc.Coordinator(repo, hc.Settings(**{"round_updates": 3, **settings}))


def signed_update(
    ident: Identity, parent, delta, *, round_=0, seq=1, samples=10, chart=CHART
) -> bytes:
    """An update record by `ident` changing z by `delta`, signed and encoded."""
    return (
        Update(
            chart=chart,
            parent=parent,
            round=round_,
            seq=seq,
            change=encode_change(delta),
            samples=samples,
            author=ident.public_key,
        )
        .signed(ident.sign)
        .encode()
    )


def update(
    c: hc.Coordinator, ident: Identity, delta, *, seq=1, parent=None, samples=10, chart=CHART
):
    return signed_update(
        ident, parent or c.head(), delta, round_=c.round, seq=seq, samples=samples, chart=chart
    )


def head_z(c: hc.Coordinator) -> list[float]:
    return list(c.repo.read_basin(c.repo.read_commit(c.head()).basin).z)


def test_a_round_closes_after_m_updates_into_a_signed_head(hub):
    c = coordinator(hub, rule="mean", optimizer="average")
    genesis = c.head()
    for k, ident in enumerate(EDGES[:2]):
        assert c.submit(update(c, ident, vec(c0=1.0 + k)))["round"] == 0
    assert c.head() == genesis and c.round == 0
    c.submit(update(c, EDGES[2], vec(c0=3.0)))
    assert c.round == 1 and c.head() != genesis
    commit = c.repo.read_commit(c.head())
    assert commit.parents == (genesis,) and commit.metrics["taken"] == 3.0
    assert commit.signature_valid() and commit.message.startswith("hive round 0: 3 updates")
    assert head_z(c)[0] == pytest.approx(2.0, rel=1e-2)  # the mean of 1, 2, 3 (8-bit values)
    assert c.status()["taken"] == 3
    assert c.messages[-1].startswith(f"round 0 closed: 3 taken, 0 refused; new head {c.head()} (")
    c.repo.close()


def test_beta_and_links_move_as_most_of_the_round_says(hub):
    c = coordinator(hub, rule="mean", optimizer="average")
    wrong = Update.decode(update(c, EDGES[0], vec(c0=1.0)))
    wrong = dataclasses.replace(wrong, beta=(0.1, 0.2), signature=b"").signed(EDGES[0].sign)
    with pytest.raises(hc.Refused) as refused:  # the genesis basin's β has one coefficient
        c.submit(wrong.encode())
    assert refused.value.status == 422 and "changes 2 β coefficients" in str(refused.value)
    link = (Entanglement("cardiology", "medicine", 0.4),)
    for k, ident in enumerate(EDGES[:3]):
        record = Update.decode(update(c, ident, vec(c0=1.0), seq=2))
        extras = {"beta": (0.25,), "links": link} if k < 2 else {}
        c.submit(dataclasses.replace(record, **extras, signature=b"").signed(ident.sign).encode())
    head = c.repo.read_basin(c.repo.read_commit(c.head()).basin)
    assert head.beta == (1.25,) and head.entanglements == link  # two of three: the median
    c.repo.close()


def test_the_default_rule_adds_what_updates_do_not_share_and_averages_what_they_do(hub):
    """The coordinator's defaults (sender_mean, average): three instances on different
    coordinates move the head by the sum of their changes, and two on one coordinate by their
    mean, as one training run taking their steps would and would not."""
    c = coordinator(hub)
    assert c.settings.rule == "sender_mean"
    c.submit(update(c, EDGES[0], vec(c0=1.0)))
    c.submit(update(c, EDGES[1], vec(c1=1.0, c2=1.0)))
    c.submit(update(c, EDGES[2], vec(c2=2.0)))
    z = head_z(c)
    assert z[0] == pytest.approx(1.0, rel=1e-2) and z[1] == pytest.approx(1.0, rel=1e-2)
    assert z[2] == pytest.approx(1.5, rel=1e-2)
    c.repo.close()


@pytest.mark.parametrize(
    "make, status, words",
    [
        (lambda c: b"\x00" * 5000, 413, "over the limit"),
        (lambda c: b"\xa1\x61a\x01", 400, "not a valid update"),
        (lambda c: update(c, EDGES[4], vec(c0=1.0)), 403, "not trusted"),
        (
            lambda c: update(c, EDGES[0], [0.0] * 32 + [1.0], chart=Chart(seed=7, dim=33)),
            422,
            "chart",
        ),
    ],
)
def test_bad_updates_are_refused_with_a_status(hub, make, status, words):
    c = coordinator(hub)
    with pytest.raises(hc.Refused) as err:
        c.submit(make(c))
    assert err.value.status == status and words in str(err.value)
    assert "\n" not in str(err.value) and c.status().get("pending", 0) == 0
    c.repo.close()


def test_replays_stale_parents_and_a_second_update_per_round(hub):
    c = coordinator(hub, round_updates=2, freshness=1)
    first = update(c, EDGES[0], vec(c0=1.0))
    c.submit(first)
    with pytest.raises(hc.Refused, match="replayed") as err:
        c.submit(first)  # the same record again
    assert err.value.status == 409
    with pytest.raises(hc.Refused, match="one update per signer per round") as err:
        c.submit(update(c, EDGES[0], vec(c0=2.0), seq=2))
    assert err.value.status == 429
    old_head = c.head()
    c.submit(update(c, EDGES[1], vec(c1=1.0)))  # closes round 0
    with pytest.raises(hc.Refused, match="stale parent") as err:
        c.submit(update(c, EDGES[2], vec(c0=1.0), parent=old_head))
    assert err.value.status == 409
    c.submit(update(c, EDGES[2], vec(c0=1.0)))  # from the new head: fine
    c.repo.close()


def test_outliers_are_refused_and_recorded(hub):
    c = coordinator(hub, round_updates=4, rule="mean", optimizer="average")
    for k, ident in enumerate(EDGES[:3]):
        c.submit(update(c, ident, vec(c0=1.0, c1=0.1 * k)))
    c.submit(update(c, EDGES[3], vec(c0=-500.0)))  # far from the round's median
    commit = c.repo.read_commit(c.head())
    assert commit.metrics["taken"] == 3.0 and commit.metrics["refused"] == 1.0
    assert "outlier: Fisher distance" in commit.message
    assert c.messages[-1].startswith("round 0 closed: 3 taken, 1 refused; new head")
    assert head_z(c)[0] > 0
    c.repo.close()


def test_inflated_sample_counts_buy_nothing_over_a_typical_say(hub):
    c = coordinator(hub, round_updates=4, rule="mean", optimizer="average")
    c.submit(update(c, EDGES[0], vec(c0=1.0), samples=10))
    c.submit(update(c, EDGES[1], vec(c0=1.0), samples=10))
    c.submit(update(c, EDGES[2], vec(c0=1.0), samples=5))  # fewer: less say
    c.submit(update(c, EDGES[3], vec(c0=4.0), samples=2**62))  # counts as the median, 10
    assert head_z(c)[0] == pytest.approx((10 + 10 + 5 + 10 * 4) / 35, rel=1e-2)
    c.repo.close()


def test_fisher_values_an_update_claims_switch_no_check_off(hub):
    """An update 100 times the others' size that claims next to no Fisher information on every
    coordinate it sends (and a huge maximum): the outlier check scores it as any other (identity
    Fisher, only `fisher_mean` reads the values), so it is refused all the same."""
    c = coordinator(hub, round_updates=4, rule="mean", optimizer="average")
    for k, ident in enumerate(EDGES[:3]):
        c.submit(update(c, ident, vec(c0=1.0, c1=0.1 * k)))
    record = Update.decode(update(c, EDGES[3], vec(c0=-100.0, c1=-100.0)))
    claim = SentFisher.encode([1e300] + [1e-300] * (record.change.k - 1))
    record = dataclasses.replace(record, fisher=claim, signature=b"").signed(EDGES[3].sign)
    c.submit(record.encode())
    commit = c.repo.read_commit(c.head())
    assert commit.metrics["taken"] == 3.0 and commit.metrics["refused"] == 1.0
    assert "outlier: Fisher distance" in commit.message and head_z(c)[0] > 0
    c.repo.close()


def test_a_key_removed_or_added_beside_a_running_coordinator_counts_at_once(hub):
    """`basin key remove` (another process saving the config): the signer's update that waits
    in the round is refused at its close and its next one at intake (403), and the round waits
    for M updates that count; `basin key add` lets a new signer in. No restart."""
    c = coordinator(hub, rule="mean", optimizer="average")
    c.submit(update(c, EDGES[0], vec(c0=9.0)))
    c.submit(update(c, EDGES[1], vec(c0=1.0)))
    with Repository.open(hub) as operator:
        porcelain.untrust(operator, "edge1")
        porcelain.trust(operator, format_key(EDGES[4].public_key), "edge5")
    c.submit(update(c, EDGES[4], vec(c0=3.0)))  # trusted now
    assert c.round == 0 and c.room() == 1  # edge1's waiting update no longer counts
    c.submit(update(c, EDGES[2], vec(c0=2.0)))  # fills the round
    commit = c.repo.read_commit(c.head())
    assert commit.metrics["taken"] == 3.0 and commit.metrics["refused"] == 1.0
    assert "signer no longer trusted" in commit.message
    assert head_z(c)[0] == pytest.approx(2.0, rel=1e-2)  # edge2's 1, edge3's 2, edge5's 3
    assert "trusted signers re-read: 5" in c.messages
    with pytest.raises(hc.Refused) as refused:
        c.submit(update(c, EDGES[0], vec(c0=9.0), seq=2))
    assert refused.value.status == 403 and "not trusted" in str(refused.value)
    c.repo.close()


def test_a_round_filled_by_a_trust_change_closes_at_the_next_tick_and_takes_at_most_m(hub):
    """A round that holds all it can take once a signer is removed closes at the timer's next
    tick, not at its T (its senders wait for the head, sending nothing). A signer trusted again
    after the round filled makes its waiting update count again: the round still takes at most
    M, the first to arrive; the one past M is refused ("round full"), not lost."""
    c = coordinator(hub, rule="mean", optimizer="average", round_updates=4, round_seconds=600)
    for ident in EDGES[:3]:
        c.submit(update(c, ident, vec(c0=1.0)))
    assert c.maybe_close() is None and c.round == 0  # four signers, three sent: not full
    with Repository.open(hub) as operator:
        porcelain.untrust(operator, "edge4")
    assert c.maybe_close() is not None and c.round == 1  # three signers left, three sent
    assert "trusted signers re-read: 4" in c.messages
    c.repo.close()

    c = coordinator(hub, rule="mean", optimizer="average", round_updates=3, round_seconds=600)
    with Repository.open(hub) as operator:
        porcelain.trust(operator, format_key(EDGES[3].public_key), "edge4")
    c.submit(update(c, EDGES[3], vec(c0=4.0), seq=2))  # waits, then its signer is removed
    with Repository.open(hub) as operator:
        porcelain.untrust(operator, "edge4")
    c.submit(update(c, EDGES[0], vec(c0=1.0), seq=2))
    c.submit(update(c, EDGES[1], vec(c0=2.0), seq=2))
    (answer,) = c.submit_many([update(c, EDGES[2], vec(c0=3.0), seq=2)], close=False)
    assert c.round == 1 and c.room() == 0  # full, as the server leaves it before closing
    with Repository.open(hub) as operator:  # trusted again before the close
        porcelain.trust(operator, format_key(EDGES[3].public_key), "edge4")
    assert c.close_if_full() is not None
    commit = c.repo.read_commit(c.head())
    assert commit.metrics["taken"] == 3.0 and commit.metrics["refused"] == 1.0
    assert f"refused {answer['cid']} " in commit.message and "round full" in commit.message
    assert head_z(c)[0] == pytest.approx(1 + 7 / 3, rel=1e-2)  # + edge4, edge1, edge2: 4, 1, 2
    c.repo.close()


def test_a_coordinator_killed_after_its_commit_finishes_the_round_on_restart(hub):
    c = coordinator(hub, rule="mean", optimizer="average")
    updates = [update(c, ident, vec(c0=1.0)) for ident in EDGES[:3]]
    for data in updates[:2]:
        c.submit(data)
    # the commit is written, then the process dies before the round is marked closed
    c.journal.close_round = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))
    with pytest.raises(SystemExit):
        c.submit(updates[2])
    head = c.head()
    c.repo.close()
    again = coordinator(hub, rule="mean", optimizer="average")  # recover() runs at start
    assert again.round == 1 and again.head() == head
    assert again.status()["taken"] == 3 and again.status().get("pending", 0) == 0
    with pytest.raises(hc.Refused, match="replayed"):
        again.submit(updates[0])  # counted once, never twice
    again.repo.close()


def test_rule_and_optimizer_options_reach_the_round(hub):
    # trim 0.34 of 3 drops one value per side: the median of 1, 2, 4 is 2 (the mean 2.33);
    # the outer step at lr 0.5 takes half of it
    c = coordinator(
        hub, rule="trimmed_mean", rule_options={"trim": 0.34}, optimizer_options={"lr": 0.5}
    )
    for ident, value in zip(EDGES[:3], (1.0, 2.0, 4.0), strict=True):
        c.submit(update(c, ident, vec(c0=value)))
    assert head_z(c)[0] == pytest.approx(1.0, rel=2e-2)
    c.repo.close()


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"rule": "median", "rule_options": {"trim": 0.3}}, "no option 'trim'"),
        ({"rule": "trimmed_mean", "rule_options": {"trim": 0.7}}, "trim fraction"),
        ({"optimizer": "average", "optimizer_options": {"momentum": 0.9}}, "no hyperparameter"),
        ({"optimizer": "nesterov", "optimizer_options": {"lr": -1.0}}, "lr -1.0 must be > 0"),
        ({"outlier_c": float("nan")}, "outlier factor"),
        ({"outlier_c": 0.0}, "outlier factor"),
    ],
)
def test_bad_settings_are_refused_at_start(hub, settings, words):
    with pytest.raises(BasinError, match=words):
        coordinator(hub, **settings)


def test_fisher_mean_weighs_each_coordinate_by_the_fisher_values_sent(hub):
    from basinvcs.hive.update import SentFisher

    c = coordinator(hub, rule="fisher_mean", round_updates=2)
    # each diagonal on the common scale: (1, 1) -> (d/2, d/2), (3, 1) -> (3d/4, d/4)
    for ident, value, fisher in ((EDGES[0], 1.0, (1.0, 1.0)), (EDGES[1], 3.0, (3.0, 1.0))):
        change = encode_change(vec(c0=value, c1=value))
        record = Update(
            chart=CHART,
            parent=c.head(),
            round=c.round,
            seq=1,
            change=change,
            samples=10,
            author=ident.public_key,
            fisher=SentFisher.for_change(change, vec(c0=fisher[0], c1=fisher[1])),
        )
        c.submit(record.signed(ident.sign).encode())
    # c0: (1·2 + 3·3) / (2 + 3) = 2.2; c1: (1·2 + 3·1) / (2 + 1) = 5/3; the plain mean is 2
    assert head_z(c)[:2] == pytest.approx([2.2, 5 / 3], rel=2e-2)
    c.repo.close()


def test_log_lines_are_echoed_and_only_the_latest_kept(hub):
    c = coordinator(hub)
    seen: list[str] = []
    c.echo = seen.append
    for k in range(hc.MAX_MESSAGES + 5):
        c.log(f"line {k}")
    assert len(seen) == hc.MAX_MESSAGES + 5
    assert len(c.messages) == hc.MAX_MESSAGES and c.messages[-1] == seen[-1]
    c.repo.close()


def test_a_round_whose_result_cannot_be_stored_refuses_its_largest_update_and_closes(hub):
    """Updates at the largest change a basin stores are valid; two rounds of them would push z
    past float24's range. The round refuses the largest update (saying why) and closes with the
    rest, in a round of two (no outlier check) and of one: no update can stall the hive."""
    from basinvcs.numeric import FLOAT24_MAX

    c = coordinator(hub, round_updates=2, rule="mean", optimizer="average")
    c.submit(update(c, EDGES[0], vec(c0=FLOAT24_MAX)))
    c.submit(update(c, EDGES[1], vec(c0=FLOAT24_MAX)))
    assert c.round == 1 and head_z(c)[0] == pytest.approx(FLOAT24_MAX, rel=1e-4)
    c.submit(update(c, EDGES[0], vec(c0=FLOAT24_MAX), seq=2))
    c.submit(update(c, EDGES[1], vec(c0=-1.0, c1=1.0), seq=2))
    assert c.round == 2
    commit = c.repo.read_commit(c.head())
    assert commit.metrics["taken"] == 1.0 and commit.metrics["refused"] == 1.0
    assert "the round's result cannot be stored with it (coordinate 0 is inf" in commit.message
    assert head_z(c)[1] == pytest.approx(1.0, rel=1e-2)  # the other one alone
    head = c.head()
    c.settings = dataclasses.replace(c.settings, round_updates=1)
    c.submit(update(c, EDGES[0], vec(c0=FLOAT24_MAX), seq=3))  # alone: refused, head stays
    assert c.round == 3 and c.head() == head
    assert c.messages[-1].startswith("round 2 closed: 0 taken, 1 refused; head unchanged")
    c.repo.close()


def test_an_update_refused_for_its_round_cannot_be_replayed_into_the_next(hub):
    """A second update in a round is refused (429) and its sequence number spent: its bytes,
    sent again by anyone once the round has closed, are a replay (409)."""
    c = coordinator(hub, round_updates=2, freshness=3)
    c.submit(update(c, EDGES[0], vec(c0=1.0), seq=10))
    second = update(c, EDGES[0], vec(c0=2.0), seq=11)
    with pytest.raises(hc.Refused) as err:
        c.submit(second)
    assert err.value.status == 429
    c.submit(update(c, EDGES[1], vec(c1=1.0)))  # closes round 0
    with pytest.raises(hc.Refused, match="sequence 11 replayed: 11 already seen") as err:
        c.submit(second)
    assert err.value.status == 409
    c.submit(update(c, EDGES[0], vec(c0=2.0), seq=12))  # the signer's own next one: fine
    c.repo.close()


def test_a_round_that_cannot_close_takes_no_more_than_m(hub, monkeypatch):
    """A close that fails (the repository unwritable: injected here) leaves the round full: the
    updates past its M are refused (503) rather than taken into it, and the round closes with
    its M once the repository is writable again."""
    c = coordinator(hub, round_updates=2, rule="mean", optimizer="average")
    real = hc.Coordinator._commit

    def unwritable(self, *args, **kwargs):
        raise BasinError("disk full")

    monkeypatch.setattr(hc.Coordinator, "_commit", unwritable)
    c.submit(update(c, EDGES[0], vec(c0=1.0)))
    c.submit(update(c, EDGES[1], vec(c0=1.0)))  # fills the round; its close fails
    assert c.round == 0 and c.messages[-1] == "round 0 not closed: disk full"
    answers = c.submit_many([update(c, e, vec(c0=5.0)) for e in EDGES[2:4]] + [b"junk"])
    assert [a.status for a in answers] == [503, 503, 400]
    assert str(answers[0]) == "round 0 is full and not closed yet: retry"
    assert c.status()["pending"] == 2
    monkeypatch.setattr(hc.Coordinator, "_commit", real)
    c.submit(update(c, EDGES[2], vec(c0=5.0)))  # closes round 0 first, then goes into round 1
    assert c.round == 1 and c.repo.read_commit(c.head()).metrics["taken"] == 2.0
    assert c.status()["pending"] == 1 and head_z(c)[0] == pytest.approx(1.0, rel=1e-2)
    c.repo.close()


def test_the_round_an_update_names_must_fit_its_parent_and_the_round_now(hub):
    """The round is signed: an update naming a round before its parent's, or after the one open,
    is refused (409), not taken in with a round it does not belong to."""
    c = coordinator(hub, round_updates=1, freshness=3)
    c.submit(update(c, EDGES[0], vec(c0=1.0)))  # round 0 closes: the head opened round 1
    record = Update.decode(update(c, EDGES[1], vec(c0=1.0)))
    for round_, seq in ((0, 1), (2**63 - 1, 2)):
        wrong = dataclasses.replace(record, round=round_, seq=seq, signature=b"")
        with pytest.raises(
            hc.Refused,
            match=f"update names round {round_}; its parent opened round 1 and this is round 1",
        ) as err:
            c.submit(wrong.signed(EDGES[1].sign).encode())
        assert err.value.status == 409
    c.submit(update(c, EDGES[1], vec(c0=1.0), seq=3))  # round 1, from round 1's head: taken
    assert c.round == 2
    c.repo.close()
