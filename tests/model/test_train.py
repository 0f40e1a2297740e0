"""Training in the basin: exact θ(z), gradients, Fisher, learning, commit round trip."""

import pytest
import torch

from basinvcs import numeric, porcelain
from basinvcs.errors import SchemaError
from basinvcs.model.bridge import checkout_state_dict
from basinvcs.model.projection import Projection
from basinvcs.model.registry import load_substrate
from basinvcs.model.substrate import Substrate
from basinvcs.model.tasks import Task, make_task
from basinvcs.model.train import (
    Anchor,
    BasinModel,
    batch_loss,
    commit_model_in_basin,
    fisher_diagonal,
    to_basin,
    train,
)
from basinvcs.objects import Chart
from basinvcs.repository import Repository

CHART = Chart(seed=0, dim=1024)  # what porcelain.init(path, dim=1024) makes


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a shared 2-core machine two threads of this small model often wait on each
    other (measured: 0.06-0.09 s per step on one thread, up to 1.7 s on two under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sub() -> Substrate:
    return load_substrate("tiny")


@pytest.fixture(scope="module")
def proj(sub) -> Projection:
    return Projection(CHART, sub.specs)  # its Gram correction takes a few seconds: build it once


@pytest.fixture(scope="module")
def task() -> Task:
    return make_task("cipher")


def model(sub, proj, z=None, **kw) -> BasinModel:
    return BasinModel(sub, CHART, z, projection=proj, **kw)


def test_zero_coordinates_give_the_substrate_exactly(sub, proj, task):
    inputs = task.encode(list(task.test[:8]))[0]
    assert torch.equal(model(sub, proj)(inputs), sub.build()(inputs))


def test_only_z_and_beta_are_trainable(sub, proj):
    m = model(sub, proj)
    assert [n for n, p in m.named_parameters()] == ["z"]
    assert m.z.shape == (1024,)
    trained = model(sub, proj, beta=(1.0, 0.5), train_beta=True)
    assert sorted(n for n, _ in trained.named_parameters()) == ["beta", "z"]
    assert all(p.requires_grad for p in trained.parameters())
    assert "theta0" in dict(m.named_buffers()) and not m.theta0.requires_grad


def test_forward_is_theta0_plus_beta_times_decoded_offset(sub, proj, task):
    z = torch.randn(1024, generator=torch.Generator().manual_seed(1)) * 20
    beta = (0.5, 1.5, -0.25)
    m = model(sub, proj, z, beta=beta)
    gpt = sub.build()
    gpt.load_state_dict({s.name: sub.theta0(s) + t for s, t in proj.decode(z, beta)})
    inputs = task.encode(list(task.test[:8]))[0]
    assert (m(inputs) - gpt(inputs)).abs().max() <= 1e-5


def test_a_masked_chart_leaves_tensors_at_theta0(sub, task):
    """Our GPT runs on the meta device, so tensors the mask leaves out are supplied at θ0."""
    chart = Chart.masked("srht", 0, 256, ["tok_emb.*", "pos_emb.*"])
    z = torch.randn(256, generator=torch.Generator().manual_seed(2)) * 5
    m = BasinModel(sub, chart, z)
    assert {s.name for s in m.specs} == {s.name for s in sub.specs} - {
        "tok_emb.weight",
        "pos_emb.weight",
    }
    masked_proj = Projection(chart, sub.specs)
    gpt = sub.build()
    state = sub.theta0_dict()
    for spec, offset in masked_proj.decode(z):
        state[spec.name] += offset
    gpt.load_state_dict(state)
    inputs = task.encode(list(task.test[:8]))[0]
    assert (m(inputs) - gpt(inputs)).abs().max() <= 1e-5
    m(inputs).sum().backward()
    assert m.z.grad is not None and not any(p.requires_grad for p in m.net.parameters())


def test_gradient_matches_finite_differences(sub, proj, task):
    z = torch.randn(1024, generator=torch.Generator().manual_seed(2)) * 3
    # float64 weights so that central differences resolve the loss (the offset is float32)
    m = model(sub, proj, z, beta=(1.0, -0.5), train_beta=True).double()
    batch = task.batch(8, torch.Generator().manual_seed(0))
    batch_loss(m, batch).backward()
    grad_z, grad_beta = m.z.grad.clone(), m.beta.grad.clone()
    picks = [int(grad_z.abs().argmax()), 17, 900]

    def loss_at(param: torch.Tensor, i: int, h: float) -> float:
        with torch.no_grad():
            param[i] += h
            value = float(batch_loss(m, batch))
            param[i] -= h
        return value

    h = 0.01
    for param, grad, indices in ((m.z, grad_z, picks), (m.beta, grad_beta, [0, 1])):
        for i in indices:
            fd = (loss_at(param, i, h) - loss_at(param, i, -h)) / (2 * h)
            assert fd == pytest.approx(float(grad[i]), rel=2e-3), (i, fd, grad[i])


def test_fisher_is_the_mean_squared_batch_gradient(sub, proj, task):
    m = model(sub, proj)
    gen = torch.Generator().manual_seed(3)
    batches = [task.batch(8, gen) for _ in range(3)]
    fisher = fisher_diagonal(m, batches)
    assert fisher.shape == (1024,) and fisher.dtype == torch.float64
    assert (fisher >= 0).all() and torch.isfinite(fisher).all() and fisher.max() > 0
    by_hand = torch.zeros(1024, dtype=torch.float64)
    for b in batches:
        m.zero_grad()
        batch_loss(m, b).backward()
        by_hand += m.z.grad.double() ** 2
    assert torch.allclose(fisher, by_hand / 3, rtol=1e-5, atol=0)
    with pytest.raises(ValueError):
        fisher_diagonal(m, [])

    # Coordinates with large Fisher values are the ones that move the losses.
    with torch.no_grad():
        base = [float(batch_loss(m, b)) for b in batches]

    def loss_change(indices: torch.Tensor) -> float:
        total = 0.0
        for i in indices.tolist():
            with torch.no_grad():
                m.z[i] = 0.5
                total += sum(
                    (float(batch_loss(m, b)) - base[k]) ** 2 for k, b in enumerate(batches)
                )
                m.z[i] = 0.0
        return total

    order = fisher.argsort()
    assert loss_change(order[-3:]) > 10 * loss_change(order[:3])


def test_training_is_deterministic(sub, proj, task):
    runs = []
    for _ in range(2):
        m = model(sub, proj)
        runs.append((train(m, task, 3, 0.05, 16, seed=9), m.z.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


def test_training_improves_held_out_accuracy(sub, proj, task):
    m = model(sub, proj)
    before = task.accuracy(m)
    before_tokens = task.accuracy(m, per_token=True)
    losses = train(m, task, 200, 0.05, 32, seed=0)
    after = task.accuracy(m)
    # Measured with these arguments: exact answers 0.000 -> 0.379, answer bytes 0.075 -> 0.855.
    assert sum(losses[-20:]) / 20 < 0.5 * losses[0]
    assert after >= before + 0.15
    assert task.accuracy(m, per_token=True) >= before_tokens + 0.5


def last_logits(m, prompts) -> torch.Tensor:
    """Features for the anchor tests: the logits at every prompt's last byte."""
    return m(torch.stack(list(prompts)))[:, -1]


@pytest.fixture(scope="module")
def generic(task) -> list[torch.Tensor]:
    """Inputs of no task: random bytes, one per row."""
    g = torch.Generator().manual_seed(5)
    return list(torch.randint(0, 256, (48, 12), generator=g))


def test_the_anchor_is_zero_where_training_began_and_grows_as_it_moves(sub, proj, generic):
    z = torch.randn(1024, generator=torch.Generator().manual_seed(1))
    m = model(sub, proj, z)
    anchor = Anchor(m, generic, last_logits, 2.0, batch=8, seed=0)
    assert float(anchor.loss(m).detach()) == 0.0  # the reference is the model as given, not θ0
    with torch.no_grad():
        m.z.mul_(1.5)
    first, second = float(anchor.loss(m).detach()), float(anchor.loss(m).detach())
    assert first > 0 and second > 0 and first != second  # a new batch of inputs each call
    four, two = (Anchor(m, generic, last_logits, w, batch=48, seed=0) for w in (4.0, 2.0))
    assert float(four.loss(m).detach()) == pytest.approx(2 * float(two.loss(m).detach()))


def test_an_anchored_specialist_changes_less_where_it_is_anchored(sub, proj, task, generic):
    """Same steps, seed and data: the anchored run moves the generic inputs' logits less (and
    still learns its task); its losses are the task's alone."""
    drift = {}
    for weight in (0.0, 10.0):
        m = model(sub, proj)
        reference = Anchor(m, generic, last_logits, 1.0, batch=48)
        anchor = Anchor(m, generic, last_logits, weight, batch=16) if weight else None
        losses = train(m, task, 40, 0.05, 16, seed=0, anchor=anchor)
        drift[weight] = float(reference.loss(m).detach())
        assert sum(losses[-5:]) / 5 < losses[0]
    assert drift[10.0] < 0.5 * drift[0.0]


def test_weight_decay_pulls_z_towards_zero(sub, proj, task):
    norms = {}
    for wd in (0.0, 5.0):
        m = model(sub, proj)
        train(m, task, 30, 0.05, 16, seed=0, weight_decay=wd)
        norms[wd] = float(m.z.detach().norm())
    assert norms[5.0] < 0.9 * norms[0.0]


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_bad_anchor_and_decay_are_refused(sub, proj, task, generic, weight):
    m = model(sub, proj)
    with pytest.raises(SchemaError, match="anchor weight"):
        Anchor(m, generic, last_logits, weight)
    with pytest.raises(SchemaError, match="weight decay"):
        train(m, task, 1, 0.05, 4, seed=0, weight_decay=weight)
    with pytest.raises(SchemaError, match="needs inputs"):
        Anchor(m, [], last_logits, 1.0)


def test_commit_round_trip_reproduces_the_trained_model(sub, proj, task, tmp_path):
    with porcelain.init(tmp_path / "repo", dim=1024) as repo:
        assert repo.config.chart == CHART
        m = model(sub, proj, beta=(0.75, 0.5))
        train(m, task, 20, 0.05, 16, seed=1)
        trained = m.z.detach().clone()
        cid = commit_model_in_basin(repo, m, "cipher, briefly")

        # snap_ moved z onto the packet's float24 grid, by at most its rounding.
        assert m.z.tolist() == list(numeric.quantize(m.z.tolist()))
        assert ((m.z - trained).abs() <= trained.abs() * 2.0**-16).all()

        commit = repo.read_commit(cid)
        basin = repo.read_basin(commit.basin)
        assert list(basin.z) == m.z.tolist()
        assert basin.beta == (0.75, 0.5) and basin.labels == ("general",)
        assert basin.substrate.fingerprint == sub.fingerprint
        assert commit.metrics["captured"] == pytest.approx(1.0, abs=1e-4)
        assert commit.metrics["z_norm"] == pytest.approx(
            float(m.z.detach().double().norm()), rel=1e-12
        )

        gpt = sub.build()
        gpt.load_state_dict(checkout_state_dict(repo, "HEAD", "tiny"))
        inputs = task.encode(list(task.test[:32]))[0]
        with torch.no_grad():
            expected = m(inputs)
            assert (gpt(inputs) - expected).abs().max() <= 1e-5
            again = BasinModel.from_basin(sub, basin, projection=proj)
            assert torch.equal(again(inputs), expected)


def test_to_basin_carries_fisher_labels_and_substrate(sub, proj, task):
    m = model(sub, proj, torch.full((1024,), 0.1))
    fisher = fisher_diagonal(m, [task.batch(4, torch.Generator().manual_seed(0))])
    basin = to_basin(m, fisher=fisher, labels=("cipher",))
    assert basin.chart == CHART and basin.labels == ("cipher",)
    assert basin.fisher is not None and len(basin.fisher) == 1024
    assert int(torch.tensor(list(basin.fisher)).argmax()) == int(fisher.argmax())
    assert basin.substrate.name == "tiny"
    assert len(basin.encode()) <= 4096


def test_commit_refuses_a_model_of_another_chart(sub, proj, repo_dir):
    with Repository.open(repo_dir) as repo:  # d = 64
        head = repo.head_commit()
        with pytest.raises(SchemaError, match="chart"):
            commit_model_in_basin(repo, model(sub, proj), "wrong chart")
        assert repo.head_commit() == head
