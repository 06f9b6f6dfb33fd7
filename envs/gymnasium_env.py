"""The gymnasium backend, the reference: any registered env as frames of the spec's shape.

Headless for the four supported families: Box2D (``CarRacing-v3``), Atari through ale-py
(``ALE/Pong-v5``), MiniGrid (the full-grid RGB image) and state-vector envs that render
``rgb_array`` (``CartPole-v1``).
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
from gymnasium.wrappers import AddRenderObservation
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from envs.preprocessing import apply_frame_spec, is_image_space
from envs.registry import family_of
from worldvae.envspec import EnvSpec


def _make_kwargs(spec: EnvSpec) -> dict:
    kwargs = dict(spec.env_kwargs)
    if "render_mode" in kwargs:
        raise ValueError(
            "render_mode is set by make_env (frames come from rgb_array); remove it from env_kwargs"
        )
    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = spec.max_episode_steps
    return kwargs


def _frames_env(spec: EnvSpec) -> gym.Env:
    """The env with full-size uint8 frames as observations (before the spec's preprocessing)."""
    kwargs = _make_kwargs(spec)
    try:
        env = gym.make(spec.env_id, **kwargs)
    except TypeError as e:  # an option the env's constructor does not take
        raise ValueError(
            f"{spec.env_id} does not accept the options {sorted(kwargs)} ({e}); check "
            "--env-kwarg against the env's documentation"
        ) from e
    if family_of(spec.env_id) == "minigrid":
        from minigrid.wrappers import ImgObsWrapper, RGBImgObsWrapper

        return ImgObsWrapper(RGBImgObsWrapper(env))
    if is_image_space(env.observation_space):
        return env
    render_modes = env.metadata.get("render_modes", [])
    env.close()
    if "rgb_array" not in render_modes:
        raise ValueError(
            f"environment {spec.env_id!r} has observation space {env.observation_space}, which "
            f"is not an image, and cannot render frames (render_modes={render_modes}); "
            "pick an env that renders 'rgb_array'"
        )
    return AddRenderObservation(gym.make(spec.env_id, render_mode="rgb_array", **kwargs))


def make_gymnasium_env(spec: EnvSpec) -> gym.Env:
    """One gymnasium env giving uint8 frames ``spec.frame_shape`` (``(H, W, C)``).

    gymnasium's wrappers where it has them (``AddRenderObservation`` for envs that only render
    frames, ``RepeatAction`` for ``frame_skip``, ``ResizeObservation``) and
    :class:`~envs.preprocessing.FramePreprocess` for crop and grayscale, in that order.
    """
    return apply_frame_spec(_frames_env(spec), spec)


def _env_fn(spec: EnvSpec) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        return make_gymnasium_env(spec)

    return make


def make_gymnasium_vec_env(
    spec: EnvSpec, n_envs: int, seed: int | None = None, subprocess: bool = False
) -> VecEnv:
    """``n_envs`` gymnasium envs as a ``DummyVecEnv`` (a ``SubprocVecEnv`` with
    ``subprocess=True``); env ``i`` is seeded with ``seed + i`` at the first reset."""
    fns = [_env_fn(spec) for _ in range(n_envs)]
    venv: VecEnv = (
        SubprocVecEnv(fns, start_method="spawn") if subprocess and n_envs > 1 else DummyVecEnv(fns)
    )
    venv.seed(seed)
    return venv
