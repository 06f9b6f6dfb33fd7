import numpy as np
import pytest

from agents.statistics import bootstrap_ci, curve_band, first_crossing, iqm, normalized_auc


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


def test_curve_band_interpolates_and_brackets_the_mean():
    grid = np.array([0.0, 5.0, 10.0])
    curves = [
        (np.array([0.0, 10.0]), np.array([0.0, 10.0])),
        (np.array([0.0, 10.0]), np.array([2.0, 12.0])),
    ]
    mean, low, high = curve_band(curves, grid)
    np.testing.assert_allclose(mean, [1.0, 6.0, 11.0])
    assert np.all(low <= mean) and np.all(mean <= high)
