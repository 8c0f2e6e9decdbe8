"""pass@k: the unbiased estimator and the Wilson interval, against hand-computed values,
and eval_model.py --samples on a model whose answers are scripted."""
import math

import pytest

from evaluation.pass_at_k import pass_at_k, pass_curve, wilson


def test_pass_at_k_by_hand():
    # 4 samples, 1 right: pass@1 = 1/4; pass@2 = 1 - C(3,2)/C(4,2) = 1 - 3/6; pass@4 = 1.
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(4, 1, 2) == 0.5
    assert pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(8, 0, 8) == 0.0 and pass_at_k(8, 8, 1) == 1.0
    # 8 samples, 2 right, k=3: 1 - C(6,3)/C(8,3) = 1 - 20/56
    assert math.isclose(pass_at_k(8, 2, 3), 1 - 20 / 56)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_the_curve_averages_over_problems_and_never_falls():
    curve = pass_curve([0, 1, 4], 4)  # one never right, one once, one always
    assert curve[1] == pytest.approx((0 + 0.25 + 1) / 3)
    assert curve[4] == pytest.approx((0 + 1 + 1) / 3)
    assert all(curve[k] <= curve[k + 1] for k in range(1, 4))


def test_wilson_interval_by_hand():
    # p = 0.5, n = 100, z = 1.96: centre 0.5, half-width 1.96 * sqrt(0.0025 + 0.96^2/4e4... ) / (1 + 0.0384)
    low, high = wilson(0.5, 100)
    z = 1.959964
    half = z * math.sqrt(0.25 / 100 + z * z / 40000) / (1 + z * z / 100)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert wilson(0.0, 50)[0] == 0.0 and 0.05 < wilson(0.0, 50)[1] < 0.08  # never a zero-width interval
    assert wilson(0.23, 400)[1] - wilson(0.23, 400)[0] < wilson(0.23, 100)[1] - wilson(0.23, 100)[0]
