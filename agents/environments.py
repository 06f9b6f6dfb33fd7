"""Vectorised envs for pixel, latent and encoder agents, and deterministic evaluation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecFrameStack,
    VecMonitor,
)

from agents.config import AgentConfig
from envs import make_env_from_options
from envs.latent import VecLatentObservation
from worldvae.models import Autoencoder


def _env_fn(env_id: str, options: dict[str, Any]) -> Callable[[], Any]:
    def make() -> Any:
        return make_env_from_options(env_id, options)

    return make


def build_vec_env(
    cfg: AgentConfig, n_envs: int, seed: int, model: Autoencoder | None, subprocess: bool = False
) -> VecEnv:
    """The observation pipeline of ``cfg.obs`` over ``n_envs`` copies of the env.

    pixel: uint8 frames stacked ``frame_stack`` times along channels (SB3 transposes them);
    latent: :class:`~envs.latent.VecLatentObservation` (one batched encode per step);
    encoder: plain frames (the policy's features extractor encodes them).
    """
    fns = [_env_fn(cfg.env_id, cfg.env_options) for _ in range(n_envs)]
    venv: VecEnv = (
        SubprocVecEnv(fns, start_method="spawn") if subprocess and n_envs > 1 else DummyVecEnv(fns)
    )
    venv = VecMonitor(venv)
    venv.seed(seed)
    opts = cfg.obs_options
    if cfg.obs == "pixel":
        k = int(opts.get("frame_stack", 1))
        return VecFrameStack(venv, k, channels_order="last") if k > 1 else venv
    if cfg.obs == "latent":
        if model is None:
            raise ValueError("a latent env needs a model")
        return VecLatentObservation(
            venv,
            model,
            frame_stack=int(opts.get("frame_stack", 1)),
            action_history=int(opts.get("action_history", 0)),
            sample=bool(opts.get("sample", False)),
        )
    return venv


def evaluate_policy_seeded(
    agent: Any,
    venv: VecEnv,
    n_episodes: int,
    seed: int,
    deterministic: bool = True,
    on_step: Callable[[VecEnv, np.ndarray], None] | None = None,
) -> np.ndarray:
    """Returns of ``n_episodes`` episodes, episode ``i`` reset with seed ``seed + i``.

    ``venv`` must hold one env. The same seeds for every agent make their scores comparable.
    """
    if venv.num_envs != 1:
        raise ValueError(f"evaluation uses one env, got {venv.num_envs}")
    returns = np.zeros(n_episodes)
    for i in range(n_episodes):
        venv.seed(seed + i)
        obs = venv.reset()
        done = False
        while not done:
            action, _ = agent.predict(obs, deterministic=deterministic)
            obs, reward, dones, _ = venv.step(action)
            returns[i] += float(reward[0])
            done = bool(dones[0])
            if on_step is not None:
                on_step(venv, np.asarray(obs))
    return returns
