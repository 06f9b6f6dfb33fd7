"""The dataset manifest: what was collected, how, and with which library versions."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from worldvae.atomic import write_json
from worldvae.envspec import EnvSpec
from worldvae.rundir import foreign_entries

MANIFEST_NAME = "manifest.json"
EPISODES_DIR = "episodes"
FORMAT_VERSION = 2  # 2: zstd-compressed episode members (worldvae.data.codecs); 1: zlib


_M = TypeVar("_M", bound="JsonManifest")


class JsonManifest:
    """Saving and loading for a frozen dataclass stored as one JSON file at a dataset's root.

    A subclass names its file (``FILE``), what a folder without it is not (``WHAT``), how to
    make one (``HOW``) and what a malformed file is not (``LABEL``); ``from_json`` builds it from
    the parsed file (its fields as keywords, unless a subclass converts some). Its ``versions``
    field is stored but is no part of its identity.
    """

    __dataclass_fields__: ClassVar[dict[str, Any]]
    FILE: ClassVar[str]
    WHAT: ClassVar[str]
    HOW: ClassVar[str]
    LABEL: ClassVar[str]
    versions: dict[str, str]

    def identity(self) -> dict[str, Any]:
        """The fields that must agree for a re-run to resume into the same directory."""
        d = asdict(self)
        d.pop("versions")
        return dict(json.loads(json.dumps(d)))

    def save(self, root: str | Path) -> None:
        write_json(Path(root) / self.FILE, self.identity() | {"versions": self.versions})

    @classmethod
    def from_json(cls: type[_M], d: dict[str, Any]) -> _M:
        """The manifest from its parsed file (a subclass converts fields JSON cannot hold)."""
        return cls(**d)

    @classmethod
    def load(cls: type[_M], root: str | Path) -> _M:
        path = Path(root) / cls.FILE
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a {cls.WHAT}: no {cls.FILE}; {cls.HOW}")
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (TypeError, KeyError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"{path} is not a valid {cls.LABEL} ({e})") from e


@dataclass(frozen=True)
class Manifest(JsonManifest):
    """Describes a dataset directory; stored as ``manifest.json`` at its root.

    Attributes:
        env_id: gymnasium id the frames come from.
        env_options: the ``make_env`` keyword arguments (frame size, crop, grayscale, ...).
        frame_shape: ``(H, W, C)`` of every stored frame.
        policy: the action policy's description (its name and parameters).
        seed: master seed; episode ``i`` is reset with ``episode_seed(seed, i)``.
        versions: library versions at collection time.
        state_names: names of the true-state factors stored per frame as ``states``, or None
            when the dataset holds no states.
    """

    env_id: str
    env_options: dict[str, Any]
    frame_shape: tuple[int, int, int]
    policy: dict[str, Any]
    seed: int
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    state_names: list[str] | None = None

    FILE: ClassVar[str] = MANIFEST_NAME
    WHAT: ClassVar[str] = "worldvae dataset"
    HOW: ClassVar[str] = "create one with `worldvae collect --env ENV --out DIR`"
    LABEL: ClassVar[str] = "dataset manifest"

    def __post_init__(self) -> None:
        shape = self.frame_shape
        sides = [n for n in shape if isinstance(n, int | np.integer) and not isinstance(n, bool)]
        if len(shape) != 3 or len(sides) != 3 or min(sides) < 1:
            raise ValueError(f"frame_shape must be (H, W, C) of positive integers, got {shape!r}")
        names = self.state_names
        if names is not None and not all(isinstance(n, str) for n in names):
            raise ValueError(f"state_names must be a list of names or null, got {names!r}")

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Manifest:
        d["frame_shape"] = tuple(d["frame_shape"])
        return cls(**d)

    @property
    def env_spec(self) -> EnvSpec:
        """The env spec the frames were made with (``env_id`` and ``env_options``)."""
        return EnvSpec.from_dict({"env_id": self.env_id, "env_options": self.env_options})


def episode_seed(master_seed: int, index: int) -> int:
    """Seed for episode ``index``, derived from the master seed (stable across runs)."""
    return int(np.random.SeedSequence([master_seed, index]).generate_state(1, dtype=np.uint32)[0])


EPISODE_NAME_FORM = "ep_NNNNNNN.npz"  # the one accepted form: the index in seven digits
_EPISODE_NAME = re.compile(r"ep_(\d+)\.npz")


class StrayEpisodeFileError(ValueError):
    """A dataset's ``episodes/`` folder holds names that are not episode files."""


def episode_filename(index: int) -> str:
    """The file name of episode ``index``: ``ep_0000012.npz`` (more digits past 9,999,999)."""
    return f"ep_{index:07d}.npz"


def is_episode_name(name: str) -> bool:
    """Whether ``name`` is exactly :func:`episode_filename` of some index: ``ep_1.npz`` and
    ``ep_0000001 copy.npz`` are not (the first would be read as a second episode 1)."""
    match = _EPISODE_NAME.fullmatch(name)
    return match is not None and name == episode_filename(int(match[1]))


def episode_index(path: str | Path) -> int:
    """Inverse of :func:`episode_filename`.

    Raises:
        ValueError: the name is not an episode file's.
    """
    name = Path(path).name
    if not is_episode_name(name):
        raise ValueError(f"{path} is not an episode file (they are named {EPISODE_NAME_FORM})")
    return int(name[3:-4])


def scan_episode_files(root: str | Path) -> tuple[list[Path], list[str]]:
    """The episode files of the dataset at ``root``, by index, and the other names in its
    ``episodes/`` folder (the temporaries of a killed writer and the lock file aside).

    Every command that reads or writes a dataset's episodes lists them here, so that collect,
    ``data verify``, ``data merge`` and training agree on which files are episodes.
    """
    folder = Path(root) / EPISODES_DIR
    episodes: list[Path] = []
    stray: list[str] = []
    for name in foreign_entries(folder, ()):
        path = folder / name
        if is_episode_name(name) and path.is_file():
            episodes.append(path)
        else:
            stray.append(name)
    return sorted(episodes, key=episode_index), stray


def stray_names_message(root: str | Path, stray: list[str]) -> str:
    """What is wrong with the ``stray`` names in ``root``'s ``episodes/`` folder, and the fix."""
    folder = Path(root) / EPISODES_DIR
    shown = ", ".join(repr(n) for n in stray[:5]) + (" ..." if len(stray) > 5 else "")
    return (
        f"{folder} holds {shown}, not named as an episode file is ({EPISODE_NAME_FORM}, e.g. "
        f"{episode_filename(1)}; nothing else belongs there); nothing was read: move "
        f"{'it' if len(stray) == 1 else 'them'} out of the folder"
    )


def list_episode_files(root: str | Path) -> list[Path]:
    """The episode files of the dataset at ``root``, by index (:func:`scan_episode_files`).

    Raises:
        StrayEpisodeFileError: ``episodes/`` holds other names (named, with the fix): a copy
            such as ``ep_0000001 copy.npz``, or ``ep_1.npz``, which would be episode 1 twice.
    """
    episodes, stray = scan_episode_files(root)
    if stray:
        raise StrayEpisodeFileError(stray_names_message(root, stray))
    return episodes
