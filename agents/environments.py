"""Vectorised envs for pixel, latent and encoder agents, training envs inside M's dream, and
deterministic evaluation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecMonitor

from agents.agent_config import AgentConfig
from agents.arms import get_arm
from envs import make_env, make_vec_env
from envs.dream_env import DreamVecEnv, start_latents_from
from worldvae.encoders import Encoder
from worldvae.envspec import EnvSpec
from worldvae.memory import MDNRNN


def _env_fn(spec: EnvSpec, wrap: Callable[[Any, str], Any] | None = None) -> Callable[[], Any]:
    def make() -> Any:
        env = make_env(spec)
        return wrap(env, spec.env_id) if wrap is not None else env

    return make


def build_vec_env(
    cfg: AgentConfig,
    n_envs: int,
    seed: int,
    model: Encoder | None,
    subprocess: bool = False,
    memory: Any = None,
) -> VecEnv:
    """The observation pipeline of ``cfg.obs`` over ``n_envs`` copies of the env.

    Each arm (:data:`agents.arms.ARMS`) says how: pixel frames stacked along channels (SB3
    transposes them); latent, random and pca codes from
    :class:`~envs.latent.VecLatentObservation` (one batched encode per step); encoder frames
    (the policy's features extractor encodes them); state vectors from the env itself;
    latent+h ``[z, h]`` from :class:`~envs.latent_memory.VecLatentMemoryObservation` (``memory``: M).
    The backend is ``cfg.env.backend``; arms that wrap each env (state) run on gymnasium.
    """
    arm = get_arm(cfg.obs)
    venv: VecEnv
    if arm.wrap_env is None:
        venv = make_vec_env(cfg.env, n_envs, seed, subprocess)
    else:
        spec = cfg.env.replace(backend="gymnasium")
        fns = [_env_fn(spec, arm.wrap_env) for _ in range(n_envs)]
        venv = (
            SubprocVecEnv(fns, start_method="spawn")
            if subprocess and n_envs > 1
            else DummyVecEnv(fns)
        )
        venv.seed(seed)
    return wrap_observations(cfg, VecMonitor(venv), model, memory)


def wrap_observations(cfg: AgentConfig, venv: VecEnv, model: Encoder | None, memory: Any) -> VecEnv:
    """``venv``'s frames turned into ``cfg.obs``'s observations (frame stacks, codes, ``[z, h]``):
    the part of :func:`build_vec_env` after the envs are made, shared with the collector's
    agent policy (:mod:`agents.collection`)."""
    arm = get_arm(cfg.obs)
    if arm.needs_memory:
        from envs.latent_memory import VecLatentMemoryObservation

        if model is None or memory is None:
            raise ValueError(f"a {cfg.obs} env needs the VAE and the memory model M")
        return VecLatentMemoryObservation(
            venv,
            model,
            memory,
            sample=bool(cfg.obs_options.get("sample", False)),
            runtime=cfg.runtime,
        )
    # the runtime is a run setting, not an obs option: it travels beside them to the encoder
    return arm.wrap_vec(venv, cfg.obs_options | {"runtime": cfg.runtime}, model)


def is_recurrent(agent: Any) -> bool:
    """True for an agent whose ``predict`` carries a recurrent state (sb3-contrib's
    ``RecurrentPPO``: its policy has an LSTM)."""
    return hasattr(getattr(agent, "policy", None), "lstm_actor")


class ExplorationNoise:
    """State-dependent exploration (gSDE) resampled as in training when a policy samples its
    actions: a fresh noise matrix at an episode's first step and every ``sde_sample_freq``
    steps of it (SB3 keeps one matrix until ``reset_noise``; one matrix for a whole episode
    would steer every step of it the same wrong way). Does nothing for the policy's mode or
    a policy without gSDE.

    Example:
        >>> noise = ExplorationNoise(agent, deterministic=False)
        >>> noise.before_step(0)  # at each step t of an episode, before ``predict``
    """

    def __init__(self, agent: Any, deterministic: bool, n_envs: int = 1):
        self.agent = agent
        self.n_envs = n_envs  # the rows of each predict, a matrix for each
        self.every = (
            max(int(getattr(agent, "sde_sample_freq", -1)), 0)
            if getattr(agent, "use_sde", False) and not deterministic
            else None
        )

    def before_step(self, step: int) -> None:
        """Resample the matrix when step ``step`` (0 at an episode's start) is due for it."""
        if self.every is not None and (step == 0 or (self.every and step % self.every == 0)):
            self.agent.policy.reset_noise(self.n_envs)


def evaluate_policy_seeded(
    agent: Any,
    venv: VecEnv,
    n_episodes: int,
    seed: int,
    deterministic: bool = True,
    before_action: Callable[[VecEnv, float], None] | None = None,
) -> np.ndarray:
    """Returns of ``n_episodes`` episodes, episode ``i`` reset with seed ``seed + i``.

    ``venv`` must hold one env. The same seeds for every agent make their scores comparable.
    With ``deterministic=False`` the policy samples its actions, torch seeded with ``seed + i``
    per episode, so a stochastic evaluation is reproducible too (gSDE's noise resampled as in
    training, :class:`ExplorationNoise`). ``before_action(venv,
    return_so_far)`` is called before each action, while the env shows what the agent acts on
    (after an episode's last step a ``VecEnv`` has already reset to the next one).
    """
    if venv.num_envs != 1:
        raise ValueError(f"evaluation uses one env, got {venv.num_envs}")
    returns = np.zeros(n_episodes)
    recurrent = is_recurrent(agent)
    noise = ExplorationNoise(agent, deterministic)
    for i in range(n_episodes):
        venv.seed(seed + i)
        if not deterministic:
            import torch

            torch.manual_seed(seed + i)
        obs = venv.reset()
        done, state, start, t = False, None, np.ones((1,), dtype=bool), 0
        while not done:
            if before_action is not None:
                before_action(venv, float(returns[i]))
            noise.before_step(t)
            t += 1
            if recurrent:  # the LSTM's state runs through the episode, reset at its start
                action, state = agent.predict(
                    obs, state=state, episode_start=start, deterministic=deterministic
                )
                start = np.zeros((1,), dtype=bool)
            else:
                action, _ = agent.predict(obs, deterministic=deterministic)
            obs, reward, dones, _ = venv.step(action)
            returns[i] += float(reward[0])
            done = bool(dones[0])
    return returns


# Training envs inside M's dream, built from an agent configuration.


def dream_action_space(cfg: AgentConfig) -> Any:
    """The real env's action space (M was trained on its actions)."""
    env = make_env(cfg.env)
    space = env.action_space
    env.close()
    return space


def dream_max_steps(cfg: AgentConfig) -> int:
    """The real env's time limit in agent steps: its limit in frames (``max_episode_steps``
    option, else the registered one) over the frame skip, rounded up, as the agent sees it."""
    limit = cfg.env.max_episode_steps
    if not limit:
        import gymnasium as gym

        limit = int(gym.spec(cfg.env_id).max_episode_steps or 1000)
    return -(-limit // cfg.env.frame_skip)


def build_dream_vec_env(
    cfg: AgentConfig,
    n_envs: int,
    seed: int,
    memory: MDNRNN,
    latent_data: str,
    ensemble: Sequence[MDNRNN] = (),
) -> VecEnv:
    """``n_envs`` dreams stepped together (:class:`~envs.dream_env.DreamVecEnv`: one batched M step
    per VecEnv step) from the latent dataset's first frames, at ``cfg.dream_temperature``,
    with the other Ms of ``ensemble`` dreaming beside ``memory`` (their disagreement taken off
    the rewards at ``cfg.dream_penalty``), monitored and seeded like the real env."""
    venv = VecMonitor(
        DreamVecEnv(
            memory,
            start_latents_from(latent_data),
            dream_action_space(cfg),
            n_envs,
            cfg.dream_temperature,
            max_episode_steps=dream_max_steps(cfg),
            ensemble=ensemble,
            disagreement_penalty=cfg.dream_penalty,
        )
    )
    venv.seed(seed)
    return venv


__all__ = ["ExplorationNoise", "build_dream_vec_env", "dream_action_space", "dream_max_steps"]
