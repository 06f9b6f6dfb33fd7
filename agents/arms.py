"""The arms of a comparison: one place that says how each observation kind is built.

An arm names what the agent sees and how that is made from the env's frames:

========  =========================================================  ==========  ==========
arm       observation                                                policy      model
========  =========================================================  ==========  ==========
pixel     uint8 frames, stacked ``frame_stack`` times                CnnPolicy   none
latent    the pretrained VAE's posterior means (stacked)             MlpPolicy   the VAE
encoder   frames; the VAE's encoder is the policy's extractor        CnnPolicy   the VAE
random    codes of the same encoder architecture, untrained, frozen  MlpPolicy   random
pca       whitened PCA of the VAE's training frames, same dims       MlpPolicy   pca
latent+h  the VAE's latent and M's hidden state ``[z, h]``            MlpPolicy   VAE + M
state     the env's true low-dimensional state (``envs.state``)      MlpPolicy   none
========  =========================================================  ==========  ==========

``latent``, ``random`` and ``pca`` are built by the same wrapper
(:class:`~envs.latent.VecLatentObservation`); only the encoder differs. ``random`` is the
control of Raffin et al. (2019, "Decoupling feature extraction from policy learning"), ``pca``
the linear one, ``state`` the ceiling. To add an arm, add an :class:`Arm` to :data:`ARMS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack

from envs.latent import VecLatentObservation
from envs.state import StateObservation, has_state
from worldvae.encoders import Encoder

ModelSource = Literal["vae", "random", "pca"]


def _stack(venv: VecEnv, opts: dict[str, Any], model: Encoder | None) -> VecEnv:
    k = int(opts.get("frame_stack", 1))
    return VecFrameStack(venv, k, channels_order="last") if k > 1 else venv


def _latent(venv: VecEnv, opts: dict[str, Any], model: Encoder | None) -> VecEnv:
    if model is None:
        raise ValueError("a latent-code env needs an encoder model")
    return VecLatentObservation(
        venv,
        model,
        frame_stack=int(opts.get("frame_stack", 1)),
        action_history=int(opts.get("action_history", 0)),
        sample=bool(opts.get("sample", False)),
        precision=str(opts.get("precision", "auto")),
        runtime=str(opts.get("runtime", "auto")),
    )


def _identity(venv: VecEnv, opts: dict[str, Any], model: Encoder | None) -> VecEnv:
    return venv


@dataclass(frozen=True)
class Arm:
    """How one observation kind is built.

    Attributes:
        name: the ``--obs`` name.
        policy: the SB3 policy class name.
        model: which encoder the arm needs (None: none). ``vae`` is the pretrained model;
            ``random`` and ``pca`` are controls derived from it (see :mod:`agents.control_arms`).
        obs_keys: the options its hyperparameter section may set.
        wrap_env: applied to each single env before vectorising (None: nothing).
        wrap_vec: applied to the monitored VecEnv, with the obs options (and the run's
            ``runtime``, see :func:`agents.environments.wrap_observations`) and the loaded model.
        needs_state: the env must have a known true state (:func:`envs.state.has_state`).
        loads_model: the wrapper needs the model loaded (the policy loads it otherwise).
        needs_memory: the arm also needs the memory model M (``--memory``); its env is built
            by :func:`agents.environments.build_vec_env` with ``memory=M``.
    """

    name: str
    policy: str
    model: ModelSource | None
    obs_keys: frozenset[str]
    wrap_vec: Callable[[VecEnv, dict[str, Any], Encoder | None], VecEnv]
    wrap_env: Callable[[gym.Env, str], gym.Env] | None = None
    needs_state: bool = False
    loads_model: bool = False
    needs_memory: bool = False


_CODE_KEYS = frozenset({"frame_stack", "action_history", "sample", "precision"})

ARMS: dict[str, Arm] = {
    "pixel": Arm("pixel", "CnnPolicy", None, frozenset({"frame_stack"}), _stack),
    "latent": Arm("latent", "MlpPolicy", "vae", _CODE_KEYS, _latent, loads_model=True),
    "encoder": Arm("encoder", "CnnPolicy", "vae", frozenset({"freeze"}), _identity),
    "random": Arm("random", "MlpPolicy", "random", _CODE_KEYS, _latent, loads_model=True),
    "pca": Arm("pca", "MlpPolicy", "pca", _CODE_KEYS, _latent, loads_model=True),
    "latent+h": Arm(
        "latent+h",
        "MlpPolicy",
        "vae",
        frozenset({"sample"}),
        _identity,
        loads_model=True,
        needs_memory=True,
    ),
    "state": Arm(
        "state",
        "MlpPolicy",
        None,
        frozenset({"frame_stack"}),
        _stack,
        wrap_env=lambda env, env_id: StateObservation(env, env_id),
        needs_state=True,
    ),
}


def get_arm(name: str) -> Arm:
    """The arm called ``name``; a clear error naming the known ones otherwise."""
    if name not in ARMS:
        raise ValueError(f"unknown observation kind {name!r}; choose from {', '.join(ARMS)}")
    return ARMS[name]


def arm_problems(
    obs_kinds: tuple[str, ...] | list[str],
    env_id: str,
    model_dir: str | None,
    data_dir: str | None = None,
) -> list[str]:
    """Why each arm of ``obs_kinds`` cannot run on ``env_id`` (an empty list when all can).

    Checked before anything trains, so a bad ``--obs`` list fails at once and whole.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for name in obs_kinds:
        if name in seen:
            problems.append(f"{name!r} is listed twice")
            continue
        seen.add(name)
        if name not in ARMS:
            problems.append(f"{name!r} is not an observation kind (known: {', '.join(ARMS)})")
            continue
        arm = ARMS[name]
        if arm.needs_state and not has_state(env_id):
            problems.append(
                f"'state': {env_id} has no known low-dimensional state (it is read for "
                "classic-control envs, MiniGrid and CarRacing)"
            )
        if arm.model is not None and not model_dir:
            problems.append(f"{name!r} needs the pretrained model: pass --model DIR")
        if arm.model == "pca" and not data_dir:
            problems.append(
                "'pca' needs the frames the model was trained on: pass --data DIR (or a VAE run "
                "directory, whose config names its data)"
            )
    return problems


def check_arms(
    obs_kinds: tuple[str, ...] | list[str],
    env_id: str,
    model_dir: str | None,
    data_dir: str | None = None,
) -> None:
    """Raise one ValueError listing every arm of ``obs_kinds`` that cannot run."""
    problems = arm_problems(obs_kinds, env_id, model_dir, data_dir)
    if problems:
        raise ValueError(
            f"--obs {','.join(obs_kinds)} cannot run on {env_id}: " + "; ".join(problems)
        )
