"""The env spec: which env, through which backend, with which ``make_env`` options.

It is recorded once, when frames are collected (the dataset manifest), copied into every model
trained on those frames (``extra_info.data`` of the model's ``config.json``, and into the
control encoders built from it) and read back by every agent that uses the model, and by the
pixel arm of a comparison, so the VAE and every agent see the same frames. Plain data: the core
stores and compares it; ``envs`` builds envs from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from worldvae.vae.io import CONFIG_NAME, resolve_model_dir

# Options an agent may set apart from the recorded spec: they do not change what a frame looks
# like (agents often play longer episodes than the random data was collected with, and a
# backend's frames differ only slightly: a mismatch warns, see ``envs.backends``).
FREE_OPTIONS = frozenset({"max_episode_steps", "backend"})


def _canonical(value: Any) -> Any:
    """JSON round trip: tuples become lists, so recorded and given values compare equal."""
    return json.loads(json.dumps(value))


def _normal(key: str, value: Any) -> Any:
    """An option as recorded: a square ``frame_size`` given as one int becomes ``[n, n]``."""
    if key == "frame_size" and isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return _canonical(value)


@dataclass(frozen=True)
class EnvSpec:
    """Where frames come from.

    Attributes:
        env_id: the registered id, e.g. ``"CarRacing-v3"``.
        options: the ``make_env`` keyword arguments (frame size, crop, grayscale, frame skip,
            time limit, ``env_kwargs``, ``backend``), JSON-ready.
    """

    env_id: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EnvSpec | None:
        """The spec in a record (a model's ``extra_info.data``); None when it holds none."""
        if not isinstance(d, dict) or "env_id" not in d or "env_options" not in d:
            return None
        return cls(str(d["env_id"]), dict(d["env_options"]))

    def conflicts(self, options: dict[str, Any] | None) -> list[str]:
        """What ``options`` (explicit choices) contradict, one line each.

        Options in :data:`FREE_OPTIONS` and options this spec does not record never conflict.
        The env id is not compared: a model of another env is refused, or allowed, by
        ``agents.preflight``.
        """
        problems = []
        recorded = _canonical(self.options)
        for key, value in sorted((options or {}).items()):
            if key in FREE_OPTIONS or key not in recorded:
                continue
            given = _normal(key, value)
            if given != _normal(key, recorded[key]):
                problems.append(f"{key}: recorded {recorded[key]!r}, given {given!r}")
        return problems

    def resolve(self, options: dict[str, Any] | None, recorded_in: str) -> dict[str, Any]:
        """The recorded options with the free ones of ``options`` applied.

        Raises:
            ValueError: an option contradicts the spec; names both values and ``recorded_in``
                (where the spec comes from).
        """
        problems = self.conflicts(options)
        if problems:
            raise ValueError(
                f"the env spec recorded in {recorded_in} disagrees with what was given ("
                + "; ".join(problems)
                + "): every arm must see the frames the model was trained on; drop the "
                "conflicting options, or collect data and train a model with them"
            )
        free = {k: _normal(k, v) for k, v in (options or {}).items() if k in FREE_OPTIONS}
        return dict(_canonical(self.options)) | free


def read_env_spec(model_dir: str | os.PathLike[str]) -> EnvSpec | None:
    """The env spec a model directory records (None for a model saved without one).

    ``model_dir`` may be a ``train-vae`` run directory (its best checkpoint is read).
    """
    try:  # read as JSON: a PCA encoder's config is not an autoencoder's
        d = json.loads((resolve_model_dir(model_dir) / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return EnvSpec.from_dict(d.get("extra_info", {}).get("data", {}))
