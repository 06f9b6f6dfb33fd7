"""Training envs inside M's dream, built from an agent configuration."""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from agents.config import AgentConfig
from envs import make_env_from_options
from envs.dream import DreamVecEnv, start_latents_from
from worldvae.memory import MDNRNN


def dream_action_space(cfg: AgentConfig) -> Any:
    """The real env's action space (M was trained on its actions)."""
    env = make_env_from_options(cfg.env_id, cfg.env_options)
    space = env.action_space
    env.close()
    return space


def dream_max_steps(cfg: AgentConfig) -> int:
    """The real env's time limit (``max_episode_steps`` option, else the registered one)."""
    if cfg.env_options.get("max_episode_steps"):
        return int(cfg.env_options["max_episode_steps"])
    import gymnasium as gym

    spec = gym.spec(cfg.env_id)
    return int(spec.max_episode_steps or 1000)


def build_dream_vec_env(
    cfg: AgentConfig, n_envs: int, seed: int, memory: MDNRNN, latent_data: str
) -> VecEnv:
    """``n_envs`` dreams stepped together (:class:`~envs.dream.DreamVecEnv`: one batched M step
    per VecEnv step) from the latent dataset's first frames, at ``cfg.dream_temperature``,
    monitored and seeded like the real env."""
    venv = VecMonitor(
        DreamVecEnv(
            memory,
            start_latents_from(latent_data),
            dream_action_space(cfg),
            n_envs,
            cfg.dream_temperature,
            max_episode_steps=dream_max_steps(cfg),
        )
    )
    venv.seed(seed)
    return venv


__all__ = ["build_dream_vec_env", "dream_action_space", "dream_max_steps"]
