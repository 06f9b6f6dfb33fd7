"""Vectorised pixel envs on either backend: ``n`` copies of ``make_env`` as one SB3 VecEnv."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from envs.backends import resolve_backend
from envs.factory import _as_size, make_env_from_options


def _env_fn(env_id: str, options: dict[str, Any]) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        return make_env_from_options(env_id, options)

    return make


def make_vec_env_from_options(
    env_id: str,
    options: dict[str, Any],
    n_envs: int,
    seed: int | None = None,
    subprocess: bool = False,
) -> VecEnv:
    """``n_envs`` envs made from ``options`` (as made by :func:`envs.env_options`).

    On the envpool backend: one :class:`~envs.envpool_env.EnvpoolVecEnv` (batched stepping
    and preprocessing; ``subprocess`` is not needed). On gymnasium: a ``DummyVecEnv``, or a
    ``SubprocVecEnv`` with ``subprocess=True``. Options without a ``backend`` mean gymnasium.
    Env ``i`` is seeded with ``seed + i`` at the first reset.
    """
    opts = {"backend": "gymnasium"} | dict(options)
    backend = resolve_backend(env_id, opts["backend"], opts.get("env_kwargs"))
    venv: VecEnv
    if backend == "envpool":
        from envs.envpool_env import EnvpoolVecEnv

        crop = opts.get("crop")
        venv = EnvpoolVecEnv(
            env_id,
            n_envs,
            frame_size=_as_size(opts.get("frame_size", 64)),
            crop=tuple(crop) if crop is not None else None,
            grayscale=bool(opts.get("grayscale", False)),
            frame_skip=int(opts.get("frame_skip", 1)),
            max_episode_steps=opts.get("max_episode_steps"),
            seed=seed,
        )
    else:
        fns = [_env_fn(env_id, opts | {"backend": "gymnasium"}) for _ in range(n_envs)]
        venv = (
            SubprocVecEnv(fns, start_method="spawn")
            if subprocess and n_envs > 1
            else DummyVecEnv(fns)
        )
        venv.seed(seed)
    return venv
