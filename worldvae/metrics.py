"""Rank statistics used to score representations: AUROC and Spearman's rank correlation.

Both are rank-based, so a score is judged only by the order it puts things in; ties get the
average of the ranks they span.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher for ``positives``.

    The probability that a random positive scores above a random negative, ties counting one
    half (the Mann-Whitney U statistic divided by ``n_neg * n_pos``).

    Args:
        negatives: scores ``(N,)`` of the negative class (e.g. in-distribution frames).
        positives: scores ``(M,)`` of the positive class (e.g. shifted frames).

    Returns:
        A number in [0, 1]: 1 when every positive outscores every negative, 0.5 for chance.

    Example:
        >>> auroc(np.array([0.1, 0.4]), np.array([0.35, 0.8]))
        0.75
    """
    neg = np.asarray(negatives, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives, dtype=np.float64).reshape(-1)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError(
            f"auroc needs scores of both classes, got {len(neg)} negatives and {len(pos)} positives"
        )
    if not (np.isfinite(neg).all() and np.isfinite(pos).all()):
        raise ValueError("auroc: scores must be finite (got NaN or inf)")
    ranks = rankdata(np.concatenate([neg, pos]))  # average ranks for ties, 1-based
    u = ranks[len(neg) :].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(neg) * len(pos)))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two paired samples ``(N,)`` and ``(N,)``.

    The Pearson correlation of their (average, for ties) ranks. NaN when fewer than two pairs
    remain after dropping pairs with a NaN, or when either side is constant: no order, no
    correlation.
    """
    x = np.asarray(a, dtype=np.float64).reshape(-1)
    y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"spearman needs paired samples, got shapes {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2.0, rankdata(y) - (len(y) + 1) / 2.0
    denom = np.sqrt((rx**2).sum() * (ry**2).sum())
    if denom == 0:
        return float("nan")
    return float((rx * ry).sum() / denom)
