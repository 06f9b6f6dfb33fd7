"""The dataset manifest: what was collected, how, and with which library versions."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worldvae.atomic import write_json

MANIFEST_NAME = "manifest.json"
EPISODES_DIR = "episodes"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Manifest:
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

    def identity(self) -> dict[str, Any]:
        """The fields that must agree for a re-run to resume into the same directory."""
        d = asdict(self)
        d.pop("versions")
        d["frame_shape"] = list(self.frame_shape)
        return json.loads(json.dumps(d))

    def save(self, root: str | Path) -> None:
        write_json(Path(root) / MANIFEST_NAME, self.identity() | {"versions": self.versions})

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{root} is not a worldvae dataset: no {MANIFEST_NAME}; create one with "
                "`worldvae collect --env ENV --out DIR`"
            )
        try:
            d = json.loads(path.read_text())
            d["frame_shape"] = tuple(d["frame_shape"])
            return cls(**d)
        except (json.JSONDecodeError, TypeError, KeyError) as e:
            raise ValueError(f"{path} is not a valid dataset manifest ({e})") from e


def episode_seed(master_seed: int, index: int) -> int:
    """Seed for episode ``index``, derived from the master seed (stable across runs)."""
    return int(np.random.SeedSequence([master_seed, index]).generate_state(1, dtype=np.uint32)[0])


def episode_filename(index: int) -> str:
    return f"ep_{index:07d}.npz"


def episode_index(path: str | Path) -> int:
    """Inverse of :func:`episode_filename`."""
    return int(Path(path).stem.split("_")[1])
