"""The intake outlier check (basinvcs.hive.outliers): Fisher distance to the round's median,
flagged beyond median + c · 1.4826 · MAD of the round's own scores."""

import functools
import math

import numpy as np
import pytest

from basinvcs.hive import outliers
from basinvcs.hive.rules import AggregationError
from basinvcs.metrics import distance, mean_fisher

# the statistics below are at Iglewicz & Hoaglin's c = 3.5, stricter than the default
check = functools.partial(outliers.check, c=3.5)


def honest_round(seed: int, n: int = 10, d: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    return direction + rng.standard_normal((n, d)) / math.sqrt(d)


def test_scores_are_fisher_distances_to_the_coordinatewise_median():
    x = honest_round(0, n=6, d=32)
    rng = np.random.default_rng(1)
    fishers = [np.abs(rng.standard_normal(32)).tolist() if k != 2 else None for k in range(6)]
    report = check(x.tolist(), fishers)
    median = np.median(x, axis=0).tolist()
    fbar = mean_fisher(fishers, 32)
    assert report.scores == [distance(row, median, fbar) for row in x.tolist()]
    plain = check(x.tolist())
    assert plain.scores == [distance(row, median, None) for row in x.tolist()]


@pytest.mark.parametrize("exponent", [-150, -40, 0, 40, 150])
def test_scores_are_the_same_bits_as_metrics_distance_at_any_magnitude(exponent):
    """The check scores a round with numpy; replicas compare heads by CID, so its scores must be
    metrics.distance's to the last bit, sparse rows and Fisher weights included."""
    rng = np.random.default_rng(exponent + 1000)
    x = rng.standard_normal((40, 300)) * 10.0**exponent * (rng.random((40, 300)) < 0.2)
    fishers = [np.abs(rng.standard_normal(300)).tolist() for _ in range(40)]
    median = np.median(x, axis=0).tolist()
    for f in (None, fishers):
        fbar = mean_fisher(f, 300) if f else None
        assert check(x, f).scores == [distance(row, median, fbar) for row in x.tolist()]


def test_honest_rounds_rarely_flag_anything():
    """Honest scores concentrate (d = 256: about ±3%), and a MAD from a few scores is noisy, so an
    honest update is flagged now and then: measured 0.8% of them at n = 10 (6–8% of rounds),
    3–4% at n = 5, 0.02–0.05% at n = 100; the normal-theory rate at 3.5 σ is 0.02%."""
    flagged = 0
    for seed in range(100):
        report = check(honest_round(seed))
        flagged += len(report.outliers)
        assert report.note is None
        assert report.threshold == pytest.approx(report.center + 3.5 * report.spread)
    assert flagged / 1000 < 0.02
    assert sum(len(check(honest_round(seed, n=100)).outliers) for seed in range(10)) <= 2


def test_scaled_and_sign_flipped_updates_are_flagged():
    for seed in range(10):
        x = honest_round(seed)
        x[4] *= 100
        assert check(x).outliers == [4]
        x = honest_round(seed)
        x[[1, 5, 8]] *= -100
        assert check(x).outliers == [1, 5, 8]
        x = honest_round(seed)
        x[7] *= 3  # a modest scaling is still far outside an honest round's spread
        assert check(x).outliers == [7]


def test_a_close_update_is_never_flagged():
    x = honest_round(3)
    median = np.median(x, axis=0)
    x[2] = median + (x[2] - median) / 20  # far closer to the median than anyone: unusual
    report = check(x)
    assert report.scores[2] == min(report.scores) and 2 not in report.outliers


def test_the_threshold_is_the_rounds_own_statistic_not_a_constant():
    x = honest_round(4)
    x[6] *= 10
    small, large = check(x * 1e-3), check(x * 1e3)
    assert small.outliers == large.outliers and 6 in large.outliers
    assert large.threshold == pytest.approx(small.threshold * 1e6)


def test_fisher_decides_which_differences_count():
    """The round's Fisher holds information on the first half of the coordinates only (1000 : 1):
    the same deviation is an outlier there and not in the uninformative half."""
    d = 64
    x = honest_round(5, d=d)
    fisher = [1000.0] * (d // 2) + [1.0] * (d // 2)
    bump = np.zeros(d)
    bump[: d // 2] = 0.5
    informative = x.copy()
    informative[3] += bump
    uninformative = x.copy()
    uninformative[3] += bump[::-1]
    fishers = [fisher] * 10
    assert check(informative, fishers).outliers == [3]
    assert check(uninformative, fishers).outliers == []
    assert check(uninformative).outliers == [3]  # without Fisher every coordinate counts alike


def test_one_update_cannot_talk_its_own_score_down():
    """F̄ is the round's mean: an update claiming no information where it differs is one voice."""
    x = honest_round(6, d=64)
    x[0, :32] += 0.5
    own = [0.0] * 32 + [1.0] * 32  # "my first half says nothing"
    fishers = [own] + [None] * 9
    assert check(x, fishers).outliers == [0]


def test_fewer_than_three_updates_flag_nothing_and_say_so():
    x = honest_round(7, n=3)
    x[0] *= 1000
    assert check(x).outliers == [0]
    for n in (1, 2):
        report = check(x[:n])
        assert report.outliers == [] and report.threshold is None
        assert "fewer than 3" in report.note
        assert len(report.scores) == n
    assert check([]).note == "no updates: nothing flagged"


def test_when_most_scores_agree_the_mean_deviation_takes_over():
    base = np.ones(16)
    x = np.array([base] * 6 + [base + 0.01, base - 0.01, base + 0.02, base + 5.0])
    report = check(x)
    # the MAD is 0 (six scores of 0): 1.2533 × the mean absolute deviation is the spread instead
    assert report.spread > 0 and report.outliers == [9]
    identical = check(np.array([base] * 5))
    assert identical.outliers == [] and identical.note == "every score is equal: nothing flagged"


def test_order_does_not_change_the_verdict():
    x = honest_round(8)
    x[[2, 9]] *= -50
    report = check(x)
    order = np.random.default_rng(0).permutation(10)
    again = check(x[order])
    assert again.scores == [report.scores[i] for i in order]
    assert sorted(order[again.outliers].tolist()) == report.outliers == [2, 9]


def test_c_sets_how_far_is_far():
    x = honest_round(9)
    x[1] *= 1.5
    strict = check(x, c=1.0)
    assert 1 in strict.outliers
    assert check(x, c=1e6).outliers == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_is_refused(bad):
    x = honest_round(10, n=4, d=8).tolist()
    x[2][3] = bad
    with pytest.raises(AggregationError, match="update 2 has"):
        check(x)
    good = honest_round(10, n=4, d=8).tolist()
    with pytest.raises(AggregationError, match="Fisher diagonal 1 has"):
        check(good, [None, [bad] * 8, None, None])
    with pytest.raises(AggregationError, match="outlier factor c"):
        check(good, c=bad)


def test_distances_beyond_the_float_range_are_refused():
    with pytest.raises(AggregationError, match="overflowed"):
        check([[1e308], [-1e308], [1e308]])


def test_the_default_factor_flags_fewer_honest_updates_and_every_scaled_one():
    at_default = sum(len(outliers.check(honest_round(seed)).outliers) for seed in range(100))
    assert at_default <= sum(len(check(honest_round(seed)).outliers) for seed in range(100))
    assert outliers.DEFAULT_C == 10.0
    for seed in range(10):
        x = honest_round(seed)
        x[4] *= 100
        assert outliers.check(x).outliers == [4]
