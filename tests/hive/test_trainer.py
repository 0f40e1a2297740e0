"""Edge training from a training loop (hive.trainer): three `tiny` instances in threads with an
in-process coordinator, each running its own loop with the callback; rounds, resyncs, sequence
numbers, error feedback, a coordinator that is down, a round that does not close in time, a head
that moved meanwhile, and the HTTP transport against a served coordinator."""

from __future__ import annotations

import statistics
import threading

import pytest
import torch

from basinvcs.hive import coordinator as hc
from basinvcs.hive import trainer as ht
from basinvcs.hive.update import Update
from basinvcs.identity import Identity, format_key
from basinvcs.model.projection import Projection
from basinvcs.model.registry import load_substrate
from basinvcs.model.tasks import make_task
from basinvcs.model.train import BasinModel, batch_loss
from basinvcs.porcelain import now_ms
from tests.conftest import CHART, answering, serving
from tests.hive import test_coordinator as tc
from tests.hive.test_coordinator import trusting

EDGES = [Identity(bytes([k]) * 32, f"edge{k}") for k in range(1, 4)]
TASKS = ("cipher", "reverse", "sort")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sub():
    return load_substrate("tiny")


@pytest.fixture(scope="module")
def proj(sub):
    projection = Projection(CHART, sub.specs)
    task = make_task("copy")
    BasinModel(sub, CHART, projection=projection)(task.encode(list(task.test[:2]))[0])
    return projection  # warmed: its cached tensors exist before threads share it


@pytest.fixture
def hub(repo_dir):
    return trusting(repo_dir, EDGES)


def coordinator(repo_dir, **settings) -> hc.Coordinator:
    return tc.coordinator(repo_dir, **{"rule": "mean", "optimizer": "average", **settings})


def head_z(c: hc.Coordinator) -> torch.Tensor:
    return torch.tensor(c.repo.read_basin(c.repo.read_commit(c.head()).basin).z)


class Recording(ht.HiveTrainer):
    """Keeps every change it sent, before error feedback."""

    def outgoing(self, change):
        self.changes = [*getattr(self, "changes", []), change]
        return change


class Instance:
    """One instance: a model, its optimiser, its task's batches, its trainer."""

    def __init__(self, sub, proj, transport, ident, task, **options):
        self.model = BasinModel(sub, CHART, projection=proj)
        self.opt = torch.optim.Adam([self.model.z], lr=0.05)
        self.task = make_task(task)
        self.gen = torch.Generator().manual_seed(0)
        self.hive = Recording(self.model, transport, ident, **options)

    def train_step(self) -> None:
        loss = batch_loss(self.model, self.task.batch(8, self.gen))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def loop(self, steps: int) -> None:
        for _ in range(steps):
            self.train_step()
            self.hive.step()
        self.hive.finish()


def run_threads(instances, steps: int) -> None:
    errors = []

    def run(inst):
        try:
            inst.loop(steps)
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(inst,)) for inst in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


class Tap:
    """A transport that keeps a copy of every update it carries."""

    def __init__(self, inner):
        self.inner, self.sent = inner, []

    def submit(self, data: bytes) -> dict:
        answer = self.inner.submit(data)
        self.sent.append(Update.decode(data))
        return answer

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_three_loops_advance_rounds_resync_and_carry_the_residual(hub, sub, proj):
    c = coordinator(hub, outlier_c=1e6)  # three different tasks: the check may flag one
    genesis = c.head()
    tap = Tap(ht.LocalTransport(c))
    instances = [
        Instance(sub, proj, tap, ident, task, every=2, k=8, seq=0, timeout=60)
        for ident, task in zip(EDGES, TASKS, strict=True)
    ]
    run_threads(instances, steps=5)  # rounds of 2, 2 and (finish) 1 steps
    assert c.round == 3 and c.status()["taken"] == 9
    heads = [c.head()]
    while len(heads) < 4:
        heads.append(c.repo.read_commit(heads[-1]).parents[0])
    assert heads[-1] == genesis
    for inst in instances:
        hive = inst.hive
        assert hive.seq == 3 and [s.sent.seq for s in hive.history] == [1, 2, 3]
        assert [s.sent.round for s in hive.history] == [0, 1, 2]
        assert [s.sent.steps for s in hive.history] == [2, 2, 1]
        assert [s.head.cid for s in hive.history] == heads[2::-1]
        assert all(s.taken for s in hive.history)
        assert all(s.sent.coordinates <= 8 and s.sent.bytes <= 600 for s in hive.history)
        assert hive.bytes_sent == sum(s.sent.bytes for s in hive.history)
        assert torch.equal(inst.model.z.detach(), head_z(c))  # everyone restarted from the head
        assert hive.parent == c.head()
        # error feedback: what was sent plus what is held back is everything there was to send
        mine = [u for u in tap.sent if u.author == hive.identity.public_key]
        assert [u.seq for u in mine] == [1, 2, 3]
        sent = torch.tensor([u.delta() for u in mine], dtype=torch.float64).sum(0)
        total = torch.tensor(hive.changes, dtype=torch.float64).sum(0)
        assert any(abs(r) > 0 for r in hive.residual)
        assert torch.allclose(sent + torch.tensor(hive.residual, dtype=torch.float64), total)
    # each head is the previous one plus the mean of the round's three decoded updates
    for r in range(3):
        updates = [u for u in tap.sent if u.parent == heads[3 - r]]
        assert len(updates) == 3 and {u.round for u in updates} == {r}
        before = c.repo.read_basin(c.repo.read_commit(heads[3 - r]).basin).z
        after = c.repo.read_basin(c.repo.read_commit(heads[2 - r]).basin).z
        mean = torch.tensor([u.delta() for u in updates], dtype=torch.float64).mean(0)
        expected = torch.tensor(before, dtype=torch.float64) + mean
        after = torch.tensor(after, dtype=torch.float64)
        assert torch.allclose(after, expected, rtol=1e-4, atol=1e-6)
    c.repo.close()


class Flaky:
    """A transport whose coordinator can be taken down."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def __getattr__(self, name):
        if self.down:
            raise ht.HiveError("cannot reach the hive coordinator at test: connection refused")
        return getattr(self.inner, name)


def test_sequence_numbers_come_from_the_clock_and_survive_a_restart(hub, sub, proj):
    c = coordinator(hub, round_updates=1)
    start = now_ms()

    def instance(**options) -> Instance:  # the same identity each time: a restarted script
        transport = ht.LocalTransport(c)
        return Instance(sub, proj, transport, EDGES[0], "cipher", every=1, k=8, **options)

    first = instance()
    for _ in range(2):
        first.train_step()
        first.hive.step()
    seqs = [s.sent.seq for s in first.hive.history]
    assert seqs[0] >= start and seqs[1] > seqs[0]
    again = instance()
    again.train_step()
    again.hive.step()
    assert again.hive.history[-1].taken and again.hive.history[-1].sent.seq > seqs[1]
    counted = instance(seq=0)  # counting from 0 instead: the restart is a replay
    counted.train_step()
    with pytest.raises(ht.HiveError, match="replayed"):
        counted.hive.step()
    c.repo.close()


@pytest.mark.parametrize("answer", [{"round": "abc", "cid": "x"}, {"round": 1}, {}])
def test_an_answer_to_an_update_that_is_not_a_coordinators_is_a_hive_error(answer):
    with answering(answer) as url, pytest.raises(ht.HiveError, match="not a coordinator's"):
        ht.HttpTransport(url).submit(b"an update")


def test_a_coordinator_that_is_down_is_one_error_and_no_local_work_is_lost(hub, sub, proj):
    c = coordinator(hub, round_updates=1)
    transport = Flaky(ht.LocalTransport(c))
    inst = Instance(sub, proj, transport, EDGES[0], "cipher", every=2, k=8, seq=0, timeout=5)
    for _ in range(2):
        inst.train_step()
        inst.hive.step()
    assert len(inst.hive.history) == 1
    residual, seq = inst.hive.residual, inst.hive.seq
    transport.down = True
    inst.train_step()
    assert inst.hive.step() is None
    inst.train_step()
    z = inst.model.z.detach().clone()
    with pytest.raises(ht.HiveError, match="cannot reach.*local work \\(2 steps\\) is kept") as err:
        inst.hive.step()
    assert "\n" not in str(err.value)
    assert torch.equal(inst.model.z.detach(), z) and inst.hive.residual == residual
    assert inst.hive.pending is None and inst.hive.parent == c.head()
    transport.down = False
    inst.train_step()
    synced = inst.hive.step()  # everything since the last sync goes out now
    assert synced.sent.steps == 3 and synced.sent.seq == seq + 1 and synced.taken
    assert torch.equal(inst.model.z.detach(), head_z(c))
    c.repo.close()


class Rewinding:
    """A transport that, once `rewind` is set, answers with an older head of the coordinator
    (signed by it) under a later round number: a replay of what it once served."""

    def __init__(self, inner):
        self.inner, self.rewind = inner, None

    def head(self) -> ht.Head:
        head = self.inner.head()
        return head if self.rewind is None else ht.Head(self.rewind, head.round + 1, head.chart)

    def wait(self, after: int, timeout: float) -> ht.Head:
        return self.head() if self.rewind is not None else self.inner.wait(after, timeout)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_older_head_served_again_is_refused_and_z_kept(hub, sub, proj):
    """Heads are signed by the coordinator, so a replay of an older one passes the signature
    check: the round its commit says it closed must come after the one synced."""
    c = coordinator(hub, round_updates=1)
    transport = Rewinding(ht.LocalTransport(c))
    inst = Instance(sub, proj, transport, EDGES[0], "cipher", every=1, k=8, timeout=5)
    for _ in range(2):
        inst.train_step()
        inst.hive.step()
    transport.rewind = c.repo.read_commit(c.head()).parents[0]  # round 0's head
    inst.train_step()
    z = inst.model.z.detach().clone()
    with pytest.raises(ht.HiveError, match="closed round 0, not one after the head synced"):
        inst.hive.step()
    assert torch.equal(inst.model.z.detach(), z) and inst.hive.parent == c.head()
    c.repo.close()


def test_a_round_that_does_not_close_in_time_then_syncs_carrying_later_steps(hub, sub, proj):
    c = coordinator(hub, round_updates=2)
    transport = ht.LocalTransport(c)
    a = Instance(sub, proj, transport, EDGES[0], "cipher", every=1, k=8, timeout=0.05)
    b = Instance(sub, proj, transport, EDGES[1], "reverse", every=1, k=8, timeout=5)
    a.train_step()
    with pytest.raises(ht.HiveError, match="round 0 has not closed.*was taken in"):
        a.hive.step()
    assert a.hive.pending is not None and a.hive.pending.round == 0
    sent_z = a.model.z.detach().double().clone()
    a.train_step()  # training goes on meanwhile
    later = a.model.z.detach().double() - sent_z
    b.hive.submit()  # the second update closes the round
    synced = a.hive.sync(timeout=0)
    assert synced.sent.round == 0 and c.round == 1
    expected = (head_z(c).double() + later).float()
    assert torch.allclose(a.model.z.detach(), expected, atol=1e-6)
    c.repo.close()


def test_a_head_that_moved_meanwhile_is_the_parent_and_local_work_is_carried(hub, sub, proj):
    c = coordinator(hub, round_updates=1)
    tap = Tap(ht.LocalTransport(c))
    a = Instance(sub, proj, tap, EDGES[0], "cipher", every=100, k=8)
    b = Instance(sub, proj, tap, EDGES[1], "reverse", every=1, k=8)
    start = c.head()
    a.train_step()
    mine = a.model.z.detach().double().clone()
    b.train_step()
    b.hive.step()  # round 0 closes without a
    moved = c.head()
    assert moved != start
    sent = a.hive.submit()
    assert sent.round == 1 and tap.sent[-1].parent == moved  # not stale
    change = torch.tensor(tap.sent[-1].delta(), dtype=torch.float64)
    change += torch.tensor(a.hive.residual, dtype=torch.float64)
    assert torch.allclose(change, mine, atol=1e-6)  # the change from genesis, carried over
    c.repo.close()


class Poisoned(ht.HiveTrainer):
    def outgoing(self, change):
        return [-100.0 * v for v in change]


def test_an_update_refused_as_an_outlier_is_reported_not_taken(hub, sub, proj):
    c = coordinator(hub)
    transport = ht.LocalTransport(c)
    instances = [
        Instance(sub, proj, transport, ident, task, every=1, k=8)
        for ident, task in zip(EDGES, TASKS, strict=True)
    ]
    bad = instances[2]
    bad.hive = Poisoned(bad.model, transport, bad.hive.identity, every=1, k=8)
    for inst in instances:
        inst.train_step()
        inst.hive.submit()  # the third closes the round
    assert c.round == 1
    records = [inst.hive.sync(timeout=0) for inst in instances]
    assert [r.taken for r in records] == [True, True, False]
    assert c.repo.read_commit(c.head()).metrics["refused"] == 1.0
    c.repo.close()


def test_refusals_and_bad_settings(hub, sub, proj, monkeypatch):
    c = coordinator(hub)
    stranger = Identity(bytes([9]) * 32, "stranger")
    inst = Instance(sub, proj, ht.LocalTransport(c), stranger, "cipher", every=1, k=8)
    inst.train_step()
    with pytest.raises(ht.HiveError, match="HTTP 403.*not trusted.*kept"):
        inst.hive.step()
    with pytest.raises(Exception, match="every"):
        ht.HiveTrainer(inst.model, ht.LocalTransport(c), EDGES[0], every=0)
    two = BasinModel(sub, CHART, projection=proj, beta=(1.0, 0.5))
    with pytest.raises(ht.HiveError, match="has 1 β coefficients; the model has 2"):
        ht.HiveTrainer(two, ht.LocalTransport(c), EDGES[0])
    c.repo.close()


class BetaInstance(Instance):
    """An instance that trains β as well as z."""

    def __init__(self, sub, proj, transport, ident, task, **options):
        super().__init__(sub, proj, transport, ident, task, **options)
        self.model = BasinModel(sub, CHART, projection=proj, train_beta=True)
        self.opt = torch.optim.Adam([self.model.z, self.model.beta], lr=0.05)
        self.hive = Recording(self.model, transport, ident, **options)


def test_instances_that_train_beta_send_its_change_and_the_round_moves_it(hub, sub, proj):
    c = coordinator(hub, outlier_c=1e6)
    tap = Tap(ht.LocalTransport(c))
    instances = [
        BetaInstance(sub, proj, tap, ident, task, every=1, k=8, timeout=60)
        for ident, task in zip(EDGES, TASKS, strict=True)
    ]
    run_threads(instances, steps=3)
    assert c.round == 3
    heads = [c.head()]
    while len(heads) < 4:
        heads.append(c.repo.read_commit(heads[-1]).parents[0])
    moved = 0
    for head, parent in zip(heads, heads[1:], strict=False):
        # at z = 0 β has no gradient: the first round sends none and leaves it
        sent = [u.beta[0] if u.beta else 0.0 for u in tap.sent if u.parent == parent]
        assert len(sent) == 3
        before = c.repo.read_basin(c.repo.read_commit(parent).basin).beta[0]
        after = c.repo.read_basin(c.repo.read_commit(head).basin).beta[0]
        assert after == pytest.approx(before + statistics.median(sent), rel=1e-12)
        moved += after != before
    assert moved >= 2 and sum(u.beta is not None for u in tap.sent) >= 6
    beta = list(c.repo.read_basin(c.repo.read_commit(c.head()).basin).beta)
    for inst in instances:  # every instance restarted from the head's β
        assert inst.model.beta.tolist() == beta
    c.repo.close()


def test_the_http_transport_against_a_served_coordinator(hub, sub, proj):
    c = coordinator(hub, round_updates=1)
    try:
        with serving(c) as url:
            transport = ht.HttpTransport(url, poll=0.05)
            inst = Instance(
                sub, proj, transport, EDGES[0], "cipher", every=2, k=8, seq=0, timeout=10
            )
            for _ in range(4):
                inst.train_step()
                inst.hive.step()
            assert [s.sent.seq for s in inst.hive.history] == [1, 2] and c.round == 2
            assert torch.equal(inst.model.z.detach(), head_z(c))
            assert transport.key == c.repo.identity().public_key
            wrong = ht.HttpTransport(url, key=format_key(EDGES[1].public_key))
            with pytest.raises(ht.HiveError, match="names key"):
                wrong.head()
    finally:
        c.repo.close()
    with pytest.raises(ht.HiveError, match="cannot reach the hive coordinator"):
        ht.HiveTrainer(inst.model, ht.HttpTransport(url), EDGES[0])


class Losing:
    """A transport that loses the answer to every update while `lose` is set: after passing it
    on (`deliver`) or without (it never arrived), as a dropped connection would."""

    def __init__(self, inner):
        self.inner, self.lose, self.deliver, self.sent = inner, False, True, 0

    def submit(self, data: bytes) -> dict:
        self.sent += 1
        if not self.lose:
            return self.inner.submit(data)
        if self.deliver:
            self.inner.submit(data)
        raise ht.AnswerLost("cannot reach the hive coordinator: connection reset")

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_an_update_whose_answer_was_lost_after_it_arrived_counts_once(hub, sub, proj):
    """Sent again before waiting: the coordinator refuses the bytes as a replay; the signed
    head names it taken, so its change is not carried again."""
    c = coordinator(hub, round_updates=2)
    losing = Losing(ht.LocalTransport(c))
    a = Instance(sub, proj, losing, EDGES[0], "cipher", every=1, k=8, timeout=5)
    b = Instance(sub, proj, ht.LocalTransport(c), EDGES[1], "reverse", every=1, k=8, timeout=5)
    a.train_step()
    losing.lose = True
    sent = a.hive.submit()
    assert not sent.answered and a.hive.pending == sent
    b.train_step()
    b.hive.submit()  # round 0 closes with both
    synced = a.hive.sync()
    assert losing.sent == 2  # sent again, refused as a replay
    assert synced.taken is True and not synced.kept and c.status()["taken"] == 2
    assert torch.equal(a.model.z.detach(), head_z(c))  # its change is in the head, once
    with pytest.raises(ht.HiveError, match="no update is waiting"):
        a.hive.sync()
    c.repo.close()


def test_a_lone_instance_whose_update_never_arrived_gets_it_taken_by_sending_it_again(
    hub, sub, proj
):
    """No one else sends: the round would never close without it. Sending the same bytes
    again is safe (one sequence number counts once) and gets it taken."""
    c = coordinator(hub, round_updates=1)
    losing = Losing(ht.LocalTransport(c))
    a = Instance(sub, proj, losing, EDGES[0], "cipher", every=1, k=8, timeout=5)
    a.train_step()
    losing.lose, losing.deliver = True, False
    a.hive.submit()
    assert c.status().get("pending", 0) == 0 and c.round == 0  # it never arrived
    losing.lose = False
    synced = a.hive.sync()
    assert synced.taken is True and synced.sent.answered and c.round == 1
    assert c.status()["taken"] == 1
    c.repo.close()


def test_an_update_that_never_arrived_is_kept_once_its_window_closed(hub, sub, proj):
    """Still lost when sent again, and rounds 0 and 1 (K = 2) close without it: no signed head
    names it, so it never arrived. Its whole change is carried onto the head (residual as
    before it) and goes out with the next update."""
    c = coordinator(hub, round_updates=2, freshness=2)
    losing = Losing(ht.LocalTransport(c))
    a = Instance(sub, proj, losing, EDGES[0], "cipher", every=1, k=8, timeout=5)
    others = [
        Instance(sub, proj, ht.LocalTransport(c), e, t, every=1, k=8, timeout=5)
        for e, t in zip(EDGES[1:], TASKS[1:], strict=True)
    ]
    residual = a.hive.residual
    a.train_step()
    a.hive.steps += 1  # as step() counts (it would also send)
    losing.lose, losing.deliver = True, False
    a.hive.submit()
    change = a.model.z.detach().double() - a.hive._z_sync
    with pytest.raises(ht.HiveError, match="round 0 has not closed.*its answer was lost"):
        a.hive.sync(timeout=0.05)
    for _ in range(2):  # rounds 0 and 1 close without it
        for o in others:
            o.train_step()
            o.hive.submit()
        for o in others:
            o.hive.sync()
    assert c.round == 2
    synced = a.hive.sync(timeout=1)
    assert synced.kept and synced.taken is False and a.hive.pending is None
    assert a.hive.residual == residual  # as before the lost update
    expected = (head_z(c).double() + change).float()
    assert torch.allclose(a.model.z.detach(), expected, atol=1e-6)  # its change kept
    losing.lose = False
    a.train_step()
    a.hive.steps += 1
    sent = a.hive.submit()  # the kept change goes out, with the steps since
    assert sent.steps == 2 and sent.answered
    assert c.status()["taken"] == 4
    c.repo.close()


def test_the_http_transport_says_when_an_answer_was_lost(hub, sub, proj, monkeypatch):
    """Over HTTP: the update arrived and the 202 was lost; the trainer learns from the signed
    head that it was taken, and it counts once."""
    from basinvcs.hive import edge

    c = coordinator(hub, round_updates=1)
    real = edge._request

    def lost(url, data=None):
        answer = real(url, data)
        if data is not None and lost.on:
            lost.on = False
            raise edge.AnswerLost(f"cannot reach the hive coordinator at {url}: reset")
        return answer

    lost.on = True
    try:
        with serving(c) as url:
            inst = Instance(sub, proj, ht.HttpTransport(url, poll=0.05), EDGES[0], "cipher")
            monkeypatch.setattr(edge, "_request", lost)
            inst.train_step()
            synced = inst.hive.step()
            assert not synced.sent.answered and synced.taken is True and not synced.kept
            assert c.status()["taken"] == 1 and c.round == 1
    finally:
        c.repo.close()


class Forging:
    """A transport whose answers to "which round is open" are forged once `on` (a man in the
    middle on plain HTTP): the round it reports is 10 ahead. Heads themselves are signed."""

    def __init__(self, inner):
        self.inner, self.on = inner, False

    def head(self) -> ht.Head:
        head = self.inner.head()
        return ht.Head(head.cid, head.round + 10, head.chart) if self.on else head

    def wait(self, after: int, timeout: float) -> ht.Head:
        return self.head() if self.on else self.inner.wait(after, timeout)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_forged_round_number_does_not_make_a_lost_update_count_as_never_arrived(hub, sub, proj):
    """Only a signed head may end a lost update's window: with the round numbers forged, the
    trainer keeps waiting (it times out, training goes on), and once the round closes the
    signed head names the update taken: its change is not carried again."""
    c = coordinator(hub, round_updates=2)
    forging = Forging(ht.LocalTransport(c))
    losing = Losing(forging)
    a = Instance(sub, proj, losing, EDGES[0], "cipher", every=1, k=8, timeout=5)
    b = Instance(sub, proj, ht.LocalTransport(c), EDGES[1], "reverse", every=1, k=8, timeout=5)
    a.train_step()
    losing.lose = True
    a.hive.submit()  # it arrived; its answer did not
    forging.on = True
    with pytest.raises(ht.HiveError, match="window"):
        a.hive.sync(timeout=0.3)
    assert a.hive.pending is not None and c.round == 0
    b.train_step()
    b.hive.submit()  # round 0 closes with both
    synced = a.hive.sync()
    assert synced.taken is True and not synced.kept
    assert torch.equal(a.model.z.detach(), head_z(c))  # its change in the head once, not kept
    c.repo.close()
