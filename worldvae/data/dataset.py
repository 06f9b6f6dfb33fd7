"""A collected dataset directory: its manifest, its episodes, a stable train/validation split."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np

from worldvae.data.episodes import CorruptEpisodeError, read_episode
from worldvae.data.manifest import EPISODES_DIR, Manifest, episode_index

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "all"]


@dataclass(frozen=True)
class EpisodeInfo:
    """Summary of one episode file (read without decompressing its frames)."""

    path: Path
    index: int
    length: int
    episode_return: float

    @property
    def n_frames(self) -> int:
        return self.length + 1


def _split_key(index: int) -> float:
    """A number in [0, 1) fixed by the episode index alone, so the split never moves."""
    return zlib.crc32(f"episode-{index}".encode()) / 2**32


def validation_indices(indices: Collection[int], val_fraction: float) -> frozenset[int]:
    """The episode indices held out for validation: those whose key falls below
    ``val_fraction``, at least one where the fraction is positive, none of fewer than two."""
    if val_fraction == 0 or len(indices) < 2:
        return frozenset()
    keys = {i: _split_key(i) for i in indices}
    val = {i for i, k in keys.items() if k < val_fraction}
    if not val:  # tiny datasets: still hold one episode out, the one with the smallest key
        val = {min(keys, key=keys.__getitem__)}
    return frozenset(val)


class _Indexed(Protocol):
    @property
    def index(self) -> int: ...


_E = TypeVar("_E", bound=_Indexed)


def split_episodes(episodes: tuple[_E, ...], val: frozenset[int], which: Split) -> tuple[_E, ...]:
    """Episodes of one split: ``"train"``, ``"val"`` (indices in ``val``) or ``"all"``."""
    if which == "all":
        return episodes
    if which not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {which!r}")
    want_val = which == "val"
    return tuple(e for e in episodes if (e.index in val) == want_val)


def read_episode_rewards(
    root: Path, skip_corrupt: bool
) -> tuple[list[tuple[Path, np.ndarray]], list[Path]]:
    """Each readable episode file of the dataset at ``root`` with its rewards, and the
    unreadable ones (logged and left out with ``skip_corrupt``).

    Raises:
        CorruptEpisodeError: an unreadable file and ``skip_corrupt`` is False.
    """
    readable: list[tuple[Path, np.ndarray]] = []
    corrupt: list[Path] = []
    for path in sorted((root / EPISODES_DIR).glob("ep_*.npz")):
        try:
            readable.append((path, read_episode(path, keys=("rewards",))["rewards"]))
        except CorruptEpisodeError as e:
            if not skip_corrupt:
                raise
            logger.warning("skipping %s", e)
            corrupt.append(path)
    return readable, corrupt


class EpisodeDataset:
    """Read-only view of a dataset directory written by the collector.

    Args:
        root: dataset directory (holds ``manifest.json`` and ``episodes/``).
        val_fraction: share of episodes kept for validation. Membership is decided per episode
            from its index alone, so it is the same on every machine and does not change when
            more episodes are collected.
        skip_corrupt: log and drop unreadable episode files instead of raising.

    Raises:
        FileNotFoundError: ``root`` has no manifest.
        ValueError: the dataset holds no episode.
        CorruptEpisodeError: an episode file is unreadable and ``skip_corrupt`` is False.
    """

    def __init__(self, root: str | Path, val_fraction: float = 0.1, skip_corrupt: bool = False):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = Path(root)
        self.manifest = Manifest.load(self.root)
        self.val_fraction = val_fraction
        self.skip_corrupt = skip_corrupt
        readable, self.corrupt = read_episode_rewards(self.root, skip_corrupt)
        infos = [
            EpisodeInfo(path, episode_index(path), len(rewards), float(rewards.sum()))
            for path, rewards in readable
        ]
        if not infos:
            raise ValueError(
                f"dataset {self.root} holds no readable episode; collect some with "
                f"`worldvae collect --env {self.manifest.env_id} --out {self.root}`"
            )
        self.episodes: tuple[EpisodeInfo, ...] = tuple(infos)
        self._val = validation_indices([e.index for e in infos], val_fraction)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return self.manifest.frame_shape

    @property
    def state_names(self) -> tuple[str, ...] | None:
        """Names of the per-frame true-state factors, or None when no states were recorded."""
        names = self.manifest.state_names
        return tuple(names) if names is not None else None

    def split(self, which: Split) -> tuple[EpisodeInfo, ...]:
        """Episodes of one split: ``"train"``, ``"val"`` or ``"all"``."""
        return split_episodes(self.episodes, self._val, which)

    def n_frames(self, which: Split = "all") -> int:
        return sum(e.n_frames for e in self.split(which))

    def stats(self) -> dict[str, float]:
        """Counts and return statistics over all episodes."""
        returns = np.array([e.episode_return for e in self.episodes])
        lengths = np.array([e.length for e in self.episodes])
        return {
            "episodes": len(self.episodes),
            "frames": int(self.n_frames()),
            "train_episodes": len(self.split("train")),
            "val_episodes": len(self.split("val")),
            "length_mean": float(lengths.mean()),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
        }

    def sample_frames(self, n: int, seed: int = 0, which: Split = "all") -> np.ndarray:
        """``n`` frames drawn evenly from random episodes: ``(n, H, W, C)`` uint8."""
        rng = np.random.default_rng(seed)
        episodes = list(self.split(which)) or list(self.episodes)
        chosen = rng.choice(len(episodes), size=min(n, len(episodes)), replace=False)
        per = int(np.ceil(n / len(chosen)))
        out: list[np.ndarray] = []
        for i in chosen:
            frames = read_episode(episodes[i].path, keys=("frames",))["frames"]
            take = rng.choice(len(frames), size=min(per, len(frames)), replace=False)
            out.append(frames[np.sort(take)])
        return np.concatenate(out)[:n]
