"""A collected dataset directory: its manifest, its episodes, a stable train/validation split."""

from __future__ import annotations

import copy
import logging
import zlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from worldvae.data.episodes import (
    ArrayHeader,
    CorruptEpisodeError,
    check_episode,
    episode_layout,
    layout_problems,
    read_episode,
    read_headers,
    verify_episode,
)
from worldvae.data.manifest import (
    EPISODE_NAME_FORM,
    EPISODES_DIR,
    MANIFEST_NAME,
    Manifest,
    episode_filename,
    episode_index,
    list_episode_files,
    scan_episode_files,
)

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
    root: Path, skip_corrupt: bool, check: Callable[[Path], Any] | None = None
) -> tuple[list[tuple[Path, np.ndarray]], list[Path]]:
    """Each readable episode file of the dataset at ``root`` with its rewards, and the
    unreadable ones (logged and left out with ``skip_corrupt``). ``check(path)`` (e.g.
    :func:`~worldvae.data.episodes.check_episode`) runs first on every file.

    Raises:
        StrayEpisodeFileError: ``episodes/`` holds names that are not episode files'.
        CorruptEpisodeError: an unreadable file (or one ``check`` refuses, an
            :class:`~worldvae.data.episodes.InvalidEpisodeError`) and ``skip_corrupt`` is False.
    """
    readable: list[tuple[Path, np.ndarray]] = []
    corrupt: list[Path] = []
    for path in list_episode_files(root):
        try:
            if check is not None:
                check(path)
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

    Every episode file is checked against the manifest from its headers (frame shape, states,
    dtypes, one entry per step in every member) before anything trains on it.

    Raises:
        FileNotFoundError: ``root`` has no manifest.
        ValueError: the dataset holds no episode, or ``episodes/`` holds names that are not
            episode files' (a ``StrayEpisodeFileError``).
        CorruptEpisodeError: an episode file is unreadable or unusable (an
            ``InvalidEpisodeError``, naming the file and what is wrong) and ``skip_corrupt`` is
            False.
    """

    def __init__(self, root: str | Path, val_fraction: float = 0.1, skip_corrupt: bool = False):
        root = Path(root)
        m = Manifest.load(root)
        readable, corrupt = read_episode_rewards(
            root, skip_corrupt, lambda p: check_episode(p, m.frame_shape, m.state_names)
        )
        infos = [
            EpisodeInfo(path, episode_index(path), len(rewards), float(rewards.sum()))
            for path, rewards in readable
        ]
        if not infos:
            raise ValueError(
                f"dataset {root} holds no readable episode; collect some with "
                f"`worldvae collect --env {m.env_id} --out {root}`"
            )
        self._hold(root, m, infos, val_fraction, skip_corrupt, corrupt)

    def _hold(
        self,
        root: Path,
        manifest: Manifest,
        episodes: Sequence[EpisodeInfo],
        val_fraction: float,
        skip_corrupt: bool,
        corrupt: Sequence[Path] = (),
    ) -> None:
        """Set what every view of episodes holds; a subclass that reads another store (such
        as ``envs.minari_data.MinariEpisodeDataset``) calls this in place of ``__init__``."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = root
        self.manifest = manifest
        self.val_fraction = val_fraction
        self.skip_corrupt = skip_corrupt
        self.corrupt = list(corrupt)
        self.episodes: tuple[EpisodeInfo, ...] = tuple(episodes)
        self._val = validation_indices([e.index for e in self.episodes], val_fraction)

    def __str__(self) -> str:
        return str(self.root)

    def with_val_fraction(self, val_fraction: float) -> EpisodeDataset:
        """This dataset split with another validation share (nothing is read again)."""
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        view = copy.copy(self)
        view.val_fraction = val_fraction
        view._val = validation_indices([e.index for e in self.episodes], val_fraction)
        return view

    def read_frames(self, info: EpisodeInfo) -> np.ndarray:
        """The frames of one of this dataset's episodes, uint8 ``(T + 1, H, W, C)``.

        Raises:
            CorruptEpisodeError: the episode cannot be read.
        """
        return read_episode(info.path, keys=("frames",))["frames"]

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
            frames = self.read_frames(episodes[i])
            take = rng.choice(len(frames), size=min(per, len(frames)), replace=False)
            out.append(frames[np.sort(take)])
        return np.concatenate(out)[:n]


def open_dataset(
    data: str | Path | EpisodeDataset, val_fraction: float = 0.1, skip_corrupt: bool = False
) -> EpisodeDataset:
    """The dataset folder ``data`` opened, or the opened dataset ``data`` (one of another store,
    such as a Minari dataset) split with ``val_fraction``."""
    if isinstance(data, EpisodeDataset):
        return data.with_val_fraction(val_fraction)
    return EpisodeDataset(data, val_fraction=val_fraction, skip_corrupt=skip_corrupt)


@dataclass(frozen=True)
class VerifyReport:
    """What ``worldvae data verify`` found: the usable episode files, and every unusable entry
    (a path relative to the dataset, and what is wrong with it)."""

    intact: tuple[Path, ...]
    bad: tuple[tuple[str, str], ...]


def verify_dataset(root: str | Path) -> VerifyReport:
    """Read every episode file of the dataset at ``root`` through its checksums and check it
    against the manifest and the other episodes: names (:func:`scan_episode_files`), frame
    shape, states, dtypes, no Python objects, one entry per step in every member, the same
    action shape as most episodes. When every episode's frames disagree with the manifest
    alike, the manifest is what is named.

    Raises:
        FileNotFoundError, ValueError: ``root`` has no readable manifest.
    """
    root = Path(root)
    manifest = Manifest.load(root)
    episodes, stray = scan_episode_files(root)
    bad = [
        (
            f"{EPISODES_DIR}/{name}",
            f"not named as an episode file is ({EPISODE_NAME_FORM}, e.g. {episode_filename(1)}), "
            f"and no command reads the dataset while it is there: move it out of "
            f"{root / EPISODES_DIR}",
        )
        for name in stray
    ]
    headers: dict[Path, dict[str, ArrayHeader]] = {}
    for path in episodes:
        try:
            verify_episode(path)
            headers[path] = read_headers(path)
        except CorruptEpisodeError as e:
            bad.append((f"{EPISODES_DIR}/{path.name}", str(e)))
    frame_shape = _frame_shape_of_episodes(root, manifest, headers, bad)
    layout = episode_layout(frame_shape, manifest.state_names)
    fine: dict[Path, dict[str, ArrayHeader]] = {}
    for path, h in headers.items():
        problems = layout_problems(h, layout)
        if problems:
            bad.append((f"{EPISODES_DIR}/{path.name}", "; ".join(problems)))
        else:
            fine[path] = h
    bad += _odd_actions(fine)
    odd = {name for name, _ in bad}
    intact = tuple(p for p in fine if f"{EPISODES_DIR}/{p.name}" not in odd)
    return VerifyReport(intact, tuple(bad))


def _frame_shape_of_episodes(
    root: Path,
    manifest: Manifest,
    headers: dict[Path, dict[str, ArrayHeader]],
    bad: list[tuple[str, str]],
) -> tuple[int, ...]:
    """The frame shape to check the episodes against: the manifest's, unless every episode
    holds frames of one other (H, W, C); then the manifest is added to ``bad``."""
    framed = [h["frames"][0][1:] for h in headers.values() if "frames" in h]
    shapes = set(framed)
    if not headers or len(framed) != len(headers) or len(shapes) != 1:
        return tuple(manifest.frame_shape)
    (shape,) = shapes
    if shape == tuple(manifest.frame_shape) or len(shape) != 3:
        return tuple(manifest.frame_shape)
    bad.insert(
        0,
        (
            MANIFEST_NAME,
            f"{root / MANIFEST_NAME} says frame_shape {tuple(manifest.frame_shape)}, but every "
            f"episode holds frames of {shape}: the manifest is wrong; restore it, or re-collect "
            "the dataset",
        ),
    )
    return shape


def _per_step(trailing: tuple[int, ...]) -> str:
    """``(T, 3)`` for entries of shape ``(3,)``, ``(T,)`` for single values."""
    return f"(T, {', '.join(map(str, trailing))})" if trailing else "(T,)"


def _odd_actions(headers: dict[Path, dict[str, ArrayHeader]]) -> list[tuple[str, str]]:
    """The episodes whose actions differ in shape per step or dtype kind from most episodes'
    (which is what the env's action space gives)."""
    found = {p: (h["actions"][0][1:], h["actions"][1].kind) for p, h in headers.items()}
    values = list(found.values())
    if len(set(values)) < 2:
        return []
    usual = max(set(values), key=values.count)
    return [
        (
            f"{EPISODES_DIR}/{p.name}",
            f"actions have shape {_per_step(shape)} and dtype kind {kind!r}, those of most "
            f"episodes {_per_step(usual[0])} and {usual[1]!r}",
        )
        for p, (shape, kind) in found.items()
        if (shape, kind) != usual
    ]
