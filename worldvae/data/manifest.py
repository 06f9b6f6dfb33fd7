"""The dataset manifest: what was collected, how, and with which library versions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from worldvae.atomic import write_json
from worldvae.envspec import EnvSpec

MANIFEST_NAME = "manifest.json"
EPISODES_DIR = "episodes"
FORMAT_VERSION = 1


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
        except (json.JSONDecodeError, TypeError, KeyError) as e:
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


def episode_filename(index: int) -> str:
    return f"ep_{index:07d}.npz"


def episode_index(path: str | Path) -> int:
    """Inverse of :func:`episode_filename`."""
    return int(Path(path).stem.split("_")[1])
