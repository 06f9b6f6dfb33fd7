"""``make_env``: any supported gymnasium env as uint8 frames of a chosen size."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import AddRenderObservation, RepeatAction

from envs.backends import resolve_backend
from envs.preprocessing import is_image_space, preprocess_frames
from envs.registry import check_env_id, family_of

# The command line's limits on the frame options. Frames are held whole in memory; beyond
# MAX_FRAME_SIZE a side, a frame of one episode fills gigabytes.
MIN_FRAME_SIZE, MAX_FRAME_SIZE = 8, 1024
MAX_FRAME_SKIP = 1000
MAX_EPISODE_STEPS = 10**9


def _as_size(frame_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(frame_size, (int, np.integer)):
        return (frame_size, frame_size)
    if len(frame_size) != 2:
        raise ValueError(f"frame_size must be an int or (height, width), got {frame_size}")
    return (int(frame_size[0]), int(frame_size[1]))


def make_env(
    env_id: str,
    frame_size: int | tuple[int, int] = 64,
    *,
    crop: tuple[int, int, int, int] | None = None,
    grayscale: bool = False,
    frame_skip: int = 1,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    backend: str = "auto",
) -> gym.Env:
    """Make ``env_id`` with observations as uint8 frames ``(H, W, C)``.

    Works headless (no display) for the four supported families: Box2D (``CarRacing-v3``),
    Atari through ale-py (``ALE/Pong-v5``), MiniGrid (full-grid RGB image) and state-vector
    envs that render ``rgb_array`` (``CartPole-v1``).

    Args:
        env_id: a registered gymnasium id.
        frame_size: output height and width (an int for square frames).
        crop: pixels removed from ``(top, bottom, left, right)`` before resizing.
        grayscale: one output channel (``C = 1``) instead of three.
        frame_skip: repeat each action this many times (rewards summed). Atari v5 envs already
            skip 4 frames internally; pass ``env_kwargs={"frameskip": 1}`` to change that.
        max_episode_steps: override the env's time limit.
        env_kwargs: passed to ``gym.make`` (e.g. ``{"domain_randomize": True}``).
        backend: ``"gymnasium"`` (the reference), ``"envpool"`` (C++ CarRacing-v3 and Atari,
            several times faster) or ``"auto"`` (envpool where installed and able; see
            :func:`envs.backends.resolve_backend`). The same preprocessing follows either.

    The wrappers are gymnasium's where it has them (``AddRenderObservation`` for envs that
    only render frames, ``RepeatAction`` for ``frame_skip``, ``ResizeObservation``) and
    :class:`~envs.preprocessing.FramePreprocess` for crop and grayscale, in that order; see
    :func:`~envs.preprocessing.preprocess_frames`.

    Raises:
        ValueError: unknown id (with suggestions), an env that neither gives nor renders
            frames, or a backend that cannot make it.

    Example:
        >>> env = make_env("CartPole-v1", frame_size=32)
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape, obs.dtype
        ((32, 32, 3), dtype('uint8'))
    """
    check_env_id(env_id)
    size = _as_size(frame_size)
    kwargs = dict(env_kwargs or {})
    if "render_mode" in kwargs:
        raise ValueError(
            "render_mode is set by make_env (frames come from rgb_array); remove it from env_kwargs"
        )
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    family = family_of(env_id)
    env: gym.Env
    if resolve_backend(env_id, backend, env_kwargs) == "envpool":
        from envs.envpool_env import EnvpoolEnv

        env = EnvpoolEnv(env_id, max_episode_steps=max_episode_steps)
    else:
        try:
            env = gym.make(env_id, **kwargs)
        except TypeError as e:  # an option the env's constructor does not take
            raise ValueError(
                f"{env_id} does not accept the options {sorted(kwargs)} ({e}); check --env-kwarg "
                "against the env's documentation"
            ) from e
    if family == "minigrid":
        from minigrid.wrappers import ImgObsWrapper, RGBImgObsWrapper

        env = ImgObsWrapper(RGBImgObsWrapper(env))
    elif not is_image_space(env.observation_space):
        render_modes = env.metadata.get("render_modes", [])
        env.close()
        if "rgb_array" not in render_modes:
            raise ValueError(
                f"environment {env_id!r} has observation space {env.observation_space}, which is "
                f"not an image, and cannot render frames (render_modes={render_modes}); "
                "pick an env that renders 'rgb_array'"
            )
        env = AddRenderObservation(gym.make(env_id, render_mode="rgb_array", **kwargs))
    if frame_skip > 1:
        env = RepeatAction(env, frame_skip)
    return preprocess_frames(env, size, crop=crop, grayscale=grayscale)


def env_options(
    frame_size: int | tuple[int, int] = 64,
    crop: tuple[int, int, int, int] | None = None,
    grayscale: bool = False,
    frame_skip: int = 1,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """The ``make_env`` keyword arguments as a JSON-ready dict (stored in manifests).

    Resolve ``backend`` with :func:`resolve_env_options` before recording it.
    """
    return {
        "frame_size": list(_as_size(frame_size)),
        "crop": list(crop) if crop else None,
        "grayscale": grayscale,
        "frame_skip": frame_skip,
        "max_episode_steps": max_episode_steps,
        "env_kwargs": dict(env_kwargs or {}),
        "backend": backend,
    }


# make_env options recommended per env, used where nothing is recorded or given: a new
# collection, a pixel agent without a model. After the RL zoo's CarRacing recipe (the dashboard
# strip cropped, frame skip 2); DoorKey's small grid reads well at 40x40.
RECOMMENDED_OPTIONS: dict[str, dict[str, Any]] = {
    "CarRacing-v3": {"crop": (0, 12, 0, 0), "frame_skip": 2},
    "MiniGrid-DoorKey-5x5-v0": {"frame_size": 40},
}


def recommended_options(env_id: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`env_options` from the defaults, then ``RECOMMENDED_OPTIONS[env_id]``, then
    ``given`` (explicit choices; None values mean "not given")."""
    chosen = RECOMMENDED_OPTIONS.get(env_id, {}) | {
        k: v for k, v in (given or {}).items() if v is not None
    }
    return env_options(**chosen)


def resolve_env_options(env_id: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``backend`` resolved to the one that will run (never ``"auto"``)."""
    backend = resolve_backend(env_id, options.get("backend", "auto"), options.get("env_kwargs"))
    return dict(options) | {"backend": backend}


def make_env_from_options(env_id: str, options: dict[str, Any]) -> gym.Env:
    """Rebuild an env from ``env_id`` and a dict made by :func:`env_options`.

    Options recorded before backends existed (no ``backend`` key) mean gymnasium.
    """
    opts = {"backend": "gymnasium"} | dict(options)
    opts["frame_size"] = _as_size(opts.get("frame_size", 64))
    if opts.get("crop") is not None:
        opts["crop"] = tuple(opts["crop"])
    return make_env(env_id, **opts)
