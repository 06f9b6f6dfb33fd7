"""envpool envs behind the project's two interfaces.

* :class:`EnvpoolEnv`: one env as a ``gymnasium.Env`` (what ``make_env(..., backend="envpool")``
  wraps with the usual preprocessing; the collector's workers use it).
* :class:`EnvpoolVecEnv`: ``n`` envs as one stable-baselines3 ``VecEnv``, stepped and
  preprocessed as a batch.

envpool resets an env on the step *after* it reports done, ignoring that step's action. Both
classes instead reset finished envs at once (envpool resets any subset of its envs), so every
transition belongs to one episode, as with gymnasium and ``SubprocVecEnv``.
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from envs.backends import EnvpoolTask, envpool_spaces, envpool_task, make_envpool
from envs.preprocessing import FrameTransform, apply_frame_spec
from worldvae.envspec import EnvSpec, as_frame_size


def _task_or_raise(env_id: str) -> EnvpoolTask:
    task = envpool_task(env_id)
    if task is None:
        raise ValueError(
            f"envpool cannot make {env_id!r} (not installed, or no equivalent env); "
            "use backend='gymnasium'"
        )
    return task


def _frame_space(pool: Any, task: EnvpoolTask) -> spaces.Box:
    shape = tuple(envpool_spaces(pool)[0].shape)
    if task.channels_first:
        shape = (*shape[1:], shape[0])
    return spaces.Box(0, 255, shape, np.uint8)


def _entropy_seed() -> int:
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
        self.task = _task_or_raise(env_id)
        self.max_episode_steps = max_episode_steps
        self.render_mode = "rgb_array"
        self._pool = make_envpool(self.task, [_entropy_seed()], max_episode_steps)
        self.observation_space = _frame_space(self._pool, self.task)
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


class EnvpoolVecEnv(VecEnv):
    """``n_envs`` envpool envs as an SB3 ``VecEnv`` with the ``make_env`` preprocessing.

    Frames go through the same :class:`~envs.preprocessing.FrameTransform` as
    ``make_env``'s wrapper, applied to the batch. ``frame_skip`` repeats each action, stepping
    only the envs whose episode is still running. When env ``i`` finishes, ``infos[i]`` holds
    ``terminal_observation`` (its last preprocessed frame) and ``TimeLimit.truncated``, and the
    returned observation is the first frame of its next episode. ``seed(s)`` seeds env ``i``
    with ``s + i`` at the next ``reset()``, as SB3's VecEnvs do.

    Args:
        env_id: a gymnasium id that envpool supports.
        n_envs: number of envs.
        frame_size, crop, grayscale, frame_skip, max_episode_steps: as for ``make_env``.
        seed: seed of env 0 at the first reset (env ``i`` gets ``seed + i``).

    Example:
        >>> venv = EnvpoolVecEnv("CarRacing-v3", 8, frame_size=64, crop=(0, 12, 0, 0))
        >>> venv.reset().shape
        (8, 64, 64, 3)
    """

    backend = "envpool"

    def __init__(
        self,
        env_id: str,
        n_envs: int,
        frame_size: int | tuple[int, int] = 64,
        crop: tuple[int, int, int, int] | None = None,
        grayscale: bool = False,
        frame_skip: int = 1,
        max_episode_steps: int | None = None,
        seed: int | None = None,
    ):
        if n_envs < 1:
            raise ValueError(f"EnvpoolVecEnv requires n_envs >= 1, got {n_envs}")
        if frame_skip < 1:
            raise ValueError(f"EnvpoolVecEnv requires frame_skip >= 1, got {frame_skip}")
        self.env_id = env_id
        self.task = _task_or_raise(env_id)
        self.frame_skip = frame_skip
        self.max_episode_steps = max_episode_steps
        self.render_mode = "rgb_array"
        first = seed if seed is not None else _entropy_seed()
        self._pool = make_envpool(self.task, [first + i for i in range(n_envs)], max_episode_steps)
        raw_space = _frame_space(self._pool, self.task)
        self.transform = FrameTransform(
            raw_space.shape,
            size=as_frame_size(frame_size),
            crop=crop,
            grayscale=grayscale,
        )
        super().__init__(
            n_envs,
            spaces.Box(0, 255, self.transform.out_shape, np.uint8),
            envpool_spaces(self._pool)[1],
        )
        self._raw = np.zeros((n_envs, *raw_space.shape), np.uint8)
        self._actions: np.ndarray | None = None
        self._needs_reset = False  # the pool is fresh: its first reset uses its seeds

    # ---- pool helpers -----------------------------------------------------------------------
    def _store(self, obs: np.ndarray, env_ids: np.ndarray) -> None:
        self._raw[env_ids] = np.moveaxis(obs, 1, -1) if self.task.channels_first else obs

    def _reset_ids(self, env_ids: np.ndarray) -> None:
        obs, info = self._pool.reset(env_ids.astype(np.int32))
        self._store(obs, np.asarray(info["env_id"]))

    # ---- VecEnv API -------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        if any(s is not None for s in self._seeds):
            base = _entropy_seed()
            seeds = [base + i if s is None else int(s) for i, s in enumerate(self._seeds)]
            self._pool.close()
            self._pool = make_envpool(self.task, seeds, self.max_episode_steps)
        self._reset_ids(np.arange(self.num_envs))
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.transform.batch(self._raw)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("EnvpoolVecEnv.step_wait called before step_async")
        n = self.num_envs
        rewards = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        running = np.arange(n)
        for _ in range(self.frame_skip):
            obs, reward, term, trunc, info = self._pool.step(
                self._actions[running], running.astype(np.int32)
            )
            ids = np.asarray(info["env_id"])
            self._store(obs, ids)
            rewards[ids] += reward
            terminated[ids] = term
            truncated[ids] = trunc
            running = np.sort(ids[~(term | trunc)])
            if len(running) == 0:
                break
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        done_ids = np.flatnonzero(dones)
        if len(done_ids):
            last = self.transform.batch(self._raw[done_ids])
            for j, i in enumerate(done_ids):
                infos[i]["terminal_observation"] = last[j]
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            self._reset_ids(done_ids)
        self._actions = None
        return self.transform.batch(self._raw), rewards, dones, infos

    def close(self) -> None:
        self._pool.close()

    def get_images(self) -> list[np.ndarray | None]:
        """The latest raw frames, one per env (before preprocessing)."""
        return [frame.copy() for frame in self._raw]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes are shared by all envs of a pool: the pool's own value for each."""
        return [getattr(self, attr_name) for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        raise AttributeError(
            f"EnvpoolVecEnv cannot call {method_name!r} per env: envpool's envs are C++ objects "
            "without Python methods; use backend='gymnasium' for env methods"
        )

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


def make_envpool_env(spec: EnvSpec) -> gym.Env:
    """One envpool env giving uint8 frames ``spec.frame_shape``: :class:`EnvpoolEnv` with the
    gymnasium backend's frame skip and preprocessing."""
    return apply_frame_spec(EnvpoolEnv(spec.env_id, spec.max_episode_steps), spec)


def make_envpool_vec_env(
    spec: EnvSpec, n_envs: int, seed: int | None = None, subprocess: bool = False
) -> VecEnv:
    """``n_envs`` envs as one :class:`EnvpoolVecEnv` (batched stepping and preprocessing;
    ``subprocess`` is not needed and ignored)."""
    del subprocess
    return EnvpoolVecEnv(
        spec.env_id,
        n_envs,
        frame_size=spec.frame_size,
        crop=spec.crop,
        grayscale=spec.grayscale,
        frame_skip=spec.frame_skip,
        max_episode_steps=spec.max_episode_steps,
        seed=seed,
    )
