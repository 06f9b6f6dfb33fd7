"""Aggregate statistics over runs, as Agarwal et al. (2021) recommend for deep RL.

"Deep RL at the edge of the statistical precipice" (NeurIPS 2021) reports, instead of means
over a handful of seeds:

* the interquartile mean (IQM: the mean of the middle 50% of runs) with a 95% confidence
  interval from a *stratified* bootstrap (runs are resampled within each task);
* the probability of improvement ``P(X > Y)``: the chance that a run of X beats a run of Y,
  ties counting one half, averaged over tasks, with its bootstrap interval;
* performance profiles: the fraction of runs scoring above each threshold ``tau``;
* sample-efficiency curves: the IQM (and its interval) at each point of training.

Their library (rliable) is archived and no longer imports with current pandas, so these are
built on numpy/scipy here. Scores are ``(n_runs,)`` for one task or ``(n_runs, n_tasks)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray
Statistic = Callable[[np.ndarray], float]


def _trim_mean(x: np.ndarray, axis: int | None) -> np.ndarray:
    """The 25%-trimmed mean along ``axis`` (scipy.stats is imported on first use: the command
    line imports this module to build its parser)."""
    from scipy import stats

    return np.asarray(stats.trim_mean(x, 0.25, axis=axis), dtype=float)


def _as_runs_by_tasks(scores: ArrayLike | Sequence[Sequence[float]], what: str) -> np.ndarray:
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what}: scores must be (n_runs,) or (n_runs, n_tasks), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: scores must be finite")
    return x


def iqm(values: ArrayLike | Sequence[Sequence[float]]) -> float:
    """Interquartile mean over all runs (and tasks): the mean after trimming 25% from each end.

    ``floor(0.25 * n)`` values are cut from each end, so below 4 values nothing is cut and the
    IQM is the plain mean (see :func:`iqm_is_mean`).
    """
    return float(_trim_mean(np.asarray(values, dtype=float), None))


def iqm_is_mean(n_values: int) -> bool:
    """True when an IQM over ``n_values`` trims nothing, so it equals the mean (n < 4)."""
    return int(0.25 * n_values) == 0


def _iqm_rows(samples: np.ndarray) -> np.ndarray:
    """IQM of each row of ``samples`` ``(B, n)`` -> ``(B,)``."""
    return _trim_mean(samples, 1)


def stratified_bootstrap(
    scores: ArrayLike | Sequence[Sequence[float]], n_resamples: int = 5000, seed: int = 0
) -> np.ndarray:
    """Resample runs with replacement within each task: ``(R, T) -> (n_resamples, R, T)``."""
    x = _as_runs_by_tasks(scores, "stratified_bootstrap")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(n_resamples, *x.shape))
    return np.take_along_axis(np.broadcast_to(x, (n_resamples, *x.shape)), idx, axis=1)


def resample_runs(x: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Whole runs (rows) drawn with replacement: ``(R, ...) -> (n_resamples, R, ...)``.

    A run's curve or scores stay together; the bootstrap of learning curves uses this.
    """
    rng = np.random.default_rng(seed)
    return x[rng.integers(0, x.shape[0], size=(n_resamples, x.shape[0]))]


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    values: ArrayLike | Sequence[Sequence[float]],
    statistic: str = "iqm",
    confidence: float = 0.95,
    n_resamples: int = 5000,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval of ``statistic`` (``iqm`` or ``mean``).

    ``values`` are ``(n_runs,)`` or ``(n_runs, n_tasks)``; runs are resampled within each task
    and the statistic is taken over all runs and tasks of each resample. With one run, or
    identical runs, the interval collapses to that value.
    """
    if statistic not in ("iqm", "mean"):
        raise ValueError(f"statistic must be 'iqm' or 'mean', got {statistic!r}")
    boot = stratified_bootstrap(values, n_resamples, seed)
    flat = boot.reshape(n_resamples, -1)
    est = _iqm_rows(flat) if statistic == "iqm" else flat.mean(axis=1)
    return _percentile_interval(est, confidence)


def probability_of_improvement(
    x: ArrayLike | Sequence[Sequence[float]], y: ArrayLike | Sequence[Sequence[float]]
) -> float:
    """``P(X > Y)``: the chance a random run of X beats a random run of Y on the same task.

    Per task, the Mann-Whitney U statistic over all ``(x_i, y_j)`` pairs divided by their number
    (ties count one half); then the mean over tasks. ``x`` ``(N, T)``, ``y`` ``(M, T)``.
    """
    a = _as_runs_by_tasks(x, "probability_of_improvement (x)")
    b = _as_runs_by_tasks(y, "probability_of_improvement (y)")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y must have the same tasks, got {a.shape[1]} and {b.shape[1]}")
    return float(_poi(a[None], b[None])[0])


def _poi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``P(X > Y)`` of each resample: ``(B, N, T)``, ``(B, M, T)`` -> ``(B,)``."""
    greater = (a[:, :, None, :] > b[:, None, :, :]).mean(axis=(1, 2))
    ties = (a[:, :, None, :] == b[:, None, :, :]).mean(axis=(1, 2))
    return np.asarray((greater + 0.5 * ties).mean(axis=1), dtype=float)


def probability_of_improvement_ci(
    x: ArrayLike | Sequence[Sequence[float]],
    y: ArrayLike | Sequence[Sequence[float]],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified-bootstrap interval of ``P(X > Y)``: X's and Y's runs resampled independently."""
    a = stratified_bootstrap(x, n_resamples, seed)
    b = stratified_bootstrap(y, n_resamples, seed + 1)
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"x and y must have the same tasks, got {a.shape[2]} and {b.shape[2]}")
    return _percentile_interval(_poi(a, b), confidence)


def performance_profile(
    scores: ArrayLike | Sequence[Sequence[float]], taus: ArrayLike
) -> np.ndarray:
    """Fraction of runs scoring strictly above each ``tau``, averaged over tasks: ``(len(taus),)``."""
    x = _as_runs_by_tasks(scores, "performance_profile")
    t = np.asarray(taus, dtype=float)
    return np.asarray((x[None, :, :] > t[:, None, None]).mean(axis=1).mean(axis=1), dtype=float)


def performance_profile_band(
    scores: ArrayLike | Sequence[Sequence[float]],
    taus: ArrayLike,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The profile and its pointwise stratified-bootstrap interval: three ``(len(taus),)``."""
    t = np.asarray(taus, dtype=float)
    boot = stratified_bootstrap(scores, n_resamples, seed)  # (B, R, T)
    profiles = (boot[:, None, :, :] > t[None, :, None, None]).mean(axis=2).mean(axis=2)
    alpha = (1 - confidence) / 2
    return (
        performance_profile(scores, t),
        np.quantile(profiles, alpha, axis=0),
        np.quantile(profiles, 1 - alpha, axis=0),
    )


def sample_efficiency_curve(
    scores: ArrayLike | Sequence[Sequence[float]],
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over runs at each point of training, with its bootstrap interval.

    Args:
        scores: ``(n_runs, n_points)``: run ``i``'s evaluation return at point ``j`` (e.g. every
            run evaluated on the same grid of env steps).

    Returns:
        ``(iqm, low, high)``, each ``(n_points,)``.
    """
    x = _as_runs_by_tasks(scores, "sample_efficiency_curve")
    boot = resample_runs(x, n_resamples, seed)  # (B, R, P): each curve kept together
    est = _trim_mean(boot, 1)  # (B, P)
    alpha = (1 - confidence) / 2
    return (
        _trim_mean(x, 0),
        np.quantile(est, alpha, axis=0),
        np.quantile(est, 1 - alpha, axis=0),
    )


def normalized_auc(steps: ArrayLike, returns: ArrayLike) -> float:
    """Area under a learning curve divided by its span: the average return over training."""
    s, r = np.asarray(steps, float), np.asarray(returns, float)
    if len(s) < 2 or s[-1] == s[0]:
        return float(r.mean())
    return float(np.trapezoid(r, s) / (s[-1] - s[0]))


def first_crossing(
    xs: ArrayLike, returns: ArrayLike, threshold: float, steps: ArrayLike | None = None
) -> float | None:
    """First ``x`` (steps or seconds) at which the return reaches ``threshold``, else None.

    Evaluations made before any training (``steps == 0``; ``steps`` defaults to ``xs``) never
    count: an untrained policy that happens to reach the threshold has not learnt it.
    """
    s = np.asarray(xs if steps is None else steps, float)
    for x, r, n in zip(np.asarray(xs, float), np.asarray(returns, float), s, strict=True):
        if n > 0 and r >= threshold:
            return float(x)
    return None


def curve_band(
    curves: Sequence[tuple[np.ndarray, np.ndarray]],
    grid: np.ndarray,
    confidence: float = 0.95,
    seed: int = 0,
    n_resamples: int = 2000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and bootstrap CI of several learning curves, interpolated onto ``grid``.

    Returns ``(mean, low, high)``, each ``(len(grid),)``.
    """
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean = ys.mean(axis=0)
    if len(ys) < 2:
        return mean, mean, mean
    boot = resample_runs(ys, n_resamples, seed).mean(axis=1)
    alpha = (1 - confidence) / 2
    return mean, np.quantile(boot, alpha, axis=0), np.quantile(boot, 1 - alpha, axis=0)
