"""Few-seed statistics (clicker.experiment.stats) against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clicker.experiment.stats import (
    auc,
    interpolate_curve,
    iqm,
    pooled_iqm,
    probability_of_improvement,
    stratified_bootstrap_ci,
    tokens_to_target,
)


def test_iqm_by_hand():
    # n = 8: int(0.25 * 8) = 2 dropped from each end -> mean(3, 4, 5, 6)
    assert iqm([100, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    # the outlier does not move it, unlike the mean
    assert iqm([100, 1, 7, 2, 6, 3, 5, -1000]) == pytest.approx(4.0)  # mean(2, 3, 5, 6)


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        ([10.0, 1.0, 3.0, 2.0, 1000.0], 5.0),  # n=5: int(1.25)=1 cut -> mean(2, 3, 10)
        ([4.0, 9.0, 1.0], 14 / 3),  # n=3: int(0.75)=0 cut -> plain mean
        ([7.0, 1.0, 2.0, 3.0, 4.0, 5.0, 60.0], 4.2),  # n=7: int(1.75)=1 -> mean(2,3,4,5,7)
        ([5.0, -2.0, 8.0, 0.0, 1.0, 3.0, 9.0, 4.0, 7.0, 6.0, 2.0], 4.0),  # n=11: cut 2 -> 1..7
    ],
)
def test_iqm_trims_whole_values_like_scipy(x, expected):
    assert iqm(x) == pytest.approx(expected)
    try:
        from scipy.stats import trim_mean
    except ImportError:
        return
    assert iqm(x) == pytest.approx(trim_mean(x, 0.25))


def test_iqm_axis_and_infinity():
    a = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])  # (2, 4)
    np.testing.assert_allclose(iqm(a, axis=-1), [2.5, 25.0])
    assert iqm(a) == pytest.approx(iqm(a.reshape(-1)))  # axis None pools all values
    assert iqm([1.0, 2.0, 3.0, 4.0, math.inf]) == pytest.approx(3.0)  # inf trimmed at n=5
    assert iqm([1.0, 2.0, math.inf]) == math.inf  # n=3 trims nothing
    with pytest.raises(ValueError):
        iqm([1.0, float("nan")])


def test_bootstrap_ci_covers_true_mean_at_about_the_stated_rate():
    rng = np.random.default_rng(123)
    trials, n, true_mean = 200, 20, 1.5
    covered = 0
    for trial in range(trials):
        x = rng.normal(true_mean, 2.0, size=n)
        ci = stratified_bootstrap_ci({"t": x}, lambda d: d["t"].mean(-1), reps=500, seed=trial)
        assert ci.low <= ci.point <= ci.high
        covered += ci.low <= true_mean <= ci.high
    # percentile bootstrap of a mean of 20 normals: nominal 0.95, a little under in practice
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_resamples_within_each_task():
    # every replicate keeps 3 runs of each task, so the pooled mean never moves: a pooled
    # (unstratified) resample would sometimes draw four 0s and give a CI wider than a point
    scores = {"a": [0.0, 0.0, 0.0], "b": [1.0, 1.0, 1.0]}
    ci = stratified_bootstrap_ci(scores, lambda d: np.concatenate([d["a"], d["b"]], -1).mean(-1))
    assert (ci.point, ci.low, ci.high) == (0.5, 0.5, 0.5)


def test_bootstrap_vectorised_matches_loop_and_carries_leading_axes():
    scores = {"a": [0.1, 0.5, 0.9, 0.3], "b": [2.0, 4.0, 3.0]}
    fast = stratified_bootstrap_ci(scores, pooled_iqm, reps=300, seed=7)
    slow = stratified_bootstrap_ci(scores, pooled_iqm, reps=300, seed=7, vectorised=False)
    assert fast == pytest.approx(slow)
    assert fast.low < fast.point < fast.high
    curves = {"c": np.array([[0.0, 0.0, 0.0], [0.2, 0.4, 0.9]])}  # (G=2 points, 3 seeds)
    band = stratified_bootstrap_ci(curves, lambda d: d["c"].mean(-1), reps=200)
    np.testing.assert_allclose(band.point, [0.0, 0.5])
    np.testing.assert_allclose(band.low[0], 0.0)
    assert 0.2 <= band.low[1] < 0.5 < band.high[1] <= 0.9
    with pytest.raises(ValueError, match="reps, ..."):
        stratified_bootstrap_ci(scores, lambda d: 1.0, reps=10)


def test_bootstrap_with_infinite_values_reads_as_unbounded_not_nan():
    ci = stratified_bootstrap_ci({"t": [1.0, 2.0, math.inf]}, pooled_iqm, reps=200)
    assert ci.point == math.inf and ci.high == math.inf and ci.low == pytest.approx(1.0)


def test_probability_of_improvement_by_hand():
    # pairs: (1,2)x2 worse, (2,2)x2 ties, (3,2)x2 better -> (2 + 0.5 * 2) / 6
    assert probability_of_improvement([1, 2, 3], [2, 2]) == pytest.approx(0.5)
    # (3,1) >, (3,3) =, (4,1) >, (4,3) > -> 3.5 / 4
    assert probability_of_improvement([3, 4], [1, 3]) == pytest.approx(0.875)
    assert probability_of_improvement([1, 3], [3, 4]) == pytest.approx(0.125)  # complement
    assert probability_of_improvement([5, 5], [5, 5]) == 0.5
    by_task = probability_of_improvement({"a": [3, 4], "b": [0]}, {"a": [1, 3], "b": [1]})
    assert by_task == pytest.approx((0.875 + 0.0) / 2)
    with pytest.raises(ValueError):
        probability_of_improvement({"a": [1]}, {"b": [1]})


def test_tokens_to_target_interpolates_first_crossing():
    tokens, success = [0, 100, 200, 300], [0.1, 0.2, 0.6, 0.9]
    assert tokens_to_target(tokens, success, 0.5) == pytest.approx(175.0)  # 100 + 0.3/0.4*100
    assert tokens_to_target(tokens, success, 0.6) == pytest.approx(200.0)  # hit exactly
    assert tokens_to_target(tokens, success, 0.05) == 0.0  # met by the initial eval
    # first crossing counts, a later dip does not undo it
    assert tokens_to_target([0, 100, 200, 300], [0.1, 0.6, 0.3, 0.9], 0.5) == pytest.approx(80.0)


def test_tokens_to_target_never_reached_is_inf():
    assert tokens_to_target([0, 100, 200], [0.1, 0.2, 0.3], 0.5) == math.inf
    with pytest.raises(ValueError):
        tokens_to_target([0, 200, 100], [0.1, 0.2, 0.3], 0.5)


def test_auc_by_hand():
    tokens, success = [0, 100, 200], [0.0, 1.0, 1.0]
    assert auc(tokens, success, 200) == pytest.approx((50 + 100) / 200)
    # last eval carried forward to the budget
    assert auc(tokens, success, 300) == pytest.approx((50 + 100 + 100) / 300)
    # cut at the budget: success 0.5 at 50 tokens -> triangle 12.5 over 50
    assert auc(tokens, success, 50) == pytest.approx(0.25)
    # first eval after 0: constant before it
    assert auc([100, 200], [0.4, 0.8], 200) == pytest.approx((40 + 60) / 200)
    assert auc([0, 10], [1.0, 1.0], 10) == pytest.approx(1.0)


def test_interpolate_curve_on_a_grid():
    np.testing.assert_allclose(
        interpolate_curve([0, 100, 200], [0.0, 1.0, 0.5], [0, 50, 150, 300]),
        [0.0, 0.5, 0.75, 0.5],
    )
