"""envpool envs behind the project's two interfaces.

* :class:`~envs.envpool_single.EnvpoolEnv`: one env as a ``gymnasium.Env`` (what
  ``make_env(..., backend="envpool")`` wraps with the usual preprocessing; the collector's
  workers use it). It is defined in :mod:`envs.envpool_single`, which needs no
  stable-baselines3, and named here too.
* :class:`EnvpoolVecEnv`: ``n`` envs as one stable-baselines3 ``VecEnv``, stepped and
  preprocessed as a batch.

envpool resets an env on the step *after* it reports done, ignoring that step's action. Both
classes instead reset finished envs at once (envpool resets any subset of its envs), so every
transition belongs to one episode, as with gymnasium and ``SubprocVecEnv``.

``EnvpoolVecEnv(..., async_step=True)`` steps the same envs through envpool's async API: each
env goes on to its next frame-skip step (or its reset) as soon as its previous one returns,
with no wait for the slowest env of the batch, and envs whose step is over can be handed to
a frame consumer (:class:`~envs.preprocessing.FrameChunkSource`) while the others still step,
so that :class:`~envs.latent.VecLatentObservation` can encode some envs' frames while
envpool's threads step the others. Every env has its own seed and random stream, so both
modes give the same transitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

from envs.backends import envpool_spaces, make_envpool
from envs.envpool_single import (
    EnvpoolEnv,
    available_cores,
    entropy_seed,
    frame_space,
    make_envpool_env,
    task_or_raise,
)
from envs.preprocessing import FrameChunk, FrameConsumer, FrameTransform
from worldvae.envspec import EnvSpec, as_frame_size

__all__ = [
    "EnvpoolEnv",
    "EnvpoolVecEnv",
    "available_cores",
    "make_envpool_env",
    "make_envpool_vec_env",
]


@dataclass
class _StepResult:
    """What one ``step_wait`` gathers: per-env rewards, flags and infos ``(N,)``, the
    preprocessed observations ``(N, h, w, C)``, and room for the raw terminal frames
    ``(N, H, W, C)`` (a buffer the VecEnv reuses)."""

    obs: np.ndarray
    terminal_raw: np.ndarray
    rewards: np.ndarray = field(init=False)
    terminated: np.ndarray = field(init=False)
    truncated: np.ndarray = field(init=False)
    infos: list[dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.obs)
        self.rewards = np.zeros(n, np.float32)
        self.terminated = np.zeros(n, bool)
        self.truncated = np.zeros(n, bool)
        self.infos = [{} for _ in range(n)]

    def record(self, env_ids: np.ndarray | int, reward: Any, term: Any, trunc: Any) -> None:
        """Add a (sub)step's rewards and take its flags, for ``env_ids`` ``(K,)`` or one env."""
        self.rewards[env_ids] += reward
        self.terminated[env_ids] = term
        self.truncated[env_ids] = trunc


class EnvpoolVecEnv(VecEnv):
    """``n_envs`` envpool envs as an SB3 ``VecEnv`` with the ``make_env`` preprocessing.

    Frames go through the same :class:`~envs.preprocessing.FrameTransform` as
    ``make_env``'s wrapper, applied to the batch. ``frame_skip`` repeats each action, stepping
    only the envs whose episode is still running. When env ``i`` finishes, ``infos[i]`` holds
    ``terminal_observation`` (its last preprocessed frame) and ``TimeLimit.truncated``, and the
    returned observation is the first frame of its next episode. ``seed(s)`` seeds env ``i``
    with ``s + i`` at the next ``reset()``, as SB3's VecEnvs do.

    With ``async_step`` the pool is stepped env by env through envpool's async API (same
    transitions) and, inside :meth:`frame_consumer`, finished envs are handed on in chunks
    while the others still step. Without it the envs step as one batch and the consumer gets
    them all at once.

    Args:
        env_id: a gymnasium id that envpool supports.
        n_envs: number of envs.
        frame_size, crop, grayscale, frame_skip, max_episode_steps: as for ``make_env``.
        seed: seed of env 0 at the first reset (env ``i`` gets ``seed + i``).
        async_step: step through envpool's async API (see above).
        num_threads: envpool's worker threads (None: one per core available to the process).

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
        async_step: bool = False,
        num_threads: int | None = None,
    ):
        if n_envs < 1:
            raise ValueError(f"EnvpoolVecEnv requires n_envs >= 1, got {n_envs}")
        if frame_skip < 1:
            raise ValueError(f"EnvpoolVecEnv requires frame_skip >= 1, got {frame_skip}")
        self.env_id = env_id
        self.task = task_or_raise(env_id)
        self.frame_skip = frame_skip
        self.max_episode_steps = max_episode_steps
        self.render_mode = "rgb_array"
        self.async_step = async_step
        self.num_threads = available_cores() if num_threads is None else int(num_threads)
        first = seed if seed is not None else entropy_seed()
        self._pool = self._make_pool([first + i for i in range(n_envs)])
        raw_space = frame_space(self._pool, self.task)
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
        self._terminal_raw = np.zeros_like(self._raw)  # scratch: the last frames of a step
        self._env_ids = np.arange(n_envs, dtype=np.int32)
        self._actions: np.ndarray | None = None
        self._consume: FrameConsumer | None = None
        self._min_chunk = n_envs

    # ---- pool helpers -----------------------------------------------------------------------
    def _make_pool(self, seeds: list[int]) -> Any:
        batch_size = 1 if self.async_step else None
        pool = make_envpool(
            self.task, seeds, self.max_episode_steps, batch_size, num_threads=self.num_threads
        )
        self._async = bool(pool.is_async)  # False for one env: batch_size 1 is all of them
        return pool

    def _store(self, obs: np.ndarray, env_ids: np.ndarray | int) -> None:
        self._raw[env_ids] = np.moveaxis(obs, 1, -1) if self.task.channels_first else obs

    def _reset_ids(self, env_ids: np.ndarray) -> None:
        obs, info = self._pool.reset(env_ids.astype(np.int32))
        self._store(obs, np.asarray(info["env_id"]))

    def _reset_all(self) -> None:
        if not self._async:
            self._reset_ids(self._env_ids)
            return
        self._pool.async_reset()
        for _ in range(self.num_envs):
            obs, *_, info = self._pool.recv()
            self._store(obs, np.asarray(info["env_id"]))

    @contextmanager
    def frame_consumer(self, consume: FrameConsumer, min_chunk: int = 1) -> Iterator[None]:
        """Within the block, ``step_wait`` hands its frames to ``consume`` as
        :class:`~envs.preprocessing.FrameChunk` s: with ``async_step``, each time ``min_chunk``
        envs have finished their step (the rest when the last one has), otherwise all at once.

        Raises:
            RuntimeError: a consumer is already registered.
        """
        if self._consume is not None:
            raise RuntimeError("EnvpoolVecEnv takes one frame consumer at a time")
        self._consume, self._min_chunk = consume, max(1, int(min_chunk))
        try:
            yield
        finally:
            self._consume, self._min_chunk = None, self.num_envs

    # ---- VecEnv API -------------------------------------------------------------------------
    def reset(self) -> VecEnvObs:
        if any(s is not None for s in self._seeds):
            base = entropy_seed()
            seeds = [base + i if s is None else int(s) for i, s in enumerate(self._seeds)]
            self._pool.close()
            self._pool = self._make_pool(seeds)
        self._reset_all()
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self.transform.batch(self._raw)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("EnvpoolVecEnv.step_wait called before step_async")
        actions, self._actions = self._actions, None
        result = _StepResult(
            np.empty((self.num_envs, *self.transform.out_shape), np.uint8), self._terminal_raw
        )
        if self._async:
            self._step_envs_async(actions, result)
        else:
            self._step_batch(actions, result)
        return result.obs, result.rewards, result.terminated | result.truncated, result.infos

    def _step_batch(self, actions: np.ndarray, result: _StepResult) -> None:
        """All envs as one batch per frame-skip step; finished ones reset at the end."""
        running = self._env_ids
        for _ in range(self.frame_skip):
            obs, reward, term, trunc, info = self._pool.step(actions[running], running)
            ids = np.asarray(info["env_id"])
            self._store(obs, ids)
            result.record(ids, reward, term, trunc)
            running = np.sort(ids[~(term | trunc)]).astype(np.int32)
            if len(running) == 0:
                break
        done_ids = np.flatnonzero(result.terminated | result.truncated)
        if len(done_ids):
            result.terminal_raw[done_ids] = self._raw[done_ids]
            self._reset_ids(done_ids)
        self._deliver(self._env_ids, done_ids, result)

    def _step_envs_async(self, actions: np.ndarray, result: _StepResult) -> None:
        """Env by env: each env's next frame-skip step, or its reset when its episode has
        ended (envpool resets a finished env on its next ``send``), is sent as soon as its
        previous one returns; finished envs are delivered ``_min_chunk`` at a time."""
        pool, n = self._pool, self.num_envs
        left = np.full(n, self.frame_skip)
        ended = np.zeros(n, bool)
        ready: list[int] = []
        pool.send(actions, self._env_ids)
        pending = n
        try:
            while pending:
                obs, reward, term, trunc, info = pool.recv()
                pending -= 1
                i = int(info["env_id"][0])
                self._store(obs, i)
                if not ended[i]:
                    result.record(i, reward[0], term[0], trunc[0])
                    left[i] -= 1
                    ended[i] = bool(term[0] or trunc[0])
                    if ended[i]:
                        result.terminal_raw[i] = self._raw[i]
                    if ended[i] or left[i]:
                        pool.send(actions[i : i + 1], self._env_ids[i : i + 1])
                        pending += 1
                        continue
                ready.append(i)
                if len(ready) >= self._min_chunk or not pending:
                    ids = np.sort(np.asarray(ready, np.int32))
                    ready = []
                    self._deliver(ids, ids[ended[ids]], result)
        finally:
            self._drain(pending)

    def _drain(self, pending: int) -> None:
        """Receive ``pending`` results still in flight (a consumer raised), resetting envs
        whose episode ended, so that the pool is idle and the next step starts cleanly."""
        while pending:
            obs, _, term, trunc, info = self._pool.recv()
            pending -= 1
            self._store(obs, int(info["env_id"][0]))
            if term[0] or trunc[0]:
                self._pool.send(self.action_space.sample()[None], info["env_id"][:1])
                pending += 1

    def _deliver(self, env_ids: np.ndarray, done_ids: np.ndarray, result: _StepResult) -> None:
        """Preprocess the frames of ``env_ids`` and the terminal frames of ``done_ids`` in one
        batch, write them into ``result`` and hand them to the consumer, if any."""
        frames = self.transform.batch(
            np.concatenate([self._raw[env_ids], result.terminal_raw[done_ids]])
        )
        k = len(env_ids)
        result.obs[env_ids] = frames[:k]
        for j, i in enumerate(done_ids):
            result.infos[i]["terminal_observation"] = frames[k + j]
            result.infos[i]["TimeLimit.truncated"] = bool(
                result.truncated[i] and not result.terminated[i]
            )
        if self._consume is not None:
            self._consume(FrameChunk(env_ids, done_ids, frames))

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


def make_envpool_vec_env(
    spec: EnvSpec, n_envs: int, seed: int | None = None, subprocess: bool = False
) -> VecEnv:
    """``n_envs`` envs as one :class:`EnvpoolVecEnv` stepped through envpool's async API (one
    worker thread per core; batched preprocessing; ``subprocess`` is not needed and ignored).

    Async stepping gives the same transitions as batched stepping; on the shared 2-core
    Xeon it was as fast at a load average of 3 and 1.4-2.3x faster at 7 to 12, where a batch
    waits for its slowest thread (docs/benchmarks.md).
    """
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
        async_step=True,
    )
