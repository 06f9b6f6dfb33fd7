"""Ideas with one implementation: the places that use them give the same answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldvae.diagnostics import kl_per_dimension, reconstruction_grid
from worldvae.vae import Autoencoder, AutoencoderConfig


def test_inspect_kl_per_dimension_is_the_training_loss_kl():
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
    )
    frames = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        mu, logvar = model.posterior(model.to_input(torch.from_numpy(frames)))
        _, metrics = model.training_loss(torch.from_numpy(frames))
    got = kl_per_dimension(mu.numpy(), logvar.numpy())
    assert got.shape == (4,)
    # training_loss samples nothing for the KL: its per-dimension mean is the same number
    np.testing.assert_allclose(got, metrics["kl_per_dim"].numpy(), rtol=1e-5, atol=1e-6)
    closed = 0.5 * (mu.numpy() ** 2 + np.exp(logvar.numpy()) - 1 - logvar.numpy())
    np.testing.assert_allclose(got, closed.mean(axis=0), rtol=1e-5)


def test_the_trainer_draws_its_reconstructions_with_inspects_grid(tmp_path):
    import cv2

    from tests.conftest import write_synthetic_dataset
    from worldvae.vae import load_model
    from worldvae.vae.trainer import TrainConfig, train_autoencoder

    data = write_synthetic_dataset(tmp_path / "ds", n_episodes=6, length=10)
    cfg = TrainConfig(model={"kind": "vae", "latent_dim": 4, "channels": [8, 16]}, epochs=1,
                      batch_size=16, warmup_steps=1)  # fmt: skip
    trainer_result = train_autoencoder(data, tmp_path / "run", cfg, progress=False)
    model = load_model(tmp_path / "run" / "checkpoints" / "last", device="cpu")
    from worldvae.data import EpisodeDataset

    fixed = EpisodeDataset(data, val_fraction=0.1).sample_frames(8, seed=0, which="val")
    expected = reconstruction_grid(model, fixed)
    drawn = cv2.cvtColor(
        cv2.imread(str(trainer_result.run_dir / "images" / "reconstructions.png")),
        cv2.COLOR_BGR2RGB,
    )
    assert drawn.shape == expected.shape
    np.testing.assert_array_equal(drawn, expected)


def test_the_collection_policy_and_the_agents_share_one_algorithm_table():
    from agents.agent_config import ALGOS, algo_class
    from agents.algorithms import sb3_algorithm, sb3_algorithm_names
    from envs.policies import SB3Policy

    assert set(sb3_algorithm_names()) <= set(ALGOS)
    for name in ("ppo", "a2c", "dqn", "sac"):
        assert algo_class(name) is sb3_algorithm(name)
        assert SB3Policy("unused.zip", name).algo_class is sb3_algorithm(name)
    with pytest.raises(ValueError, match="unknown SB3 algorithm 'trpo'"):
        SB3Policy("unused.zip", "trpo")
    with pytest.raises(ValueError, match="recurrentppo agent is not supported"):
        SB3Policy("unused.zip", "recurrentppo")


def test_latent_and_pixel_stacks_start_an_episode_the_same_way():
    """Zeros before the first observation, in the pixel arm's VecFrameStack and in the latent
    arms' history alike."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    from envs import make_env
    from envs.latent import LatentHistory

    pixel = VecFrameStack(DummyVecEnv([lambda: make_env("CartPole-v1", frame_size=16)]), 3,
                          channels_order="last")  # fmt: skip
    first = pixel.reset()[0]  # (16, 16, 9)
    assert not first[..., :6].any() and first[..., 6:].any()
    history = LatentHistory(1, 4, gym.spaces.Discrete(2), frame_stack=3, action_history=1)
    z = np.arange(1, 5, dtype=np.float32)
    history.push(0, z + 10, 1)  # leftovers of an earlier episode
    history.reset(0, z)
    obs = history.observation(0)
    np.testing.assert_array_equal(obs, np.r_[np.zeros(8), z, np.zeros(2)])
    history.push(0, 2 * z, 0)
    np.testing.assert_array_equal(history.observation(0), np.r_[np.zeros(4), z, 2 * z, 1, 0])
    pixel.close()


def test_learning_curve_bands_resample_whole_runs_through_one_function():
    from agents.statistics import curve_band, resample_runs, sample_efficiency_curve

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(6, 5)).cumsum(axis=1)
    boot = resample_runs(scores, 100, seed=3)
    assert boot.shape == (100, 6, 5)
    assert all(any(np.array_equal(row, run) for run in scores) for row in boot[0])  # whole runs
    iqm_curve, low, high = sample_efficiency_curve(scores, n_resamples=100, seed=3)
    assert np.all(low <= iqm_curve + 1e-12) and np.all(iqm_curve <= high + 1e-12)
    grid = np.arange(5.0)
    mean, low, high = curve_band([(grid, s) for s in scores], grid, seed=3, n_resamples=100)
    expected = boot.mean(axis=1)  # the same draws, averaged
    np.testing.assert_allclose(low, np.quantile(expected, 0.025, axis=0))
    np.testing.assert_allclose(high, np.quantile(expected, 0.975, axis=0))
    np.testing.assert_allclose(mean, scores.mean(axis=0))
