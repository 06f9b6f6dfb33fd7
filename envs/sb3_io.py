"""Loading stable-baselines3 zips without unpickling anything.

The algorithms the project trains, and their classes, are ``agents.algorithms``'s; here an SB3
class is found by its name alone (:func:`sb3_class`), to load any zip stable-baselines3 saved.

SB3 stores tensors as ``.pth`` (loaded with ``weights_only=True``) but some entries of its
``data`` JSON (spaces, schedules, policy kwargs) as cloudpickle. Passing every such entry as a
``custom_objects`` replacement means ``load`` never calls ``cloudpickle.loads``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym

SCHEDULE_KEYS = (
    "lr_schedule",
    "clip_range",
    "clip_range_vf",
    "exploration_schedule",
    "learning_rate",
)


def sb3_class(name: str) -> Any:
    """The stable-baselines3 algorithm class called ``name`` in any case (``ppo``: ``PPO``).

    Raises:
        ValueError: stable-baselines3 has no algorithm of that name (its names listed).
    """
    import stable_baselines3 as sb3
    from stable_baselines3.common.base_class import BaseAlgorithm

    classes = {
        c.__name__.lower(): c
        for c in vars(sb3).values()
        if isinstance(c, type) and issubclass(c, BaseAlgorithm)
    }
    if name.lower() not in classes:
        raise ValueError(f"unknown SB3 algorithm {name!r}; choose one of {tuple(sorted(classes))}")
    return classes[name.lower()]


def serialized_keys(path: str | Path) -> list[str]:
    """Entries of an SB3 zip's ``data`` that would be unpickled on a plain ``load``."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
        raise ValueError(f"{path} is not a stable-baselines3 model file ({e})") from e
    return [k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v]


def load_sb3(
    algo_class: Any,
    path: str | Path,
    observation_space: gym.Space,
    action_space: gym.Space,
    policy: str,
    policy_kwargs: dict[str, Any] | None = None,
    device: str = "auto",
) -> Any:
    """``algo_class.load(path)`` with every pickled entry replaced by a known object.

    Args:
        algo_class: e.g. ``stable_baselines3.PPO``.
        observation_space, action_space: the spaces the agent acts in (images channels-last,
            as the env gives them).
        policy: the policy it was built with, e.g. ``"CnnPolicy"`` or ``"MlpPolicy"``.
        policy_kwargs: the policy kwargs it was built with (classes allowed: they come from
            the caller's code, not from the file).
    """
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    # SB3 builds image policies on channels-first spaces (it wraps envs in VecTransposeImage).
    if (
        isinstance(observation_space, gym.spaces.Box)
        and is_image_space(observation_space)
        and not is_image_space_channels_first(observation_space)
    ):
        observation_space = VecTransposeImage.transpose_space(observation_space)
    replacements: dict[str, Any] = {
        "observation_space": observation_space,
        "action_space": action_space,
        "policy_kwargs": dict(policy_kwargs or {}),
        "policy_class": algo_class.policy_aliases[policy],
        # Off-policy algorithms (SAC, DQN) pickle their TrainFreq; any valid value rebuilds the
        # model, and only continued training would read it.
        "train_freq": 1,
    }
    custom: dict[str, Any] = {}
    for key in serialized_keys(path):
        if key == "train_freq":  # off-policy; the real value is in the agent's config
            from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

            custom[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
        elif key in replacements:
            custom[key] = replacements[key]
        elif key in SCHEDULE_KEYS:
            custom[key] = 0.0  # only used to continue training; evaluation does not read it
        else:  # e.g. rollout_buffer_class: None makes SB3 choose its default
            custom[key] = None
    return algo_class.load(str(path), device=device, custom_objects=custom)
