"""Linear probes: how much of the env's true state a code holds, as R^2 on held-out episodes.

A ridge regression from codes ``(N, D)`` to states ``(N, S)`` is fitted on training episodes
and scored on held-out ones, one R^2 per state factor. An R^2 near 1 means the factor is a
linear function of the code; near 0 (or below) means the code does not expose it linearly.
Built on numpy/scipy (no scikit-learn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import linalg

from worldvae.data.dataset import EpisodeDataset, EpisodeInfo
from worldvae.data.episodes import read_episode

Encode = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class RidgeProbe:
    """A fitted ridge regression ``y = ((x - x_mean) / x_scale) @ weights + y_mean``.

    Attributes:
        x_mean, x_scale: ``(D,)`` standardisation of the codes (scale 1 for constant dims).
        weights: ``(D, S)``.
        y_mean: ``(S,)``.
    """

    x_mean: np.ndarray
    x_scale: np.ndarray
    weights: np.ndarray
    y_mean: np.ndarray

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Codes ``(N, D)`` -> predicted states ``(N, S)``."""
        return ((np.asarray(x, np.float64) - self.x_mean) / self.x_scale) @ self.weights + (
            self.y_mean
        )


def _check_xy(x: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"{what}: codes must be (N, D) and states (N, S) with the same N, got {x.shape} and "
            f"{y.shape}"
        )
    if len(x) < 2:
        raise ValueError(f"{what}: need at least 2 samples, got {len(x)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError(f"{what}: codes and states must be finite")
    return x, y


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> RidgeProbe:
    """Ridge regression from codes ``(N, D)`` to states ``(N, S)`` on standardised codes.

    Solves ``(Xs^T Xs + alpha * I) W = Xs^T (y - mean(y))`` with ``Xs`` the standardised codes;
    ``alpha`` is in units of samples (it is not scaled with ``N``).
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    x, y = _check_xy(x, y, "fit_ridge")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    x_scale = x.std(axis=0)
    x_scale[x_scale < 1e-12] = 1.0
    xs = (x - x_mean) / x_scale
    gram = xs.T @ xs + alpha * np.eye(x.shape[1])
    weights = linalg.solve(gram, xs.T @ (y - y_mean), assume_a="pos")
    return RidgeProbe(x_mean, x_scale, weights, y_mean)


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column: ``1 - SS_res / SS_tot``, ``(N, S) -> (S,)``.

    A column that is constant in ``y_true`` gets NaN (nothing to explain).
    """
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    ss_res = ((y_true - y_pred) ** 2).sum(axis=0)
    ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12, 1.0 - ss_res / ss_tot, np.nan)


def probe_r2(
    train_codes: np.ndarray,
    train_states: np.ndarray,
    test_codes: np.ndarray,
    test_states: np.ndarray,
    alpha: float = 1.0,
) -> np.ndarray:
    """Fit on the training pairs, score on the held-out ones: R^2 per state factor ``(S,)``."""
    probe = fit_ridge(train_codes, train_states, alpha)
    test_codes, test_states = _check_xy(test_codes, test_states, "probe_r2 (held-out)")
    if test_codes.shape[1] != train_codes.shape[1] or test_states.shape[1] != train_states.shape[1]:
        raise ValueError(
            f"probe_r2: held-out codes/states {test_codes.shape}/{test_states.shape} do not match "
            f"the training ones {np.shape(train_codes)}/{np.shape(train_states)}"
        )
    return r2_score(test_states, probe.predict(test_codes))


def _frames_and_states(
    episodes: tuple[EpisodeInfo, ...], max_frames: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_frames`` (frame, state) pairs spread over ``episodes``."""
    rng = np.random.default_rng(seed)
    total = sum(e.n_frames for e in episodes)
    keep = min(1.0, max_frames / max(total, 1))
    frames, states = [], []
    for e in episodes:
        d = read_episode(e.path, keys=("frames", "states"))
        take = np.flatnonzero(rng.random(len(d["frames"])) < keep)
        frames.append(d["frames"][take])
        states.append(d["states"][take])
    return np.concatenate(frames), np.concatenate(states).astype(np.float32)


@dataclass(frozen=True)
class ProbeResult:
    """R^2 per state factor of one code, on ``n_test`` held-out frames."""

    names: tuple[str, ...]
    r2: np.ndarray
    n_train: int
    n_test: int

    def as_dict(self) -> dict[str, float | None]:
        return {
            n: (None if np.isnan(v) else float(v)) for n, v in zip(self.names, self.r2, strict=True)
        }


def probe_dataset(
    encode: Encode,
    dataset: EpisodeDataset,
    max_train_frames: int = 5_000,
    max_test_frames: int = 2_000,
    alpha: float = 1.0,
    seed: int = 0,
    batch_size: int = 256,
) -> ProbeResult:
    """R^2 of a ridge probe from ``encode(frames)`` to the recorded states, per factor.

    Fitted on the dataset's training episodes and scored on its validation episodes (held
    out by episode, so neighbouring frames of one episode never sit on both sides).

    Args:
        encode: uint8 frames ``(B, H, W, C)`` -> codes ``(B, D)``.
        dataset: a dataset collected with ``record_state``.

    Raises:
        ValueError: the dataset holds no states, or no validation episode.
    """
    names = dataset.state_names
    if names is None:
        raise ValueError(
            f"dataset {dataset.root} holds no env states; re-collect it with "
            "`worldvae collect ... --record-state` (classic control, MiniGrid, CarRacing)"
        )
    train, test = dataset.split("train"), dataset.split("val")
    if not train or not test:
        raise ValueError(
            f"dataset {dataset.root} needs training and validation episodes for a probe, has "
            f"{len(train)} and {len(test)}; collect more episodes"
        )

    def codes(frames: np.ndarray) -> np.ndarray:
        return np.concatenate(
            [
                np.asarray(encode(frames[i : i + batch_size]))
                for i in range(0, len(frames), batch_size)
            ]
        )

    x_tr, s_tr = _frames_and_states(train, max_train_frames, seed)
    x_te, s_te = _frames_and_states(test, max_test_frames, seed + 1)
    r2 = probe_r2(codes(x_tr), s_tr, codes(x_te), s_te, alpha)
    return ProbeResult(tuple(names), r2, len(x_tr), len(x_te))
