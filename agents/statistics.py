"""Aggregate statistics over seeds: IQM with bootstrap CIs, areas under curves, thresholds.

Built on scipy (``trim_mean``, ``bootstrap``) rather than hand-rolled estimators. The IQM (mean
of the middle 50%) and its stratified-bootstrap interval follow Agarwal et al. (2021),
"Deep RL at the edge of the statistical precipice".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: the mean after trimming 25% from each end."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: str = "iqm",
    confidence: float = 0.95,
    n_resamples: int = 5000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``statistic`` (``iqm`` or ``mean``).

    With a single value (or identical values) the interval collapses to that value.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    fn = (lambda a, axis: stats.trim_mean(a, 0.25, axis=axis)) if statistic == "iqm" else np.mean
    res = stats.bootstrap(
        (x,),
        fn,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def normalized_auc(
    steps: Sequence[float] | np.ndarray, returns: Sequence[float] | np.ndarray
) -> float:
    """Area under a learning curve divided by its span: the average return over training."""
    s, r = np.asarray(steps, float), np.asarray(returns, float)
    if len(s) < 2 or s[-1] == s[0]:
        return float(r.mean())
    return float(np.trapezoid(r, s) / (s[-1] - s[0]))


def first_crossing(
    xs: Sequence[float] | np.ndarray, returns: Sequence[float] | np.ndarray, threshold: float
) -> float | None:
    """First ``x`` (steps or seconds) at which the return reaches ``threshold``, else None."""
    for x, r in zip(xs, returns, strict=True):
        if r >= threshold:
            return float(x)
    return None


def curve_band(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
    grid: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and bootstrap CI of several learning curves, interpolated onto ``grid``.

    Returns ``(mean, low, high)``, each ``(len(grid),)``.
    """
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean = ys.mean(axis=0)
    if len(ys) < 2:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ys), (2000, len(ys)))
    boot = ys[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return mean, np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)
