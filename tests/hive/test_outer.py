"""The hive's outer optimisers (basinvcs.hive.outer): hand-computed steps, state that survives a
restart bit-identically, determinism, refusals."""

import json
import math

import numpy as np
import pytest

from basinvcs.errors import BasinError
from basinvcs.hive import outer
from basinvcs.hive.outer import OuterError, create, restore


def test_every_optimiser_is_registered_with_its_defaults():
    assert outer.OPTIMIZERS == ("average", "nesterov", "fedadam")
    assert create("average").hyper == {"lr": 1.0}
    assert create("nesterov").hyper == {"lr": 0.7, "momentum": 0.9}  # DiLoCo's
    assert create("fedadam").hyper == {"lr": 0.1, "beta1": 0.9, "beta2": 0.99, "eps": 1e-3}
    assert create().name == outer.DEFAULT_OPTIMIZER == "average"
    with pytest.raises(OuterError, match="unknown outer optimiser 'sgd'"):
        create("sgd")


def test_average_adds_lr_times_delta():
    opt = create("average")
    assert opt.step([1.0, 2.0], [0.5, -1.0]) == [1.5, 1.0]
    assert create("average", lr=0.5).step([1.0, 2.0], [0.5, -1.0]) == [1.25, 1.5]
    assert opt.to_dict() == {
        "optimizer": "average",
        "hyper": {"lr": 1.0},
        "steps": 1,
        "buffers": {},
    }


def test_nesterov_matches_hand_computed_steps():
    """lr 0.7, μ 0.9, g = −Δ; m ← μ m + g; z ← z − lr (g + μ m). By hand:
    coordinate 0, Δ = 1, 1, 0: m = −1, −1.9, −1.71; g + μ m = −1.9, −2.71, −1.539;
    z = 0 + 1.33 = 1.33, + 1.897 = 3.227, + 1.0773 = 4.3043.
    coordinate 1, Δ = −2, 0, 1: m = 2, 1.8, 0.62; g + μ m = 3.8, 1.62, −0.442;
    z = 1 − 2.66 = −1.66, − 1.134 = −2.794, + 0.3094 = −2.4846 (still moving at Δ = 0: momentum)."""
    opt = create("nesterov")
    z = [0.0, 1.0]
    expected = [[1.33, -1.66], [3.227, -2.794], [4.3043, -2.4846]]
    for delta, want in zip([[1.0, -2.0], [1.0, 0.0], [0.0, 1.0]], expected, strict=True):
        z = opt.step(z, delta)
        assert z == pytest.approx(want, rel=1e-13)
    assert opt.steps == 3
    assert opt.to_dict()["buffers"]["momentum"] == pytest.approx([-1.71, 0.62], rel=1e-13)


def test_nesterov_first_step_is_lr_one_plus_momentum_times_delta():
    opt = create("nesterov", lr=0.5, momentum=0.5)
    assert opt.step([0.0] * 3, [4.0, -2.0, 0.0]) == [3.0, -1.5, 0.0]


def test_fedadam_matches_hand_computed_steps():
    """lr 0.1, β1 0.9, β2 0.99, ε 1e-3, m and v from 0, no bias correction (Reddi et al. 2021,
    Algorithm 2); g = −Δ; m ← β1 m + (1 − β1) g; v ← β2 v + (1 − β2) g²; z ← z − lr m / (√v + ε).
    Coordinate 0, Δ = 1, 1, −2: g = −1, −1, 2; m = −0.1, −0.19, 0.029; v = 0.01, 0.0199, 0.059701.
    Coordinate 1, Δ = 0, 0, 0: nothing moves."""
    opt = create("fedadam")
    m_v = [(-0.1, 0.01), (-0.19, 0.0199), (0.029, 0.059701)]
    z, want = [0.0, 5.0], 0.0
    for delta, (m, v) in zip([[1.0, 0.0], [1.0, 0.0], [-2.0, 0.0]], m_v, strict=True):
        z = opt.step(z, delta)
        want -= 0.1 * m / (math.sqrt(v) + 1e-3)
        assert z[0] == pytest.approx(want, rel=1e-12)
        assert z[1] == 5.0
    assert z[0] == pytest.approx(0.0990099 + 0.1337394 - 0.0118204, abs=1e-6)
    buffers = opt.to_dict()["buffers"]
    assert buffers["m"] == pytest.approx([0.029, 0.0], abs=1e-15)
    assert buffers["v"] == pytest.approx([0.059701, 0.0], rel=1e-12)


def test_fedadam_steps_about_lr_per_coordinate_whatever_the_size_of_delta():
    small = create("fedadam").step([0.0], [0.5])[0]
    large = create("fedadam").step([0.0], [500.0])[0]
    assert small == pytest.approx(0.1, rel=0.02) and large == pytest.approx(0.1, rel=1e-4)


@pytest.mark.parametrize("name", outer.OPTIMIZERS)
def test_state_survives_a_restart_bit_identically(name):
    rng = np.random.default_rng(0)
    deltas = rng.standard_normal((5, 64)).tolist()
    z0 = rng.standard_normal(64).tolist()
    straight = create(name)
    z_straight = z0
    for delta in deltas:
        z_straight = straight.step(z_straight, delta)
    resumed, z = create(name), z0
    for k, delta in enumerate(deltas):
        if k in (0, 2, 3):  # persist and reload, through JSON text, at several points
            text = json.dumps(resumed.to_dict(), allow_nan=False)
            resumed = restore(json.loads(text))
        z = resumed.step(z, delta)
    assert z == z_straight  # bit-identical
    assert resumed.to_dict() == straight.to_dict()
    assert restore(straight.to_dict()).to_dict() == straight.to_dict()


@pytest.mark.parametrize("name", outer.OPTIMIZERS)
def test_steps_are_deterministic(name):
    rng = np.random.default_rng(1)
    deltas = rng.standard_normal((4, 128)).tolist()
    runs = []
    for _ in range(2):
        opt, z = create(name), [0.0] * 128
        for delta in deltas:
            z = opt.step(z, delta)
        runs.append((z, opt.to_dict()))
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", outer.OPTIMIZERS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_refused_and_changes_nothing(name, bad):
    opt = create(name)
    opt.step([0.0, 0.0], [1.0, 1.0])
    before = opt.to_dict()
    with pytest.raises(OuterError, match="Δ has .* at coordinate 1"):
        opt.step([0.0, 0.0], [1.0, bad])
    with pytest.raises(OuterError, match="z has .* at coordinate 0"):
        opt.step([bad, 0.0], [1.0, 1.0])
    assert opt.to_dict() == before


def test_a_step_beyond_the_float_range_is_refused_and_changes_nothing():
    opt = create("nesterov")
    opt.step([0.0], [1.0])
    before = opt.to_dict()
    with pytest.raises(OuterError, match=r"outer step refused: z\[0\] would be inf"):
        opt.step([1.7e308], [1.7e308])
    assert opt.to_dict() == before


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: create("average", lr=0), "lr 0.0 must be > 0"),
        (lambda: create("average", lr=math.nan), "lr nan must be finite"),
        (lambda: create("average", lr=True), "not a number"),
        (lambda: create("average", momentum=0.9), "no hyperparameter 'momentum'"),
        (lambda: create("nesterov", momentum=1.0), "momentum 1.0 must be"),
        (lambda: create("fedadam", beta2=-0.1), "beta2"),
        (lambda: create("fedadam", eps=0), "eps 0.0 must be > 0"),
        (lambda: create("average").step([1.0, 2.0], [1.0]), "z has 2 coordinates, Δ 1"),
        (lambda: create("average").step([], []), "d >= 1"),
        (lambda: create("average").step("ab", "cd"), "must be a vector"),
        (lambda: create("average").step([[1.0]], [[1.0]]), "vector of d >= 1"),
    ],
)
def test_bad_hyperparameters_and_vectors_are_refused_in_one_line(call, message):
    with pytest.raises(OuterError, match=message) as info:
        call()
    assert isinstance(info.value, BasinError) and "\n" not in str(info.value)


def test_the_state_is_for_one_dimension():
    opt = create("nesterov")
    opt.step([0.0, 0.0], [1.0, 1.0])
    with pytest.raises(OuterError, match="state is for 2 coordinates, z has 3"):
        opt.step([0.0] * 3, [1.0] * 3)


def good_state():
    opt = create("fedadam")
    opt.step([0.0, 0.0], [1.0, -1.0])
    return opt.to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("steps"), "must be a dict of"),
        (lambda s: s.update(extra=1), "must be a dict of"),
        (lambda s: s.update(optimizer="sgd"), "unknown outer optimiser"),
        (lambda s: s.update(optimizer=3), "not a string"),
        (lambda s: s["hyper"].pop("eps"), "must name exactly"),
        (lambda s: s["hyper"].update(eps=-1.0), "eps -1.0 must be > 0"),
        (lambda s: s.update(steps=-1), "steps -1"),
        (lambda s: s.update(steps=1.5), "steps 1.5"),
        (lambda s: s.update(steps=0), r"needs buffers \[\]"),
        (lambda s: s["buffers"].pop("v"), r"needs buffers \['m', 'v'\]"),
        (lambda s: s["buffers"].update(v=[1.0]), "different lengths"),
        (lambda s: s["buffers"].update(v=[1.0, math.nan]), "buffer v has nan"),
        (lambda s: s["buffers"].update(v="ab"), "buffer v must be a vector"),
        (lambda s: s.update(buffers=[]), "buffers must be a dict"),
    ],
)
def test_a_broken_state_is_refused(change, message):
    state = good_state()
    change(state)
    with pytest.raises(OuterError, match=message):
        restore(state)


def test_restore_refuses_what_is_not_a_dict():
    with pytest.raises(OuterError, match="must be a dict"):
        restore([1, 2])
