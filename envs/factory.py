"""The env builders: ``make_env`` and ``make_vec_env`` from an :class:`EnvSpec`.

A spec is made once where a run starts (:func:`new_spec`: the env's recommended options, then
what the user gave, the backend resolved); everything downstream builds envs from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from envs.backends import ENV_BACKENDS, resolve_backend
from envs.registry import check_env_id
from worldvae.envspec import EnvSpec

if TYPE_CHECKING:  # an annotation only: importing stable-baselines3 loads torch
    from stable_baselines3.common.vec_env import VecEnv

# Options recommended per env, used where nothing is recorded or given: a new collection, a
# pixel agent without a model. After the RL zoo's CarRacing recipe (the dashboard strip
# cropped, frame skip 2); DoorKey's small grid reads well at 40x40.
RECOMMENDED_OPTIONS: dict[str, dict[str, Any]] = {
    "CarRacing-v3": {"crop": (0, 12, 0, 0), "frame_skip": 2},
    "MiniGrid-DoorKey-5x5-v0": {"frame_size": 40},
}


def resolve_spec(spec: EnvSpec) -> EnvSpec:
    """``spec`` with its backend resolved to the one that will run (never ``"auto"``).

    Raises:
        ValueError: unknown env id (with suggestions), or a backend that cannot make it.
    """
    check_env_id(spec.env_id)
    return spec.replace(backend=resolve_backend(spec.env_id, spec.backend, spec.env_kwargs))


def new_spec(env_id: str, given: Mapping[str, Any] | None = None) -> EnvSpec:
    """A new env's spec: the defaults, then ``RECOMMENDED_OPTIONS[env_id]``, then ``given``
    (explicit choices by field name; None values mean "not given"), its backend resolved.

    Example:
        >>> new_spec("CarRacing-v3", {"backend": "gymnasium"}).frame_skip
        2
    """
    check_env_id(env_id)
    spec = EnvSpec(env_id).replace(**RECOMMENDED_OPTIONS.get(env_id, {}))
    return resolve_spec(spec.replace(**dict(given or {})))


def make_env(
    env: str | EnvSpec, frame_size: int | tuple[int, int] | None = None, **options: Any
) -> gym.Env:
    """Make an env whose observations are uint8 frames ``(H, W, C)``.

    Args:
        env: an :class:`EnvSpec`, or a registered gymnasium id (its spec is then
            ``EnvSpec(env, frame_size, **options)``: 64x64 RGB by default).
        frame_size: output height and width (an int for square frames).
        **options: other :class:`EnvSpec` fields (``crop``, ``grayscale``, ``frame_skip``,
            ``max_episode_steps``, ``env_kwargs``, ``backend``); with a spec they replace its
            values.

    The backend's hook builds it (:data:`envs.backends.ENV_BACKENDS`); every backend applies
    the same preprocessing (:func:`~envs.preprocessing.apply_frame_spec`). A spec whose backend
    is ``"auto"`` is resolved first.

    Raises:
        ValueError: unknown id (with suggestions), an env that neither gives nor renders
            frames, or a backend that cannot make it.

    Example:
        >>> env = make_env("CartPole-v1", frame_size=32)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((32, 32, 3), dtype('uint8'))
    """
    spec = env if isinstance(env, EnvSpec) else EnvSpec(env)
    spec = resolve_spec(spec.replace(frame_size=frame_size, **options))
    hook = ENV_BACKENDS[spec.backend].hook("make_env")
    made: gym.Env = hook(spec)
    return made


def make_vec_env(
    spec: EnvSpec, n_envs: int, seed: int | None = None, subprocess: bool = False
) -> VecEnv:
    """``n_envs`` envs of ``spec`` as one SB3 ``VecEnv``; env ``i`` seeded ``seed + i`` at the
    first reset.

    On envpool: one batched :class:`~envs.envpool_env.EnvpoolVecEnv`. On gymnasium: a
    ``DummyVecEnv``, or a ``SubprocVecEnv`` with ``subprocess=True``.
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    spec = resolve_spec(spec)
    venv: VecEnv = ENV_BACKENDS[spec.backend].hook("make_vec_env")(spec, n_envs, seed, subprocess)
    return venv
