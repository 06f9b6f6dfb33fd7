"""MIG, DCI, AUROC, Spearman and the semi-supervised heads on synthetic codes with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from worldvae.disentanglement import (
    dci,
    dci_from_importance,
    discretise,
    entropy,
    mig,
    mutual_information,
)
from worldvae.metrics import auroc, spearman
from worldvae.semisupervised import (
    fit_classifier,
    fit_regressor,
    is_discrete,
    label_efficiency,
    score_head,
)


def _factors(n: int = 4000, k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, k))


def _rotation(k: int, seed: int = 1) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((k, k)))
    return q


# ---- AUROC and Spearman ------------------------------------------------------------------
def test_auroc_matches_a_hand_computed_case_with_a_tie():
    # Positive 2 beats negative 1, ties negative 2 (counts 1/2), loses to 3: 1.5 of 3.
    # Positive 4 beats all three: 3. Total 4.5 of 6 pairs.
    assert auroc(np.array([1.0, 2.0, 3.0]), np.array([2.0, 4.0])) == pytest.approx(0.75)


def test_auroc_extremes_and_chance():
    neg, pos = np.arange(5.0), np.arange(5.0) + 10
    assert auroc(neg, pos) == 1.0
    assert auroc(pos, neg) == 0.0
    assert auroc(np.ones(4), np.ones(3)) == 0.5


def test_auroc_refuses_empty_or_nan():
    with pytest.raises(ValueError, match="both classes"):
        auroc(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        auroc(np.array([np.nan]), np.array([1.0]))


def test_spearman_is_rank_based_and_handles_ties():
    x = np.linspace(0.1, 3, 20)
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    a = np.array([1, 2, 2, 3, 5, 5, 4.0])
    b = np.array([2, 1, 3, 3, 6, 4, 5.0])
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(spearman(np.ones(5), x[:5]))
    assert spearman(np.array([1.0, np.nan, 2.0, 3.0]), np.array([3.0, 0.0, 2.0, 1.0])) == (
        pytest.approx(-1.0)
    )


# ---- mutual information and MIG -------------------------------------------------------------
def test_discretise_keeps_few_values_and_bins_continuous_ones():
    v = np.c_[np.repeat([1.0, 4.0, 6.0], 10), np.linspace(0, 1, 30)]
    d = discretise(v, n_bins=5)
    assert set(d[:, 0]) == {0, 1, 2}
    assert set(d[:, 1]) == set(range(5))
    assert np.all(np.diff(d[:, 1]) >= 0)


def test_mutual_information_of_a_copy_is_its_entropy_and_independent_is_near_zero():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 20000)
    assert mutual_information(a, a) == pytest.approx(entropy(a))
    assert entropy(a) == pytest.approx(np.log(4), abs=1e-3)
    assert mutual_information(a, rng.integers(0, 4, 20000)) < 0.005


def test_mig_perfect_code_near_one_rotated_and_noisy_lower():
    v = _factors()
    rng = np.random.default_rng(2)
    perfect = np.c_[3 * v[:, [2, 0, 1]] + 1, rng.standard_normal((len(v), 2)) * 0.01]
    rotated = v @ _rotation(3)
    noisy = v + rng.normal(0, 0.5, v.shape)
    score_perfect, gaps = mig(perfect, v)
    assert score_perfect > 0.9 and gaps.shape == (3,)
    assert mig(rotated, v)[0] < 0.5
    assert mig(noisy, v)[0] < score_perfect - 0.3


def test_mig_skips_constant_factors():
    v = np.c_[_factors(1000, 2), np.zeros(1000)]
    score, gaps = mig(v[:, :2], v)
    assert np.isnan(gaps[2]) and score > 0.9


# ---- DCI -------------------------------------------------------------------------------------
def test_dci_from_importance_extremes():
    assert dci_from_importance(np.eye(4)) == pytest.approx((1.0, 1.0))
    assert dci_from_importance(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-12)
    # Two codes share one factor: each code is pure (D = 1), the factor is split (C < 1).
    d, c = dci_from_importance(np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]]))
    assert d == pytest.approx(1.0) and c < 0.9


def test_dci_perfect_code_scores_near_one_rotation_keeps_only_informativeness():
    v = _factors(3000)
    rng = np.random.default_rng(3)
    perfect = np.c_[v, rng.standard_normal((len(v), 2))]  # two nuisance units
    rotated = v @ _rotation(3)
    train, test = slice(0, 2000), slice(2000, None)
    good = dci(perfect[train], v[train], perfect[test], v[test], names=["a", "b", "c"])
    bad = dci(rotated[train], v[train], rotated[test], v[test])
    assert good.disentanglement > 0.9 and good.completeness > 0.9
    assert good.informativeness > 0.95 and good.factors == ("a", "b", "c")
    assert good.importance.shape == (5, 3)
    assert bad.disentanglement < good.disentanglement - 0.3
    assert bad.completeness < good.completeness - 0.3
    assert bad.informativeness > 0.95  # a rotation loses no information


def test_dci_with_discrete_factors_uses_accuracy():
    rng = np.random.default_rng(4)
    v = rng.integers(0, 3, (2000, 2)).astype(float)
    codes = v + rng.normal(0, 0.05, v.shape)
    r = dci(codes[:1500], v[:1500], codes[1500:], v[1500:])
    assert r.informativeness > 0.95 and r.disentanglement > 0.8


# ---- semi-supervised heads -----------------------------------------------------------------
def test_regression_head_recovers_a_known_linear_map():
    rng = np.random.default_rng(5)
    x = rng.normal(0, [1.0, 2.0, 0.5, 3.0], (500, 4))
    w = np.array([2.0, -1.0, 0.0, 0.5])
    y = x @ w + 3.0
    head = fit_regressor(x, y)
    x_new = rng.normal(0, 1, (100, 4))
    np.testing.assert_allclose(head.predict(x_new), x_new @ w + 3.0, atol=0.05)
    # importance is |w| times the feature's spread (weights act on standardised features)
    np.testing.assert_allclose(head.importance(), np.abs(w) * x.std(axis=0), rtol=0.05, atol=0.02)


def test_classification_head_learns_a_linear_boundary_and_names_classes():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((600, 5))
    labels = np.where(x[:, 0] + 0.5 * x[:, 3] > 0, 7.0, -2.0)
    head = fit_classifier(x[:400], labels[:400])
    assert set(head.classes) == {7.0, -2.0}
    assert score_head(head, x[400:], labels[400:]) > 0.95
    assert head.importance()[[0, 3]].min() > head.importance()[[1, 2, 4]].max()


def test_classifier_with_one_class_predicts_it():
    head = fit_classifier(np.random.default_rng(0).standard_normal((10, 3)), np.full(10, 2.0))
    assert np.all(head.predict(np.zeros((4, 3))) == 2.0)


def test_is_discrete():
    assert is_discrete(np.array([1.0, 2.0, 2.0, 5.0]))
    assert not is_discrete(np.array([0.5, 1.0]))
    assert not is_discrete(np.arange(50.0))


def test_label_efficiency_improves_with_labels_and_caps_the_budget():
    rng = np.random.default_rng(7)
    n, d = 1200, 30
    x = rng.standard_normal((n, d))
    factors = np.c_[x[:, :3] @ np.array([1.0, -2.0, 0.5]), (x[:, 4] > 0).astype(float), np.ones(n)]
    factors[:, 0] += rng.normal(0, 0.3, n)
    scores = label_efficiency(
        x[:1000], factors[:1000], x[1000:], factors[1000:], ["y", "flag", "const"], (20, 200, 5000)
    )
    assert set(scores) == {"y", "flag"}  # the constant factor is left out
    assert list(scores["y"]) == [20, 200, 1000]
    assert scores["y"][1000] > 0.9 and scores["y"][1000] >= scores["y"][20]
    assert scores["flag"][1000] > 0.9
    with pytest.raises(ValueError, match="names"):
        label_efficiency(x, factors, x, factors, ["only_one"])
