"""The gymnasium backend, the reference: any registered env as frames of the spec's shape.

Headless for the four supported families: Box2D (``CarRacing-v3``), Atari through ale-py
(``ALE/Pong-v5``), MiniGrid (the full-grid RGB image) and state-vector envs that render
``rgb_array`` (``CartPole-v1``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator
from gymnasium.wrappers import (
    AddRenderObservation,
    GrayscaleObservation,
    RepeatAction,
    ResizeObservation,
)

from envs.preprocessing import FramePreprocess, apply_frame_spec, is_image_space
from envs.registry import family_of
from worldvae.envspec import EnvSpec

if TYPE_CHECKING:  # an annotation only: importing stable-baselines3 loads torch
    from stable_baselines3.common.vec_env import VecEnv


def _make_kwargs(spec: EnvSpec) -> dict:
    kwargs = dict(spec.env_kwargs)
    if "render_mode" in kwargs:
        raise ValueError(
            "render_mode is set by make_env (frames come from rgb_array); remove it from env_kwargs"
        )
    if spec.max_episode_steps is not None:
        kwargs["max_episode_steps"] = spec.max_episode_steps
    return kwargs


def _rgb_render(env_id: str) -> str | None:
    """``"rgb_array"`` when ``env_id`` renders so, else None: the render mode to make it with.

    Asked of every env that can, so that ``render()`` (a ``VecEnv``'s ``get_images()``) gives
    the env as a person sees it, for videos; gymnasium's envs draw that picture only when
    ``render()`` is called, so stepping costs the same and the observations are unchanged.
    """
    try:
        entry = gym.spec(env_id).entry_point
        creator = load_env_creator(entry) if isinstance(entry, str) else entry
    except (gym.error.Error, ImportError, AttributeError, ValueError):
        return None  # gym.make below says what is wrong with the id
    modes = getattr(creator, "metadata", {}).get("render_modes", [])
    return "rgb_array" if "rgb_array" in modes else None


def _frames_env(spec: EnvSpec) -> gym.Env:
    """The env with full-size uint8 frames as observations (before the spec's preprocessing),
    rendering ``rgb_array`` where it can."""
    kwargs = _make_kwargs(spec)
    render = _rgb_render(spec.env_id)
    rendering: dict[str, Any] = {"render_mode": render} if render else {}
    try:
        env = gym.make(spec.env_id, **rendering, **kwargs)
    except TypeError as e:  # an option the env's constructor does not take
        raise ValueError(
            f"{spec.env_id} does not accept the options {sorted(kwargs)} ({e}); check "
            "--env-kwarg against the env's documentation"
        ) from e
    return as_frames(env, spec.env_id)


def as_frames(env: gym.Env, env_id: str) -> gym.Env:
    """``env`` (made by ``gym.make(env_id, ...)``) with its full-size uint8 frames as
    observations: MiniGrid's full-grid RGB image, the observations themselves when they are
    frames, else what the env renders (``rgb_array``).

    Raises:
        ValueError: observations that are not frames from an env that does not render them.
    """
    if family_of(env_id) == "minigrid":
        from minigrid.wrappers import ImgObsWrapper, RGBImgObsWrapper

        return ImgObsWrapper(RGBImgObsWrapper(env))
    if is_image_space(env.observation_space):
        return env
    if env.render_mode != "rgb_array":
        render_modes = env.metadata.get("render_modes", [])
        env.close()
        raise ValueError(
            f"environment {env_id!r} has observation space {env.observation_space}, which "
            f"is not an image, and cannot render frames (render_modes={render_modes}); "
            "pick an env that renders 'rgb_array' (gym.make(..., render_mode='rgb_array'))"
        )
    return AddRenderObservation(env)


# Wrappers that change what a frame looks like: an env with one of them no longer gives raw
# frames, and the recorded preprocessing cannot be applied on top.
FRAME_WRAPPERS = (FramePreprocess, ResizeObservation, GrayscaleObservation)


def _wrapper_chain(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _kwarg_conflicts(env: gym.Env, spec: EnvSpec) -> list[str]:
    """The ``gym.make`` keyword arguments of ``env`` that differ from those ``spec`` records
    (over the registered defaults), one line each; ``render_mode`` is not compared."""
    if env.spec is None:  # not made by gym.make: nothing to compare
        return []
    made = dict(env.spec.kwargs)
    expected = dict(gym.spec(spec.env_id).kwargs) | dict(spec.env_kwargs)
    return [
        f"{key}: recorded {expected.get(key)!r}, the env has {made.get(key)!r}"
        for key in sorted((set(made) | set(expected)) - {"render_mode"})
        if made.get(key) != expected.get(key)
    ]


def recorded_frames(env: gym.Env, spec: EnvSpec, wrapper: str) -> gym.Env:
    """``env``, an env of ``spec.env_id`` as ``gym.make`` gives it (raw frames, or observations
    with ``render_mode="rgb_array"``), turned into the frames ``spec`` records: what
    ``make_env(spec)`` gives for the same seed. The frame skip is added unless the env repeats
    its actions already (gymnasium's ``RepeatAction``); ``max_episode_steps`` and the backend
    are left as the env has them.

    Raises:
        ValueError: another env id, other ``gym.make`` options, another frame skip, frames
            already preprocessed, or an env that gives no frames; the error names what the
            spec records and what the env has (``wrapper`` names the caller).
    """
    env_id = env.spec.id if env.spec is not None else None
    fix = f"make the env with envs.make_env(EnvSpec.from_dict({spec.to_dict()}))"
    if env_id is not None and env_id != spec.env_id:
        raise ValueError(
            f"{wrapper}: the model was trained on frames of {spec.env_id}, the env is {env_id}; "
            f"wrap a {spec.env_id} env, or use a model trained on {env_id}"
        )
    problems = _kwarg_conflicts(env, spec)
    chain = _wrapper_chain(env)
    repeats = [w.num_repeats for w in chain if isinstance(w, RepeatAction)]
    if repeats and repeats[0] != spec.frame_skip:
        problems.append(f"frame_skip: recorded {spec.frame_skip}, the env has {repeats[0]}")
    shaped = [type(w).__name__ for w in chain if isinstance(w, FRAME_WRAPPERS)]
    if shaped:
        problems.append(
            f"frames: recorded {spec.frame_shape} made from the raw frames, the env gives "
            f"{env.observation_space.shape} already preprocessed by {', '.join(shaped)}"
        )
    if problems:
        raise ValueError(
            f"{wrapper}: the env disagrees with the env spec the model records ("
            + "; ".join(problems)
            + f"): {fix}"
        )
    if repeats:  # the env repeats its actions already
        spec = spec.replace(frame_skip=1)
    return apply_frame_spec(as_frames(env, spec.env_id), spec)


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
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    fns = [_env_fn(spec) for _ in range(n_envs)]
    venv: VecEnv = (
        SubprocVecEnv(fns, start_method="spawn") if subprocess and n_envs > 1 else DummyVecEnv(fns)
    )
    venv.seed(seed)
    return venv
