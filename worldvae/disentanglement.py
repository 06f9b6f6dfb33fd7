"""Disentanglement scores of a code against the env's true factors: MIG and DCI.

Both follow Locatello et al. (2019, "Challenging common assumptions in the unsupervised
learning of disentangled representations") and the scores' original papers:

- **MIG** (Chen et al. 2018): codes and factors are discretised into equal-width histogram
  bins (20 by default, as Locatello et al. do for continuous values), the mutual information
  ``I(z_i; v_k)`` is estimated from counts, and the gap between the two codes most informative
  about a factor, over the factor's entropy, is averaged over factors.
- **DCI** (Eastwood and Williams 2018): a predictor per factor gives an importance matrix
  ``R`` ``(D codes, K factors)``; *disentanglement* is ``1 - H_K(P_i.)`` per code (does a code
  serve one factor?) averaged with weights ``sum_k R_ik``, *completeness* ``1 - H_D(P_.k)``
  per factor (is a factor held by one code?) averaged with weights ``sum_i R_ik``, and
  *informativeness* the predictors' held-out score. Locatello et al. take the importances
  from gradient-boosted trees; here, to stay within numpy/scipy, they are the absolute
  weights of the linear heads of :mod:`worldvae.semisupervised` on standardised codes
  (Eastwood and Williams' Lasso variant, with ridge / logistic heads). A factor held
  non-linearly by a code therefore counts less than with trees.

Shapes: N samples, D code units, K factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from worldvae.semisupervised import fit_head, is_discrete, score_head

N_BINS = 20


def discretise(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Integer labels per column: ``(N, C)`` float -> ``(N, C)`` int64.

    A column with at most ``n_bins`` distinct values keeps them as categories (a grid position
    stays exact); otherwise it is cut into ``n_bins`` equal-width bins over its range, as
    ``histogram_discretize`` in disentanglement_lib.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ValueError(f"discretise expects (N, C) values, got shape {v.shape}")
    out = np.empty(v.shape, np.int64)
    for c in range(v.shape[1]):
        uniq, inverse = np.unique(v[:, c], return_inverse=True)
        if len(uniq) <= n_bins:
            out[:, c] = inverse
        else:
            edges = np.histogram_bin_edges(v[:, c], bins=n_bins)
            out[:, c] = np.digitize(v[:, c], edges[1:-1])
    return out


def entropy(labels: np.ndarray) -> float:
    """Entropy in nats of integer labels ``(N,)``."""
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information in nats between two integer label arrays ``(N,)`` (plug-in)."""
    a = np.asarray(a).reshape(-1)
    b = np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"mutual_information needs paired labels, got {a.shape} and {b.shape}")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def mutual_information_matrix(
    codes: np.ndarray, factors: np.ndarray, n_bins: int = N_BINS
) -> np.ndarray:
    """``I(z_i; v_k)`` in nats for discretised codes ``(N, D)`` and factors ``(N, K)``: ``(D, K)``."""
    zc, vc = discretise(codes, n_bins), discretise(factors, n_bins)
    return np.array(
        [
            [mutual_information(zc[:, i], vc[:, k]) for k in range(vc.shape[1])]
            for i in range(zc.shape[1])
        ]
    )


def _check(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(codes, np.float64)
    v = np.asarray(factors, np.float64)
    if z.ndim != 2 or v.ndim != 2 or len(z) != len(v):
        raise ValueError(
            f"codes must be (N, D) and factors (N, K) with the same N, got {z.shape} and {v.shape}"
        )
    if len(z) < 2 or z.shape[1] < 1:
        raise ValueError(f"need at least 2 samples and 1 code unit, got codes {z.shape}")
    return z, v


def mig(codes: np.ndarray, factors: np.ndarray, n_bins: int = N_BINS) -> tuple[float, np.ndarray]:
    """Mutual information gap of ``codes`` ``(N, D)`` about ``factors`` ``(N, K)``.

    Returns:
        (MIG averaged over the factors that vary, per-factor gaps ``(K,)`` with NaN for a
        constant factor). A code with a single unit scores its normalised information.
    """
    z, v = _check(codes, factors)
    m = mutual_information_matrix(z, v, n_bins)  # (D, K)
    h = np.array([entropy(col) for col in discretise(v, n_bins).T])
    top = np.sort(m, axis=0)[::-1]
    second = top[1] if len(top) > 1 else np.zeros(m.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        gaps = np.where(h > 0, (top[0] - second) / h, np.nan)
    return (float(np.nanmean(gaps)) if np.isfinite(gaps).any() else float("nan")), gaps


def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """``1 - H_base(p)`` per column of a column-stochastic matrix ``(n, m)``: ``(m,)``."""
    if base < 2:
        return np.ones(p.shape[1])
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return 1.0 + terms.sum(axis=0) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """(disentanglement, completeness) from an importance matrix ``(D, K)`` of non-negatives."""
    r = np.asarray(importance, np.float64)
    if r.ndim != 2 or (r < 0).any():
        raise ValueError(f"importance must be a non-negative (D, K) matrix, got {r.shape}")
    total = r.sum()
    if total == 0:
        return 0.0, 0.0
    d_codes, k_factors = r.shape
    row, col = r.sum(axis=1), r.sum(axis=0)
    p_code = np.divide(r.T, row, out=np.zeros_like(r.T), where=row > 0)  # (K, D): over factors
    p_factor = np.divide(r, col, out=np.zeros_like(r), where=col > 0)  # (D, K): over codes
    disentanglement = float((_one_minus_entropy(p_code, k_factors) * row / total).sum())
    completeness = float((_one_minus_entropy(p_factor, d_codes) * col / total).sum())
    return disentanglement, completeness


@dataclass(frozen=True)
class DCIResult:
    """DCI scores; ``importance`` ``(D, K)`` over the factors that vary (``factors``)."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray
    factors: tuple[str, ...]


def dci(
    train_codes: np.ndarray,
    train_factors: np.ndarray,
    test_codes: np.ndarray,
    test_factors: np.ndarray,
    names: Sequence[str] | None = None,
) -> DCIResult:
    """DCI of a code: a head per factor fitted on the train pairs, scored on the test pairs.

    Args:
        train_codes, test_codes: ``(N, D)`` and ``(M, D)``.
        train_factors, test_factors: ``(N, K)`` and ``(M, K)``.
        names: the ``K`` factor names (default ``factor_0`` ...).

    Informativeness is the mean held-out score (accuracy for discrete factors, R^2 clipped at
    0 for continuous ones); factors constant on either side are left out.
    """
    ztr, vtr = _check(train_codes, train_factors)
    zte, vte = _check(test_codes, test_factors)
    names = tuple(names or (f"factor_{k}" for k in range(vtr.shape[1])))
    cols, scores = [], []
    used: list[str] = []
    for k, name in enumerate(names):
        if np.ptp(vtr[:, k]) == 0 or np.ptp(vte[:, k]) == 0:
            continue
        discrete = is_discrete(np.concatenate([vtr[:, k], vte[:, k]]))
        head = fit_head(ztr, vtr[:, k], discrete)
        cols.append(head.importance())
        scores.append(max(0.0, score_head(head, zte, vte[:, k])))
        used.append(name)
    if not cols:
        raise ValueError("dci: every factor is constant; there is nothing to predict")
    importance = np.stack(cols, axis=1)
    d, c = dci_from_importance(importance)
    return DCIResult(d, c, float(np.mean(scores)), importance, tuple(used))
