"""One episode on disk: a NumPy ``.npz`` archive, written atomically.

An episode of ``T`` steps holds

============  ===============  =======  ============================================
key           shape            dtype    meaning
============  ===============  =======  ============================================
frames        (T + 1, H, W, C)  uint8   observation before each step, plus the last
actions       (T, *A)           any     action taken at each step
rewards       (T,)              float32 reward after each step
terminated    (T,)              bool    episode ended by the environment
truncated     (T,)              bool    episode cut by a time limit
seed          ()                int64   seed the episode was reset with
states        (T + 1, S)        float32 optional: the env's true state at each frame
============  ===============  =======  ============================================

``states`` is present when the dataset was collected with ``record_state``; its factor names
are in the manifest (``state_names``).

Every member of the archive carries a CRC-32 that is checked when it is read, so a flipped
byte or a truncated file raises :class:`CorruptEpisodeError` naming the file. Archives are
read with ``allow_pickle=False``: an episode file never executes code.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldvae.atomic import atomic_path

EPISODE_KEYS = ("frames", "actions", "rewards", "terminated", "truncated", "seed")


class CorruptEpisodeError(RuntimeError):
    """An episode file cannot be read back intact."""


@dataclass(frozen=True)
class Episode:
    """A whole episode in memory; see the module docstring for shapes."""

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int
    states: np.ndarray | None = None

    def __post_init__(self) -> None:
        t = len(self.rewards)
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4:
            raise ValueError(
                f"Episode frames must be uint8 (T+1, H, W, C), got {self.frames.dtype} "
                f"{self.frames.shape}"
            )
        if len(self.frames) != t + 1:
            raise ValueError(
                f"Episode has {t} steps, so it needs {t + 1} frames, got {len(self.frames)}"
            )
        for name in ("actions", "terminated", "truncated"):
            if len(getattr(self, name)) != t:
                raise ValueError(
                    f"Episode {name} has length {len(getattr(self, name))}, expected {t}"
                )
        if self.states is not None and (
            self.states.dtype != np.float32 or self.states.ndim != 2 or len(self.states) != t + 1
        ):
            raise ValueError(
                f"Episode states must be float32 (T+1, S) = ({t + 1}, S), got "
                f"{self.states.dtype} {self.states.shape}"
            )

    @property
    def length(self) -> int:
        """Number of steps ``T``."""
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        """Sum of rewards."""
        return float(self.rewards.sum(dtype=np.float64))


def write_episode(path: str | Path, episode: Episode, compress: bool = True) -> None:
    """Write ``episode`` to ``path`` (``.npz``) atomically; a kill leaves no partial file."""
    save = np.savez_compressed if compress else np.savez
    members: dict[str, Any] = {
        "frames": episode.frames,
        "actions": episode.actions,
        "rewards": episode.rewards.astype(np.float32),
        "terminated": episode.terminated.astype(bool),
        "truncated": episode.truncated.astype(bool),
        "seed": np.int64(episode.seed),
    }
    if episode.states is not None:
        members["states"] = episode.states
    with atomic_path(path) as tmp:
        save(tmp, **members)


def _open(path: Path) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CorruptEpisodeError(
            f"episode file {path} is corrupt or truncated ({e}); delete it and re-run the "
            "collect command to re-collect it, or load with skip_corrupt=True"
        ) from e


def read_episode(path: str | Path, keys: tuple[str, ...] = EPISODE_KEYS) -> dict[str, np.ndarray]:
    """Read the given members of an episode file, verifying each one's CRC.

    Raises:
        CorruptEpisodeError: the file is truncated, fails its checksum, or lacks a member.
    """
    path = Path(path)
    with _open(path) as archive:
        missing = [k for k in keys if k not in archive.files]
        if missing:
            raise CorruptEpisodeError(f"episode file {path} lacks {missing}; it is not an episode")
        try:
            return {k: archive[k] for k in keys}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CorruptEpisodeError(
                f"episode file {path} is corrupt ({e}); delete it and re-run the collect command "
                "to re-collect it, or load with skip_corrupt=True"
            ) from e


def verify_episode(path: str | Path) -> None:
    """Check the CRC-32 of every member of an episode file (frames included) and that none
    of the required members is missing.

    Raises:
        CorruptEpisodeError: naming the file and the first member that fails.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member through its CRC check
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
        raise CorruptEpisodeError(
            f"episode file {path} is corrupt or truncated ({e}); re-run the collect command "
            "to re-collect it"
        ) from e
    if bad is not None:
        raise CorruptEpisodeError(
            f"episode file {path}: member {bad} fails its CRC check; re-run the collect command "
            "to re-collect it"
        )
    missing = [k for k in EPISODE_KEYS if f"{k}.npy" not in names]
    if missing:
        raise CorruptEpisodeError(f"episode file {path} lacks {missing}; it is not an episode")


def has_states(path: str | Path) -> bool:
    """Whether an episode file holds the optional ``states`` member."""
    with _open(Path(path)) as archive:
        return "states" in archive.files


def load_episode(path: str | Path) -> Episode:
    """Read a whole episode file into an :class:`Episode` (``states`` None when absent)."""
    keys = EPISODE_KEYS + (("states",) if has_states(path) else ())
    d = read_episode(path, keys)
    return Episode(
        frames=d["frames"],
        actions=d["actions"],
        rewards=d["rewards"],
        terminated=d["terminated"],
        truncated=d["truncated"],
        seed=int(d["seed"]),
        states=d.get("states"),
    )
