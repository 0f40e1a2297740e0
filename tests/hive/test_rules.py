"""The hive's aggregation rules (basinvcs.hive.rules): what each computes, how far attackers move
it, determinism, and refusals."""

import math
import statistics

import numpy as np
import pytest

from basinvcs.errors import BasinError
from basinvcs.hive import outliers, rules
from basinvcs.hive.rules import AggregationError, aggregate
from basinvcs.metrics import common_scale

N, F, D = 10, 3, 1024  # instances, attackers, coordinates
SEEDS = range(5)
ROBUST = [("median", {}), ("trimmed_mean", {"trim": 0.3}), ("centered_clip", {})]


def honest_round(seed: int, n: int = N, d: int = D) -> np.ndarray:
    """A common direction (norm 1) plus per-instance noise (norm about 1)."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    return direction + rng.standard_normal((n, d)) / math.sqrt(d)


def cosine(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def rel_error(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def attacked(seed: int, attack) -> tuple[np.ndarray, np.ndarray]:
    """The round with its first F updates replaced by attack(their own, the honest ones), and the
    honest mean (the mean of the other N − F)."""
    x = honest_round(seed)
    honest = x[F:]
    return np.vstack([attack(x[:F], honest), honest]), honest.mean(axis=0)


def measure(attack, rule, **options) -> tuple[float, float]:
    """Median over SEEDS of (cosine to the honest mean, relative error)."""
    got = []
    for seed in SEEDS:
        rows, target = attacked(seed, attack)
        agg = aggregate(rule, rows, **options)
        got.append((cosine(agg, target), rel_error(agg, target)))
    return statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)


# -- what each rule computes -----------------------------------------------------------------------


def test_every_rule_is_registered():
    assert set(rules.RULES) == {
        "mean",
        "sender_mean",
        "trimmed_mean",
        "median",
        "centered_clip",
        "fisher_mean",
    }
    with pytest.raises(AggregationError, match="unknown aggregation rule 'krum'"):
        aggregate("krum", [[1.0]])


def test_sender_mean_averages_each_coordinate_over_the_updates_that_change_it():
    x = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 4.0, 0.0], [0.0, 0.0, 6.0, 0.0]])
    # disjoint coordinates add up, shared ones are averaged, untouched ones stay 0
    assert aggregate("sender_mean", x) == pytest.approx([1.0, 3.0, 4.0, 0.0], abs=1e-15)
    assert aggregate("sender_mean", x, weights=[1, 1, 2]) == pytest.approx([1, 3, 4.5, 0])
    dense = np.random.default_rng(3).standard_normal((5, 9))  # no zeros: the plain mean
    np.testing.assert_allclose(
        aggregate("sender_mean", dense, clip=100), dense.mean(axis=0), rtol=1e-13
    )


def test_sender_mean_clips_each_update_to_the_rounds_median_norm():
    x = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0], [0.0, 0.0, 5.0, 0.0]])
    x = np.vstack([x, [[0.0, 0.0, 0.0, 1000.0]]])  # a lone sender far larger than the rest
    # median norm 4.5: the large one is cut to 2 × 4.5, the others are left alone
    assert aggregate("sender_mean", x) == pytest.approx([3.0, 4.0, 5.0, 9.0])
    assert aggregate("sender_mean", x, clip=1) == pytest.approx([3.0, 4.0, 4.5, 4.5])
    huge = aggregate("sender_mean", x * 1e300)  # no square overflows
    assert huge == pytest.approx([3e300, 4e300, 5e300, 9e300])
    for bad in (0, -1, math.inf, math.nan, "2", True):
        with pytest.raises(AggregationError, match="clip factor"):
            aggregate("sender_mean", x, clip=bad)


def test_sender_mean_power_goes_from_the_mean_to_the_sum_of_the_senders():
    x = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 3.0, 4.0, 0.0], [0.0, 0.0, 6.0, 0.0]])
    assert aggregate("sender_mean", x, power=1) == aggregate("sender_mean", x)
    assert aggregate("sender_mean", x, power=0) == pytest.approx([1.0, 3.0, 12.0, 0.0])
    # the third coordinate has three senders: their sum over √3
    assert aggregate("sender_mean", x, power=0.5) == pytest.approx([1, 3, 12 / math.sqrt(3), 0])
    # weights in units of their mean (0.75, 0.75, 1.5): Σ w x over (Σ w)^power
    heavy = aggregate("sender_mean", x, weights=[1, 1, 2], power=0.5)
    assert heavy == pytest.approx([0.75**0.5, 2.25 / 0.75**0.5, 13.5 / 3**0.5, 0])
    assert aggregate("sender_mean", x, weights=[10, 10, 20], power=0.5) == pytest.approx(heavy)
    for bad in (-0.1, 1.5, math.nan, "1", None):
        with pytest.raises(AggregationError, match="power"):
            aggregate("sender_mean", x, power=bad)


def test_mean_is_the_numpy_mean_and_weights_count():
    x = np.random.default_rng(1).standard_normal((7, 33))
    np.testing.assert_allclose(aggregate("mean", x.tolist()), x.mean(axis=0), rtol=1e-13, atol=0)
    w = [1, 2, 3, 4, 5, 6, 700]
    np.testing.assert_allclose(
        aggregate("mean", x, weights=w), np.average(x, axis=0, weights=w), rtol=1e-12, atol=1e-15
    )
    # only the weights' ratios count
    assert aggregate("mean", x, weights=w) == aggregate("mean", x, weights=[v * 8 for v in w])


def test_median_is_the_coordinatewise_median_by_count():
    x = np.random.default_rng(2).standard_normal((9, 17))
    assert aggregate("median", x) == np.median(x, axis=0).tolist()
    even = x[:8]
    assert aggregate("median", even) == np.median(even, axis=0).tolist()
    # a weighted median would hand each coordinate to whoever claims the most samples
    assert aggregate("median", x, weights=[1000] + [1] * 8) == aggregate("median", x)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 9, 10, 101])
def test_column_median_is_numpys_for_sparse_and_dense_columns(n):
    """Sorting only the columns whose middle is not zero gives np.median's values: columns
    mostly zero, mostly negative or positive, ties at the middle, and zeros split across it."""
    rng = np.random.default_rng(n)
    d = 64
    x = rng.standard_normal((n, d)).round(1)  # ties
    x[rng.random((n, d)) < 0.8] = 0.0  # top-k rows: most of each column zero
    x[:, 0] = 0.0
    x[:, 1] = -np.abs(x[:, 1]) - 1  # all negative
    x[:, 2] = np.abs(x[:, 2]) + 1  # all positive
    x[: n // 2, 3], x[n // 2 :, 3] = -1.0, 0.0  # the middle on the edge of the zeros
    x[: (n + 1) // 2, 4], x[(n + 1) // 2 :, 4] = 0.0, 2.0
    assert np.array_equal(rules.column_median(x), np.median(x, axis=0))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix's
def test_array_subclasses_are_read_as_plain_arrays():
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 7.0]]
    for rule in rules.RULES:
        plain = aggregate(rule, np.array(rows), weights=[1.0, 1.0, 2.0])
        assert aggregate(rule, np.matrix(rows), weights=[1.0, 1.0, 2.0]) == plain
    assert outliers.check(np.matrix(rows)).scores == outliers.check(np.array(rows)).scores


def test_equal_keys_are_ties_broken_by_content_even_when_they_cannot_be_ordered():
    x = [[1.0, 2.0], [2.0, 1.0]]
    for keys in ([None, None], [{"a": 1}, {"a": 1}]):
        assert aggregate("mean", x, keys=keys) == aggregate("mean", x[::-1], keys=keys)
    with pytest.raises(AggregationError, match="cannot be ordered"):
        aggregate("mean", x, keys=[None, 1])


def test_rules_do_not_write_into_their_input():
    x = np.random.default_rng(4).standard_normal((7, 12))
    x[:, 5] = 1e300  # sender_mean's clip and the rest scale what they combine
    before = x.copy()
    for rule in rules.RULES:
        aggregate(rule, x, weights=list(range(1, 8)), keys=list(range(7)))
    assert np.array_equal(x, before)


@pytest.mark.parametrize("trim, k", [(0.0, 0), (0.1, 1), (0.2, 2), (0.29, 2), (0.3, 3), (0.49, 4)])
def test_trimmed_mean_drops_floor_beta_n_values_on_each_side(trim, k):
    x = np.random.default_rng(3).standard_normal((10, 21))
    kept = np.sort(x, axis=0)[k : 10 - k]
    np.testing.assert_allclose(aggregate("trimmed_mean", x, trim=trim), kept.mean(axis=0), 1e-13)


def test_trimmed_mean_weighs_what_it_keeps():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    # β = 0.2 of 5 drops one per side: 0 and 100 go, 1, 2, 3 are averaged with weights 1, 1, 2
    assert aggregate("trimmed_mean", x, weights=[5, 1, 1, 2, 9]) == [(1 + 2 + 2 * 3) / 4]


def test_fisher_mean_weighs_each_update_by_its_information_there():
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 4.0, 5.0]])
    f0, f1 = [3.0, 1.0, 0.0], [1.0, 1.0, 0.0]
    got = aggregate("fisher_mean", x, weights=[1.0, 2.0], fishers=[f0, f1])
    c0, c1 = common_scale(f0, 3), common_scale(f1, 3)
    p = [1 / 3, 2 / 3]
    for i in range(2):
        mass = p[0] * c0[i] + p[1] * c1[i]
        assert got[i] == pytest.approx((p[0] * c0[i] * x[0, i] + p[1] * c1[i] * x[1, i]) / mass)
    # no update claims information at coordinate 2: the weighted mean there
    assert got[2] == pytest.approx(p[0] * 3 + p[1] * 5)


def test_fisher_mean_without_fishers_or_with_identity_is_the_weighted_mean():
    x = np.random.default_rng(4).standard_normal((5, 12))
    w = [1, 2, 3, 4, 5]
    plain = aggregate("mean", x, weights=w)
    assert aggregate("fisher_mean", x, weights=w) == plain
    np.testing.assert_allclose(
        aggregate("fisher_mean", x, weights=w, fishers=[None, [1.0] * 12, None, None, None]),
        plain,
        rtol=1e-13,
    )


def test_fisher_scale_alone_carries_no_weight():
    """The common scale: a diagonal 1e6 times larger is the same diagonal."""
    x = np.random.default_rng(5).standard_normal((3, 8))
    f = np.abs(np.random.default_rng(6).standard_normal((3, 8)))
    scaled = [f[0] * 1e6, f[1], f[2] * 1e-6]
    np.testing.assert_allclose(
        aggregate("fisher_mean", x, fishers=list(f)),
        aggregate("fisher_mean", x, fishers=scaled),
        rtol=1e-12,
    )


# -- robustness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["median", "trimmed_mean"])
def test_median_and_trimmed_mean_stay_inside_the_honest_range(rule):
    """With f attackers, f <= ⌊β n⌋ (trimmed mean) or f < n/2 (median), every coordinate of the
    aggregate lies between the honest updates' smallest and largest values there, whatever the
    attackers send."""
    rng = np.random.default_rng(7)
    honest = rng.standard_normal((7, 64))
    options = {"trim": 0.3} if rule == "trimmed_mean" else {}
    for scale in (1e-3, 1.0, 1e6, 1e300):
        bad = scale * rng.standard_normal((3, 64))
        agg = np.array(aggregate(rule, np.vstack([bad, honest]), **options))
        assert (agg >= honest.min(axis=0)).all() and (agg <= honest.max(axis=0)).all()


def test_robust_rules_resist_three_of_ten_sign_flipped_x100_updates():
    def flip100(own, honest):
        return -100 * own

    mean_cos, mean_err = measure(flip100, "mean")
    assert mean_cos < -0.7 and mean_err > 25  # measured -0.81, 33
    for rule, options in ROBUST:
        cos, err = measure(flip100, rule, **options)
        # measured: median 0.90 / 0.44, trimmed 0.3 0.90 / 0.45, centered clip 0.96 / 0.35; with no
        # attack at all the median is 0.965 / 0.27 from the honest mean of 10 (its noise)
        assert cos > 0.85 and err < 0.5, (rule, cos, err)
    # trimming 2 per side of 10 leaves one of 3 attackers in: β must cover the attackers
    cos, err = measure(flip100, "trimmed_mean", trim=0.2)
    assert cos < 0 and err > 5


def test_centered_clip_bounds_each_updates_influence():
    """With the same start v0 and radius τ, an update changes the result of L iterations by at
    most 2 L p τ (p its weight share), whatever it is: each iteration is 1-Lipschitz in v and the
    update's own clipped term moves by at most 2 p τ. And the result stays within L τ of v0."""
    honest = honest_round(8, n=9, d=256)
    v0 = np.median(honest, axis=0).tolist()
    tau, iterations = 0.5, 3
    options = {"tau": tau, "iterations": iterations, "center": v0}
    reference = np.array(aggregate("centered_clip", np.vstack([honest, v0]), **options))
    rng = np.random.default_rng(9)
    for magnitude in (1.0, 1e3, 1e8, 1e15):
        attacker = magnitude * rng.standard_normal(256)
        rows = np.vstack([honest, attacker])
        clipped = np.array(aggregate("centered_clip", rows, **options))
        bound = 2 * iterations * tau / 10
        assert np.linalg.norm(clipped - reference) <= bound * (1 + 1e-9)
        assert np.linalg.norm(clipped - np.array(v0)) <= iterations * tau * (1 + 1e-9)
        mean_moved = np.linalg.norm(np.array(aggregate("mean", rows)) - honest.mean(axis=0))
        if magnitude >= 1e3:
            assert mean_moved > 100 * bound  # the mean's influence grows with the update


def test_centered_clip_starts_from_the_previous_aggregate_when_given():
    x = honest_round(10, n=5, d=16)
    far = (100 * np.ones(16)).tolist()
    # a radius 0 keeps the start, whatever it is
    assert aggregate("centered_clip", x, tau=0.0, center=far) == far
    assert aggregate("centered_clip", x, tau=0.0) == np.median(x, axis=0).tolist()


def test_noise_attack_breaks_the_mean_not_the_robust_rules():
    def noise(own, honest):
        spread = honest.std(axis=0).mean()
        return 10 * spread * np.random.default_rng(11).standard_normal(own.shape)

    mean_cos, _ = measure(noise, "mean")
    assert mean_cos < 0.6  # measured 0.44
    for rule, options in ROBUST:
        assert measure(noise, rule, **options)[0] > 0.9


def alie(own, honest):
    """A little is enough (Baruch et al. 2019): every attacker sends μ − z_max σ sign(μ),
    z_max = Φ⁻¹((n − s) / n), s = ⌊n/2 + 1⌋ − f: inside the honest spread, every coordinate pulled
    against the honest mean."""
    s = N // 2 + 1 - F
    z_max = statistics.NormalDist().inv_cdf((N - s) / N)
    mu, sigma = honest.mean(axis=0), honest.std(axis=0)
    return np.tile(mu - z_max * sigma * np.sign(mu), (len(own), 1))


def test_a_little_is_enough_hides_inside_the_honest_spread():
    """ALIE is built to pass robust rules: it sits inside the spread, so clipping never touches it
    (centered clipping is then exactly the mean) and the median, which it is aimed at, takes the
    most damage. Measured: mean and centered clip 0.995, trimmed 0.3 0.964, median 0.942."""
    mean_cos, mean_err = measure(alie, "mean")
    clip_cos, clip_err = measure(alie, "centered_clip")
    assert mean_cos > 0.99 and clip_cos == pytest.approx(mean_cos, abs=1e-3)
    median_cos, _ = measure(alie, "median")
    assert 0.9 < median_cos < mean_cos - 0.03


def ipm(epsilon):
    """Inner product manipulation (Xie et al. 2020): every attacker sends −ε·(honest mean)."""

    def attack(own, honest):
        return np.tile(-epsilon * honest.mean(axis=0), (len(own), 1))

    return attack


def test_inner_product_manipulation_turns_the_mean_not_the_robust_rules():
    mean_cos, _ = measure(ipm(10.0), "mean")
    assert mean_cos < -0.99  # 7 − 3 · 10 < 0: the mean points backwards
    trimmed_cos, _ = measure(ipm(10.0), "trimmed_mean", trim=0.2)
    assert trimmed_cos < -0.9  # 2 trimmed per side, one attacker left in
    for rule, options in ROBUST:
        cos, _ = measure(ipm(10.0), rule, **options)
        assert cos > 0.8, (rule, cos)  # measured: median 0.84, trimmed 0.83, centered clip 1.000
    assert measure(ipm(10.0), "centered_clip")[0] > 0.99


def test_small_inner_product_manipulation_only_shrinks():
    """ε = 0.1 (Xie et al.'s setting against median-like rules): the mean and centered clipping
    keep the direction (cosine 1) at 0.67 of the length; the median loses a little direction."""
    for rule, options in [("mean", {}), ("centered_clip", {})]:
        cos, err = measure(ipm(0.1), rule, **options)
        assert cos > 0.999 and err == pytest.approx(0.33, abs=0.01)
    assert measure(ipm(0.1), "median")[0] > 0.9


# -- determinism -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", rules.RULES)
def test_same_updates_in_any_order_give_the_same_bits(rule):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((11, 40))
    x[3] = x[7]  # a duplicate, so that ties are ordered too
    w = rng.uniform(1, 100, 11).tolist()
    f = [np.abs(rng.standard_normal(40)).tolist() if k % 3 else None for k in range(11)]
    keys = [bytes([k % 4]) for k in range(11)]  # repeated keys: ties broken by content
    first = aggregate(rule, x.tolist(), weights=w, fishers=f, keys=keys)
    assert aggregate(rule, x.tolist(), weights=w, fishers=f, keys=keys) == first
    for seed in range(5):
        order = np.random.default_rng(seed).permutation(11)
        again = aggregate(
            rule,
            [x[i].tolist() for i in order],
            weights=[w[i] for i in order],
            fishers=[f[i] for i in order],
            keys=[keys[i] for i in order],
        )
        assert again == first  # bit-identical, not approximately equal
    no_keys = aggregate(rule, x, weights=w, fishers=f)
    order = np.random.default_rng(99).permutation(11)
    assert aggregate(rule, x[order], [w[i] for i in order], [f[i] for i in order]) == no_keys


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("rule", rules.RULES)
def test_non_finite_input_is_refused(rule, bad):
    x = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    x[1][1] = bad
    with pytest.raises(AggregationError, match="update 1 has .* at coordinate 1"):
        aggregate(rule, x)
    good = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    with pytest.raises(AggregationError, match="weight 2"):
        aggregate(rule, good, weights=[1, 1, bad])
    with pytest.raises(AggregationError, match="Fisher diagonal 0 has"):
        aggregate(rule, good, fishers=[[bad, 1.0], None, None])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: aggregate("mean", []), "no updates"),
        (lambda: aggregate("mean", [[1.0], [1.0, 2.0]]), "different lengths"),
        (lambda: aggregate("mean", [[]]), "d >= 1"),
        (lambda: aggregate("mean", [["a"]]), "not vectors of numbers"),
        (lambda: aggregate("mean", [[1.0]], weights=[0]), "finite and > 0"),
        (lambda: aggregate("mean", [[1.0]], weights=[-1]), "finite and > 0"),
        (lambda: aggregate("mean", [[1.0]], weights=[True]), "not a number"),
        (lambda: aggregate("mean", [[1.0]], weights=[1, 2]), "2 weights for 1 updates"),
        (lambda: aggregate("mean", [[1.0]], fishers=[[-1.0]]), "negative"),
        (lambda: aggregate("mean", [[1.0]], fishers=[[1.0, 2.0]]), "shape"),
        (lambda: aggregate("mean", [[1.0]], fishers=[None, None]), "2 Fisher diagonals"),
        (lambda: aggregate("mean", [[1.0]], keys=[b"a", b"b"]), "2 keys for 1 updates"),
        (lambda: aggregate("mean", [[1.0], [2.0]], keys=[b"a", "b"]), "cannot be ordered"),
        (lambda: aggregate("mean", [[1.0]], trim=0.1), "takes no option 'trim'"),
        (lambda: aggregate("trimmed_mean", [[1.0]], trim=0.5), "trim fraction"),
        (lambda: aggregate("trimmed_mean", [[1.0]], trim=math.nan), "trim fraction"),
        (lambda: aggregate("centered_clip", [[1.0]], tau=-1.0), "tau"),
        (lambda: aggregate("centered_clip", [[1.0]], tau=math.inf), "tau"),
        (lambda: aggregate("centered_clip", [[1.0]], iterations=0), "iterations"),
        (lambda: aggregate("centered_clip", [[1.0]], center=[1.0, 2.0]), "center has 2"),
        (lambda: aggregate("centered_clip", [[1.0]], center=[math.nan]), "center 0 has nan"),
    ],
)
def test_malformed_input_is_refused_in_one_line(call, message):
    with pytest.raises(AggregationError, match=message) as info:
        call()
    assert isinstance(info.value, BasinError) and "\n" not in str(info.value)


def test_a_result_beyond_the_float_range_is_refused_not_returned():
    # Fisher [1, 0] on the common scale is [2, 0]: 2 · (0.5 · 1.7e308) twice overflows
    x = [[1.7e308, 0.0], [1.7e308, 0.0]]
    with pytest.raises(AggregationError, match="coordinate 0 of Δ is inf"):
        aggregate("fisher_mean", x, fishers=[[1.0, 0.0], [1.0, 0.0]])
    # the mean of huge values stays finite: the weights are shares summing to 1
    assert aggregate("mean", [[1.7e308], [1.7e308]]) == [1.7e308]
