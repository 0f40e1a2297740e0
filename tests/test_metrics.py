import math
import sys

import pytest

from basinvcs.metrics import common_scale, cosine, distance, mean_fisher


def test_common_scale_has_mean_one_whatever_the_packet_claims():
    for top in (1e-320, 1e-30, 1.0, 1e30, sys.float_info.max):
        scaled = common_scale([top, top / 4, 0.0, top / 2], 4)
        assert scaled == pytest.approx([16 / 7, 4 / 7, 0.0, 8 / 7])
        assert math.fsum(scaled) / 4 == pytest.approx(1.0)


def test_common_scale_stands_in_identity_for_no_information():
    assert common_scale(None, 3) == [1.0, 1.0, 1.0]
    assert common_scale([0.0, 0.0], 2) == [1.0, 1.0]


def test_mean_fisher_counts_identity_for_packets_without_one():
    assert mean_fisher([None, None], 2) is None
    # [3, 5] on the common scale is [0.75, 1.25]; averaged with identity [1, 1]
    assert mean_fisher([[3.0, 5.0], None], 2) == pytest.approx([0.875, 1.125])
    assert mean_fisher([[3.0, 5.0], [30.0, 50.0]], 2) == pytest.approx([0.75, 1.25])


def test_distance_and_cosine_stay_finite_at_the_largest_fisher_and_coordinates():
    big = 3.4e38  # about the largest float32 a packet can hold
    fbar = mean_fisher([[sys.float_info.max] + [1e-300] * 1023, None], 1024)
    assert math.isfinite(distance([big] * 1024, [-big] * 1024, fbar))
    assert cosine([big] * 1024, [-big] * 1024, fbar) == -1.0


def test_distance_squares_by_multiplying_so_every_machine_agrees():
    """libm's pow(d, 2) is off by an ulp on some values; d·d is rounded correctly by IEEE."""
    values = [1.2345678901234567 * 10.0**e + k * 1e-3 for e in range(-30, 30) for k in range(9)]
    for v in values:
        assert distance([v, 0.0], [0.0, 0.0], [2.0, 5.0]) == math.sqrt(math.fsum([2.0 * (v * v)]))
        assert distance([0.0, v], [v, 0.0], None) == math.sqrt(math.fsum([v * v, v * v]))


def test_cosine_is_the_weighted_cosine():
    u, v = [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]
    assert cosine(u, v, None) == pytest.approx(1 / math.sqrt(2))
    # Σ F u v = 3, Σ F u² = 4, Σ F v² = 3: 3 / sqrt(12)
    assert cosine(u, v, [3.0, 1.0, 1.0]) == pytest.approx(3 / math.sqrt(12))
    assert cosine(u, [0.0] * 3, None) is None
    assert cosine(u, [-x for x in u], None) == -1.0
    assert distance([0.0, 1.0], [3.0, 1.0], [2.0, 5.0]) == pytest.approx(math.sqrt(18))
