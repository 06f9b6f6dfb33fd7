"""Shared fixtures: small real datasets, written directly or collected from real envs."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest

from worldvae.data import Episode, Manifest, episode_filename, write_episode
from worldvae.data.manifest import EPISODES_DIR


def write_synthetic_dataset(
    root: Path, n_episodes: int, length: int = 20, frame_shape=(16, 16, 3), seed: int = 0
) -> Path:
    """A dataset of random-frame episodes whose frame ``t`` of episode ``i`` encodes (i, t)."""
    rng = np.random.default_rng(seed)
    Manifest(
        env_id="Synthetic-v0",
        env_options={},
        frame_shape=tuple(frame_shape),
        policy={"name": "random", "params": {}},
        seed=seed,
    ).save(root)
    for i in range(n_episodes):
        t = length + i % 3
        frames = rng.integers(0, 256, (t + 1, *frame_shape), dtype=np.uint8)
        frames[:, 0, 0, 0] = i  # identify the episode
        frames[:, 0, 1, 0] = np.arange(t + 1)  # and the step
        write_episode(
            root / EPISODES_DIR / episode_filename(i),
            Episode(
                frames=frames,
                actions=rng.integers(0, 2, t),
                rewards=rng.standard_normal(t).astype(np.float32),
                terminated=np.r_[np.zeros(t - 1, bool), True],
                truncated=np.zeros(t, bool),
                seed=i,
            ),
        )
    return root


@pytest.fixture
def synthetic_dataset(tmp_path: Path) -> Path:
    return write_synthetic_dataset(tmp_path / "ds", n_episodes=12)


class NoRenderEnv(gym.Env):
    """A state-vector env that cannot render: make_env must refuse it clearly."""

    metadata: ClassVar[dict] = {"render_modes": []}
    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, True, False, {}


@pytest.fixture(scope="session")
def no_render_env_id() -> str:
    env_id = "WorldvaeTestNoRender-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=NoRenderEnv)
    return env_id


def repo_pythonpath() -> str:
    """PYTHONPATH for a subprocess that imports this checkout: its root, then the caller's."""
    import os

    root = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny V and M on real CartPole frames (16x16): (vae_dir, memory_run_dir)."""
    import torch

    from envs import collect
    from envs.latent_memory import action_spec_for
    from worldvae.data.latents import encode_dataset
    from worldvae.envspec import EnvSpec
    from worldvae.memory.trainer import MemoryTrainConfig, train_memory
    from worldvae.vae import Autoencoder, AutoencoderConfig, save_model
    from worldvae.vae.io import model_sha256

    root = tmp_path_factory.mktemp("world")
    collect(root / "data", EnvSpec("CartPole-v1", frame_size=16), n_episodes=3, progress=False)
    torch.manual_seed(0)
    vae = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
    ).eval()
    save_model(vae, root / "vae")
    encode_dataset(
        root / "data",
        vae,
        root / "vae",
        model_sha256(root / "vae"),
        root / "latents",
        action_spec_for(gym.spaces.Discrete(2)),
        progress=False,
    )
    train_memory(
        root / "latents",
        root / "rnn",
        MemoryTrainConfig(model={"hidden_size": 8, "n_gaussians": 2}, epochs=1, batch_size=4),
        progress=False,
    )
    return root / "vae", root / "rnn"
