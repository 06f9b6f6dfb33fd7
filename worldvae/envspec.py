"""The env spec: which env, through which backend, and how its frames are made.

It is made once, where a run starts (a collection, an agent without a model), with its backend
resolved there; recorded when frames are collected (the dataset manifest), copied into every
model trained on those frames (``extra_info.data`` of the model's ``config.json``, and into the
control encoders built from it) and read back by every agent that uses the model, and by the
pixel arm of a comparison, so the VAE and every agent see the same frames. Plain data: the core
stores and compares it; ``envs`` builds envs from it (``envs.make_env(spec)``).

On disk a spec is ``{"env_id": ..., "env_options": {...}}`` (:meth:`EnvSpec.to_dict`), the
format every stored dataset, model and agent uses.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worldvae.config_fields import check_ranges, option

# The limits on the frame options. Frames are held whole in memory; beyond MAX_FRAME_SIZE a
# side, a frame of one episode fills gigabytes.
MIN_FRAME_SIZE, MAX_FRAME_SIZE = 8, 1024
MAX_FRAME_SKIP = 1000
MAX_EPISODE_STEPS = 10**9

# Fields an agent may set apart from the recorded spec: they do not change what a frame looks
# like (agents often play longer episodes than the random data was collected with, and a
# backend's frames differ only slightly: a mismatch warns, see ``envs.backends``).
FREE_FIELDS = frozenset({"max_episode_steps", "backend"})
# A record written before backends existed holds no backend: its frames came from gymnasium.
RECORDED_DEFAULT_BACKEND = "gymnasium"


def as_frame_size(value: Any) -> tuple[int, int]:
    """``64`` -> ``(64, 64)``; ``[64, 48]`` -> ``(64, 48)``."""
    if isinstance(value, bool):
        raise ValueError(f"frame_size must be an int or (height, width), got {value!r}")
    if isinstance(value, int) or (hasattr(value, "__index__") and not hasattr(value, "__len__")):
        return (int(value), int(value))
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"frame_size must be an int or (height, width), got {value!r}")
    return (int(value[0]), int(value[1]))


def _crop(value: Any) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 4:
        raise ValueError(f"crop must be (top, bottom, left, right), got {value!r}")
    top, bottom, left, right = (int(v) for v in value)
    return (top, bottom, left, right)


@dataclass(frozen=True)
class EnvSpec:
    """Where frames come from and how they are made.

    ``frame_size`` may be given as one int (square frames) and ``crop`` as a list: both are
    held as tuples. ``backend`` ``"auto"`` means "not chosen yet": ``envs.resolve_spec`` picks
    the one that will run, once, where the spec is made.
    """

    env_id: str
    frame_size: tuple[int, int] = option(
        (64, 64), "frame height and width", MIN_FRAME_SIZE, MAX_FRAME_SIZE
    )
    crop: tuple[int, int, int, int] | None = option(
        None, "pixels off TOP,BOTTOM,LEFT,RIGHT before resizing", 0, MAX_FRAME_SIZE * 8
    )
    grayscale: bool = option(False, "one channel instead of RGB")
    frame_skip: int = option(1, "repeat each action N times (rewards summed)", 1, MAX_FRAME_SKIP)
    max_episode_steps: int | None = option(
        None, "override the env's time limit", 1, MAX_EPISODE_STEPS
    )
    env_kwargs: Mapping[str, Any] = option(
        default_factory=dict, help="passed to gym.make, e.g. domain_randomize=true"
    )
    backend: str = option(
        "auto",
        "library that steps the env: envpool (C++, CarRacing-v3 and Atari, several times "
        "faster) or gymnasium (the reference); auto: envpool where installed and able "
        "(``envs.backends.ENV_BACKENDS`` lists them)",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ValueError(f"env_id must be a non-empty string, got {self.env_id!r}")
        if not isinstance(self.env_kwargs, Mapping):
            raise ValueError(f"env_kwargs must be a mapping, got {self.env_kwargs!r}")
        object.__setattr__(self, "frame_size", as_frame_size(self.frame_size))
        object.__setattr__(self, "crop", _crop(self.crop))
        object.__setattr__(self, "grayscale", bool(self.grayscale))
        object.__setattr__(self, "frame_skip", int(self.frame_skip))
        if self.max_episode_steps is not None:
            object.__setattr__(self, "max_episode_steps", int(self.max_episode_steps))
        object.__setattr__(self, "env_kwargs", json.loads(json.dumps(dict(self.env_kwargs))))
        check_ranges(self)

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def channels(self) -> int:
        """Channels of a frame: 1 for grayscale, else 3."""
        return 1 if self.grayscale else 3

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        """The shape of one frame, ``(H, W, C)``."""
        return (*self.frame_size, self.channels)

    def options(self) -> dict[str, Any]:
        """The options as recorded on disk (``env_options``): JSON-ready, lists for tuples."""
        return {
            "frame_size": list(self.frame_size),
            "crop": list(self.crop) if self.crop is not None else None,
            "grayscale": self.grayscale,
            "frame_skip": self.frame_skip,
            "max_episode_steps": self.max_episode_steps,
            "env_kwargs": dict(self.env_kwargs),
            "backend": self.backend,
        }

    def to_dict(self) -> dict[str, Any]:
        """``{"env_id": ..., "env_options": {...}}``, the on-disk form."""
        return {"env_id": self.env_id, "env_options": self.options()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnvSpec:
        """The spec in a record: ``{"env_id", "env_options"}`` (a manifest, a model's
        ``extra_info.data``, an agent's config).

        This is the one place old records are read: options missing from ``env_options`` take
        their defaults, and a record without a backend (written before backends existed) means
        gymnasium.

        Raises:
            ValueError: not a spec record, or an option out of range or unknown.
        """
        if not isinstance(d, Mapping) or "env_id" not in d:
            raise ValueError(f"not an env spec record (no env_id): {d!r}")
        options = d.get("env_options") or {}
        if not isinstance(options, Mapping):
            raise ValueError(f"env_options must be a mapping, got {options!r}")
        unknown = sorted(set(options) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown env options {unknown}; known: {sorted(field_names())}")
        values = {"backend": RECORDED_DEFAULT_BACKEND} | dict(options)
        return cls(str(d["env_id"]), **values)

    @classmethod
    def from_record(cls, d: Any) -> EnvSpec | None:
        """:meth:`from_dict` for a record that may hold no spec (None then)."""
        if not isinstance(d, Mapping) or "env_id" not in d or "env_options" not in d:
            return None
        return cls.from_dict(d)

    def replace(self, **changes: Any) -> EnvSpec:
        """A copy with ``changes`` (field names) applied; None values are "not given"."""
        given = {k: v for k, v in changes.items() if v is not None}
        unknown = sorted(set(given) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown env spec fields {unknown}; known: {sorted(field_names())}")
        return dataclasses.replace(self, **given)

    def conflicts(self, given: Mapping[str, Any] | None) -> list[str]:
        """What ``given`` (explicit choices, field names to values) contradicts, one line each.

        Fields in :data:`FREE_FIELDS` never conflict. The env id is not compared: a model of
        another env is refused, or allowed, by ``agents.preflight``.
        """
        problems = []
        for key, value in sorted((given or {}).items()):
            if key in FREE_FIELDS or value is None:
                continue
            recorded = getattr(self, key)
            wanted = getattr(self.replace(**{key: value}), key)
            if wanted != recorded:
                problems.append(f"{key}: recorded {_show(recorded)}, given {_show(wanted)}")
        return problems

    def resolve(self, given: Mapping[str, Any] | None, recorded_in: str) -> EnvSpec:
        """This recorded spec with the free fields of ``given`` applied.

        Raises:
            ValueError: a given field contradicts the spec; names both values and
                ``recorded_in`` (where the spec comes from).
        """
        problems = self.conflicts(given)
        if problems:
            raise ValueError(
                f"the env spec recorded in {recorded_in} disagrees with what was given ("
                + "; ".join(problems)
                + "): every arm must see the frames the model was trained on; drop the "
                "conflicting options, or collect data and train a model with them"
            )
        free = {k: v for k, v in (given or {}).items() if k in FREE_FIELDS}
        return self.replace(**free)


def field_names() -> tuple[str, ...]:
    """The option fields of :class:`EnvSpec` (all but ``env_id``)."""
    return tuple(f.name for f in dataclasses.fields(EnvSpec) if f.name != "env_id")


def _show(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def read_env_spec(model_dir: str | os.PathLike[str]) -> EnvSpec | None:
    """The env spec a model directory records (None for a model saved without one).

    ``model_dir`` may be a ``train-vae`` run directory (its best checkpoint is read).
    """
    # Imported here: the model package loads torch, which a spec alone never needs.
    from worldvae.vae.io import CONFIG_NAME, resolve_model_dir

    try:  # read as JSON: a PCA encoder's config is not an autoencoder's
        d = json.loads((resolve_model_dir(model_dir) / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return EnvSpec.from_record(d.get("extra_info", {}).get("data", {}))
