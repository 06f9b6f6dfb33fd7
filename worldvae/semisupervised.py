"""Small heads on frozen codes: how many labelled frames a representation needs.

A head is linear on standardised features: ridge regression for a continuous factor (scored by
R^2 on held-out frames) and multinomial logistic regression for a discrete one (scored by
accuracy). :func:`label_efficiency` trains a head per factor on 50, 500, 5,000 labelled frames
(nested subsets, so the curve moves only by the added labels) and scores each on the same
held-out frames. The same heads give DCI its importance matrix (:mod:`worldvae.disentanglement`).

Shapes: N frames, F features (code units, or pixels for the raw-pixel control), K outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from worldvae.probes import fit_ridge, r2_score

LABEL_BUDGETS = (50, 500, 5000)
MAX_CLASSES = 10
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def is_discrete(values: np.ndarray, max_classes: int = MAX_CLASSES) -> bool:
    """A factor is discrete when it takes at most ``max_classes`` integer values: ``(N,)``."""
    v = np.asarray(values).reshape(-1)
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool(np.all(v == np.round(v))) and len(np.unique(v)) <= max_classes


@dataclass(frozen=True)
class LinearHead:
    """A fitted linear head. ``weights`` ``(F, K)`` act on standardised features.

    ``classes`` ``(K,)`` is set for a classifier (predictions are class values); for a
    regressor ``K == 1`` and predictions are the linear output.
    """

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    classes: np.ndarray | None = None

    def decision(self, features: np.ndarray) -> np.ndarray:
        """Linear outputs ``(N, K)`` for features ``(N, F)``."""
        x = (np.asarray(features, dtype=np.float32) - self.mean) / self.scale
        return x @ self.weights.astype(np.float32) + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted factor values ``(N,)``."""
        out = self.decision(features)
        if self.classes is None:
            return out[:, 0].astype(np.float64)
        return self.classes[out.argmax(axis=1)]

    def importance(self) -> np.ndarray:
        """How much the head uses each feature: summed absolute weights ``(F,)``."""
        return np.abs(self.weights).sum(axis=1)


def _standardise(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, F), got shape {x.shape}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    return (x - mean) / scale, mean, scale


def choose_alpha(
    features: np.ndarray,
    targets: np.ndarray,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    folds: int = 3,
) -> float:
    """The ridge penalty with the lowest ``folds``-fold cross-validated squared error.

    ``features`` ``(N, F)``, ``targets`` ``(N,)``; folds are contiguous blocks of a fixed
    permutation. With fewer than ``2 * folds`` samples the middle of the grid is returned.
    """
    n = len(features)
    if n < 2 * folds:
        return float(alphas[len(alphas) // 2])
    y = np.asarray(targets, np.float64).reshape(-1, 1)
    parts = np.array_split(np.random.default_rng(0).permutation(n), folds)
    errors = []
    for alpha in alphas:
        sse = 0.0
        for held in parts:
            train = np.setdiff1d(np.arange(n), held, assume_unique=True)
            probe = fit_ridge(features[train], y[train], alpha)
            sse += float(((probe.predict(features[held]) - y[held]) ** 2).sum())
        errors.append(sse)
    return float(alphas[int(np.argmin(errors))])


def fit_regressor(
    features: np.ndarray, targets: np.ndarray, alpha: float | None = None
) -> LinearHead:
    """Ridge regression of ``targets`` ``(N,)`` on standardised ``features`` ``(N, F)``.

    The ridge of :func:`worldvae.probes.fit_ridge`, its penalty chosen by cross-validation
    (:func:`choose_alpha`) unless ``alpha`` is given, so 50 labels and 5,000 labels are each
    regularised as they need.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64).reshape(-1, 1)
    if x.ndim != 2 or len(y) != len(x):
        raise ValueError(f"features must be (N, F) with N = {len(y)} targets, got {x.shape}")
    probe = fit_ridge(x, y, choose_alpha(x, y) if alpha is None else alpha)
    return LinearHead(
        probe.x_mean.astype(np.float32),
        probe.x_scale.astype(np.float32),
        probe.weights.astype(np.float32),
        probe.y_mean.astype(np.float32),
    )


def fit_classifier(
    features: np.ndarray, labels: np.ndarray, l2: float = 1e-2, max_iter: int = 200
) -> LinearHead:
    """Multinomial logistic regression of ``labels`` ``(N,)`` on standardised ``features``.

    Minimises mean cross-entropy + ``l2 / 2 * ||W||^2`` (bias unpenalised) with L-BFGS. A
    single class in the labels gives a head that always predicts it.
    """
    x, mean, scale = _standardise(features)
    y = np.asarray(labels).reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"features have {len(x)} rows but labels {len(y)}")
    classes, idx = np.unique(y, return_inverse=True)
    n, f = x.shape
    k = len(classes)
    if k == 1:
        return LinearHead(
            mean, scale, np.zeros((f, 1), np.float32), np.zeros(1, np.float32), classes
        )
    onehot = np.zeros((n, k), np.float64)
    onehot[np.arange(n), idx] = 1.0

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: f * k].reshape(f, k)
        b = theta[f * k :]
        logits = (x @ w.astype(np.float32)).astype(np.float64) + b
        logits -= logits.max(axis=1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        loss = -(onehot * log_p).sum() / n + 0.5 * l2 * (w**2).sum()
        d = (np.exp(log_p) - onehot) / n  # (N, K)
        gw = (x.T @ d.astype(np.float32)).astype(np.float64) + l2 * w
        return float(loss), np.concatenate([gw.ravel(), d.sum(axis=0)])

    res = minimize(
        loss_and_grad,
        np.zeros(f * k + k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter},
    )
    w = res.x[: f * k].reshape(f, k).astype(np.float32)
    return LinearHead(mean, scale, w, res.x[f * k :].astype(np.float32), classes)


def fit_head(features: np.ndarray, targets: np.ndarray, discrete: bool) -> LinearHead:
    """A classifier for a discrete factor, a ridge regressor for a continuous one."""
    return fit_classifier(features, targets) if discrete else fit_regressor(features, targets)


def score_head(head: LinearHead, features: np.ndarray, targets: np.ndarray) -> float:
    """Accuracy (classifier) or R^2 (regressor) of ``head`` on ``(N, F)`` features."""
    pred = head.predict(features)
    if head.classes is not None:
        return float(np.mean(pred == np.asarray(targets).reshape(-1)))
    truth = np.asarray(targets, np.float64).reshape(-1, 1)
    return float(r2_score(truth, pred.reshape(-1, 1))[0])


def label_efficiency(
    train_features: np.ndarray,
    train_factors: np.ndarray,
    test_features: np.ndarray,
    test_factors: np.ndarray,
    names: Sequence[str],
    budgets: Sequence[int] = LABEL_BUDGETS,
    seed: int = 0,
) -> dict[str, dict[int, float]]:
    """Held-out score of a head per factor and label budget.

    Args:
        train_features: ``(N, F)`` features of the frames labels may be drawn from.
        train_factors: ``(N, S)`` their true factor values.
        test_features: ``(M, F)`` features of held-out frames.
        test_factors: ``(M, S)`` their factor values.
        names: the ``S`` factor names.
        budgets: numbers of labelled frames; a budget above ``N`` is capped at ``N`` (the
            result is keyed by the number actually used).
        seed: picks the labelled frames; budget ``n`` uses the first ``n`` of one permutation.

    Returns:
        ``{factor: {n_labels: score}}``: accuracy for discrete factors, R^2 for continuous
        ones. Factors constant on the held-out frames are left out (nothing to predict).
    """
    train_factors = np.asarray(train_factors).reshape(len(train_features), -1)
    test_factors = np.asarray(test_factors).reshape(len(test_features), -1)
    if train_factors.shape[1] != len(names) or test_factors.shape[1] != len(names):
        raise ValueError(
            f"factor arrays have {train_factors.shape[1]} and {test_factors.shape[1]} columns "
            f"but {len(names)} names were given"
        )
    order = np.random.default_rng(seed).permutation(len(train_features))
    sizes = sorted({min(int(n), len(order)) for n in budgets})
    out: dict[str, dict[int, float]] = {}
    for j, name in enumerate(names):
        if np.ptp(test_factors[:, j]) == 0:
            continue
        discrete = is_discrete(np.concatenate([train_factors[:, j], test_factors[:, j]]))
        out[name] = {}
        for n in sizes:
            pick = order[:n]
            head = fit_head(train_features[pick], train_factors[pick, j], discrete)
            out[name][n] = score_head(head, test_features, test_factors[:, j])
    return out
