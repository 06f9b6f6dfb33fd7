import numpy as np
import pytest

from agents.statistics import (
    bootstrap_ci,
    curve_band,
    first_crossing,
    iqm,
    iqm_is_mean,
    normalized_auc,
    performance_profile,
    performance_profile_band,
    probability_of_improvement,
    probability_of_improvement_ci,
    sample_efficiency_curve,
    stratified_bootstrap,
)


def test_iqm_of_known_arrays():
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == 4.5  # mean of 3, 4, 5, 6
    assert iqm([0, 0, 0, 100]) == 0.0  # the outlier is trimmed
    assert iqm([10, -5, 3, 2]) == pytest.approx(2.5)  # middle two: 2, 3


def test_bootstrap_ci_brackets_the_estimate_and_is_reproducible():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    low, high = bootstrap_ci(x, "iqm", seed=0)
    assert 1.0 <= low < iqm(x) < high <= 8.0
    assert (low, high) == bootstrap_ci(x, "iqm", seed=0)
    m_low, m_high = bootstrap_ci(x, "mean", seed=0)
    assert m_low < 4.5 < m_high
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    wide = bootstrap_ci([0.0, 10.0, 0.0, 10.0, 5.0])
    narrow = bootstrap_ci([4.9, 5.1, 5.0, 4.95, 5.05])
    assert wide[1] - wide[0] > 10 * (narrow[1] - narrow[0])


def test_auc_and_threshold_crossing():
    assert normalized_auc([0, 10], [0, 1]) == pytest.approx(0.5)
    assert normalized_auc([0, 5, 10], [1, 1, 1]) == pytest.approx(1.0)
    assert first_crossing([0, 100, 200], [0.0, 0.4, 0.9], 0.5) == 200
    assert first_crossing([0, 100], [0.0, 0.1], 0.5) is None


def test_step_zero_evaluation_never_reaches_the_threshold():
    # an untrained policy that scores 1.0 at step 0 has not learnt anything
    assert first_crossing([0, 100, 200], [1.0, 0.2, 0.9], 0.5) == 200
    assert first_crossing([0, 100], [1.0, 0.1], 0.5) is None
    # in seconds: the step-0 evaluation is skipped by its step, whatever its second
    assert first_crossing([0.0, 2.5, 5.0], [1.0, 0.9, 0.9], 0.5, steps=[0, 64, 128]) == 2.5


def test_iqm_equals_the_mean_below_four_runs():
    assert iqm([1, 2, 9]) == pytest.approx(4.0)  # 25% of 3 runs trims nothing
    assert iqm_is_mean(3) and not iqm_is_mean(4) and not iqm_is_mean(5)
    assert iqm([1, 2, 3, 100, 4]) == pytest.approx(3.0)  # 5 runs: one cut from each end
    assert iqm([[1, 10], [2, 20], [3, 30], [4, 40]]) == pytest.approx(
        iqm([1, 10, 2, 20, 3, 30, 4, 40])
    )


def test_bootstrap_interval_against_the_exact_distribution():
    # Two runs {0, 1}: resampled means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_ci([0.0, 1.0], "mean", confidence=0.95) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], "mean", confidence=0.4) == (0.5, 0.5)


def test_stratified_bootstrap_resamples_within_each_task():
    scores = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    boot = stratified_bootstrap(scores, n_resamples=200, seed=0)
    assert boot.shape == (200, 3, 2)
    assert set(np.unique(boot[:, :, 0])) <= {0.0, 1.0, 2.0}
    assert set(np.unique(boot[:, :, 1])) <= {10.0, 11.0, 12.0}


def test_probability_of_improvement_hand_values():
    assert probability_of_improvement([3, 4], [1, 2]) == 1.0
    assert probability_of_improvement([1, 2], [3, 4]) == 0.0
    assert probability_of_improvement([2], [2]) == 0.5  # a tie counts one half
    # pairs (1,2) (1,2) (3,2) (3,2): two wins of four
    assert probability_of_improvement([1, 3], [2, 2]) == 0.5
    # pairs of (1, 2, 3) against (2,): loss, tie, win -> (0 + 0.5 + 1) / 3
    assert probability_of_improvement([1, 2, 3], [2]) == pytest.approx(0.5)
    # two tasks: 1.0 on the first, 0.0 on the second
    assert probability_of_improvement([[5, 0]], [[1, 9]]) == 0.5
    low, high = probability_of_improvement_ci([3, 4, 5, 6], [1, 2, 1, 2])
    assert low == high == 1.0
    low, high = probability_of_improvement_ci([1, 3, 5, 7, 9], [2, 4, 6, 8, 10])
    assert 0.0 <= low < probability_of_improvement([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]) < high <= 1.0


def test_performance_profile_hand_values():
    np.testing.assert_allclose(performance_profile([1, 2, 3, 4], [0, 2.5, 4]), [1.0, 0.5, 0.0])
    prof, low, high = performance_profile_band([1, 2, 3, 4], [0, 2.5, 4])
    np.testing.assert_allclose(prof, [1.0, 0.5, 0.0])
    assert low[0] == high[0] == 1.0 and low[2] == high[2] == 0.0
    assert low[1] < 0.5 < high[1]


def test_sample_efficiency_curve_is_the_iqm_per_point():
    scores = np.array([[0, 1], [0, 2], [0, 3], [0, 100]], float)  # 4 runs, 2 points
    iqm_curve, low, high = sample_efficiency_curve(scores)
    np.testing.assert_allclose(iqm_curve, [0.0, 2.5])
    assert low[0] == high[0] == 0.0 and low[1] <= 2.5 <= high[1]


def test_curve_band_interpolates_and_brackets_the_mean():
    grid = np.array([0.0, 5.0, 10.0])
    curves = [
        (np.array([0.0, 10.0]), np.array([0.0, 10.0])),
        (np.array([0.0, 10.0]), np.array([2.0, 12.0])),
    ]
    mean, low, high = curve_band(curves, grid)
    np.testing.assert_allclose(mean, [1.0, 6.0, 11.0])
    assert np.all(low <= mean) and np.all(mean <= high)
