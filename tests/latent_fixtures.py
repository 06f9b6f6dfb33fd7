"""Small latent datasets written directly, with known dynamics, for testing M."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from worldvae.data.latents import ActionSpec, LatentManifest
from worldvae.data.manifest import EPISODES_DIR, episode_filename

ROTATION = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 0.9]], np.float32)


def synthetic_step(z: np.ndarray, action: int) -> np.ndarray:
    """Known dynamics: a damped rotation plus a push along dimension 2 set by the action."""
    push = np.array([0.0, 0.0, 0.5 if action == 1 else -0.5], np.float32)
    return (ROTATION @ z + push).astype(np.float32)


def write_synthetic_latents(
    root: Path,
    n_episodes: int = 12,
    length: int = 24,
    seed: int = 0,
    model_dir: str = "no-such-model",
) -> Path:
    """Episodes of 3-d latents following :func:`synthetic_step` under random binary actions.

    The reward of a step is the next latent's first coordinate; the episode terminates at its
    last step.
    """
    rng = np.random.default_rng(seed)
    spec = ActionSpec("discrete", 2)
    LatentManifest(
        source="synthetic",
        source_manifest={"env_id": "Synthetic-v0", "env_options": {}},
        model_sha256="0" * 64,
        model_dir=model_dir,
        model_config={},
        latent_dim=3,
        action=spec.to_dict(),
    ).save(root)
    (root / EPISODES_DIR).mkdir(parents=True, exist_ok=True)
    for i in range(n_episodes):
        actions = rng.integers(0, 2, length)
        z = [rng.uniform(-1, 1, 3).astype(np.float32)]
        for a in actions:
            z.append(synthetic_step(z[-1], int(a)))
        mu = np.stack(z)
        np.savez_compressed(
            root / EPISODES_DIR / episode_filename(i),
            mu=mu,
            logvar=np.full_like(mu, -8.0),
            actions=spec.encode(actions),
            rewards=mu[1:, 0].copy(),
            terminated=np.r_[np.zeros(length - 1, bool), True],
            truncated=np.zeros(length, bool),
            seed=np.int64(i),
        )
    return root
