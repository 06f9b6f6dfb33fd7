"""One envpool env as a ``gymnasium.Env``, without stable-baselines3 (nor torch through it).

:class:`EnvpoolEnv` is what ``make_env(..., backend="envpool")`` wraps with the usual
preprocessing (:func:`make_envpool_env`); the collector's workers use it, so importing this
module stays light. The batched SB3 ``VecEnv`` (:class:`~envs.envpool_env.EnvpoolVecEnv`) lives
in :mod:`envs.envpool_env` and shares the helpers here: the envpool task of a gymnasium id,
the frame space of a pool, the cores available and fresh seeds.

envpool resets an env on the step *after* it reports done, ignoring that step's action;
:class:`EnvpoolEnv` gives gymnasium's API instead, where the caller resets a finished env.
"""

from __future__ import annotations

import os
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.backends import EnvpoolTask, envpool_spaces, envpool_task, make_envpool
from envs.preprocessing import apply_frame_spec
from worldvae.envspec import EnvSpec


def task_or_raise(env_id: str) -> EnvpoolTask:
    """The envpool equivalent of ``env_id``.

    Raises:
        ValueError: envpool is not installed or has no equivalent env.
    """
    task = envpool_task(env_id)
    if task is None:
        raise ValueError(
            f"envpool cannot make {env_id!r} (not installed, or no equivalent env); "
            "use backend='gymnasium'"
        )
    return task


def frame_space(pool: Any, task: EnvpoolTask) -> spaces.Box:
    """The uint8 ``(H, W, C)`` space of one raw frame of ``pool`` (channels moved last for
    tasks whose frames come channels first)."""
    shape = tuple(envpool_spaces(pool)[0].shape)
    if task.channels_first:
        shape = (*shape[1:], shape[0])
    return spaces.Box(0, 255, shape, np.uint8)


def available_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def entropy_seed() -> int:
    """A fresh seed from the operating system's entropy (uint32 range)."""
    return int(np.random.SeedSequence().generate_state(1)[0])


class EnvpoolEnv(gym.Env):
    """One envpool env with gymnasium's API and raw uint8 frames ``(H, W, C)``.

    ``reset(seed=s)`` starts a fresh pool seeded with ``s`` (making one takes milliseconds),
    so the same seed gives the same episode; ``reset()`` continues the env's own stream.

    Args:
        env_id: a gymnasium id that envpool supports (``CarRacing-v3``, ``ALE/Pong-v5``, ...).
        max_episode_steps: the time limit (envpool's default otherwise).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"]}  # noqa: RUF012
    backend = "envpool"

    def __init__(self, env_id: str, max_episode_steps: int | None = None):
        self.task = task_or_raise(env_id)
        self.max_episode_steps = max_episode_steps
        self.render_mode = "rgb_array"
        self._pool = make_envpool(self.task, [entropy_seed()], max_episode_steps)
        self.observation_space = frame_space(self._pool, self.task)
        self.action_space = envpool_spaces(self._pool)[1]
        self._frame: np.ndarray | None = None

    def _frame_of(self, obs: np.ndarray) -> np.ndarray:
        frame = np.moveaxis(obs[0], 0, -1) if self.task.channels_first else obs[0]
        self._frame = np.ascontiguousarray(frame)
        return self._frame

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._pool.close()
            self._pool = make_envpool(self.task, [seed], self.max_episode_steps)
        obs, _ = self._pool.reset()
        return self._frame_of(obs), {}

    def step(self, action: Any) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, _ = self._pool.step(np.asarray(action)[None])
        return self._frame_of(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self) -> np.ndarray | None:
        return self._frame

    def close(self) -> None:
        self._pool.close()


def make_envpool_env(spec: EnvSpec) -> gym.Env:
    """One envpool env giving uint8 frames ``spec.frame_shape``: :class:`EnvpoolEnv` with the
    gymnasium backend's frame skip and preprocessing."""
    return apply_frame_spec(EnvpoolEnv(spec.env_id, spec.max_episode_steps), spec)
