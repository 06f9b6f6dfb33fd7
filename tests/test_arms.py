"""The control arms (random, pca, state): their observation spaces, a few training steps, and
clear errors for arms that cannot run."""

import numpy as np
import pytest
import torch

from agents import load_bundle, resolve_config, train_agent
from agents.arms import ARMS, arm_problems, check_arms
from agents.control_arms import arm_model_dir, pca_encoder_dir, random_encoder_dir
from agents.environments import build_vec_env
from envs import collect
from worldvae.data import EpisodeDataset
from worldvae.encoders import load_encoder
from worldvae.envspec import EnvSpec
from worldvae.pca import PCAEncoder, fit_pca
from worldvae.vae import Autoencoder, AutoencoderConfig, load_model, save_model

FAST = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}
VAE = AutoencoderConfig(kind="vae", frame_shape=(24, 24, 3), latent_dim=4, channels=(8, 16))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VAE (its weights stand for trained ones) and the CartPole frames it 'saw'."""
    root = tmp_path_factory.mktemp("arms")
    collect(
        root / "data", EnvSpec("CartPole-v1", frame_size=(24, 24)), n_episodes=8, progress=False
    )
    torch.manual_seed(0)
    save_model(Autoencoder(VAE), root / "vae")
    return root


def _cfg(obs, model_dir, steps=64):
    return resolve_config(
        "CartPole-v1",
        obs,
        "ppo",
        model_dir,
        steps,
        seed=1,
        overrides=FAST,
        env_given={"frame_size": 24},
        n_envs=2,
        eval_freq=64,
        eval_episodes=1,
    )


@pytest.mark.parametrize(("obs", "dim"), [("random", 8), ("pca", 8), ("state", 4)])
def test_control_arm_space_and_training(obs, dim, trained, tmp_path):
    model_dir = arm_model_dir(
        obs, str(trained / "vae"), str(trained / "data"), tmp_path / "controls", seed=1
    )
    cfg = _cfg(obs, model_dir)
    model = load_encoder(model_dir, device="cpu") if model_dir else None
    venv = build_vec_env(cfg, 2, 0, model)
    obs_batch = venv.reset()
    # codes are stacked twice (frame_stack 2 of 4 dims); the state is CartPole's 4 numbers
    assert venv.observation_space.shape == (dim,) and obs_batch.shape == (2, dim)
    assert obs_batch.dtype == np.float32
    venv.close()
    train_agent(cfg, tmp_path / "agent", progress=False)
    bundle = load_bundle(tmp_path / "agent", device="cpu")
    assert bundle.config.obs == obs
    assert (bundle.model is None) == (obs == "state")


def test_state_arm_sees_the_true_state(trained):
    cfg = _cfg("state", None)
    venv = build_vec_env(cfg, 1, 0, None)
    venv.seed(5)
    first = venv.reset()[0]
    inner = venv.venv.envs[0]  # VecMonitor -> DummyVecEnv
    np.testing.assert_allclose(first, inner.unwrapped.state, rtol=1e-6)
    venv.close()


def test_random_encoder_is_the_vae_architecture_untrained(trained, tmp_path):
    d1 = random_encoder_dir(trained / "vae", tmp_path, seed=3)
    d2 = random_encoder_dir(trained / "vae", tmp_path / "again", seed=3)
    m1, m2 = load_model(d1, device="cpu"), load_model(d2, device="cpu")
    vae = load_model(trained / "vae", device="cpu")
    assert m1.config == vae.config
    torch.testing.assert_close(m1.head.weight, m2.head.weight)  # seeded
    assert not torch.equal(m1.head.weight, vae.head.weight)
    other = load_model(random_encoder_dir(trained / "vae", tmp_path, seed=4), device="cpu")
    assert not torch.equal(m1.head.weight, other.head.weight)


def test_random_encoder_codes_are_standardised_on_the_training_frames(trained, tmp_path):
    raw = load_model(random_encoder_dir(trained / "vae", tmp_path / "raw", seed=3), device="cpu")
    d = random_encoder_dir(trained / "vae", tmp_path / "std", seed=3, data_dir=trained / "data")
    std = load_model(d, device="cpu")
    frames = EpisodeDataset(trained / "data").sample_frames(2_000, seed=0, which="train")
    z_raw, z = raw.encode(frames), std.encode(frames)
    assert z_raw.std(0).max() < 0.1  # an untrained encoder's codes barely vary
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, ddof=1), 1.0, rtol=1e-3)
    # a fixed affine map per dimension: the same information, another scale
    a = (z[:, 0] - z[:, 0].mean()) / z[:, 0].std()
    b = (z_raw[:, 0] - z_raw[:, 0].mean()) / z_raw[:, 0].std()
    np.testing.assert_allclose(a, b, atol=1e-3)
    torch.testing.assert_close(std.encoder.state_dict(), raw.encoder.state_dict())


def test_pca_matches_the_vae_size_and_reconstructs(trained, tmp_path):
    pca = load_encoder(pca_encoder_dir(trained / "vae", trained / "data", tmp_path), device="cpu")
    assert isinstance(pca, PCAEncoder) and pca.latent_dim == VAE.latent_dim
    frames = np.zeros((3, 24, 24, 3), np.uint8)
    assert pca.encode(frames).shape == (3, 4) and pca.reconstruct(frames).shape == frames.shape


def test_fit_pca_recovers_a_low_rank_subspace():
    rng = np.random.default_rng(0)
    basis = rng.uniform(0, 1, (3, 8 * 8 * 3))
    frames = np.round(rng.uniform(0, 1, (300, 3)) @ basis / 3 * 255).astype(np.uint8)
    pca = fit_pca(frames.reshape(300, 8, 8, 3), 3)
    z = pca.encode(frames.reshape(300, 8, 8, 3))
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=0.01)  # whitened
    err = np.abs(
        pca.reconstruct(frames.reshape(300, 8, 8, 3)).astype(int) - frames.reshape(300, 8, 8, 3)
    )
    assert err.max() <= 2  # rank 3 data: only rounding is lost
    with pytest.raises(ValueError, match="latent_dim must be in"):
        fit_pca(frames.reshape(300, 8, 8, 3)[:3], 3)


def test_pca_codes_are_the_whitened_projection_on_torchs_threads():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    pca = fit_pca(frames, 5)
    x = frames.reshape(40, -1).astype(np.float64) / 255.0
    expected = (x - pca.mean) @ pca.components.T.astype(np.float64) / pca.scale
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a compare worker: the projection keeps to it
    try:
        z = pca.encode(frames)
        one = pca.encode(frames[7])
    finally:
        torch.set_num_threads(before)
    assert z.dtype == np.float32 and z.shape == (40, 5) and one.shape == (5,)
    np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(one, z[7], rtol=1e-5, atol=1e-6)


def test_impossible_arms_are_rejected_together():
    assert arm_problems(("pixel", "latent", "state"), "CartPole-v1", "vae", None) == []
    problems = arm_problems(("state", "pca", "latent", "nope"), "ALE/Pong-v5", None, None)
    assert len(problems) == 5  # pca lacks both the model and the data
    with pytest.raises(ValueError, match=r"'state': ALE/Pong-v5 has no known") as e:
        check_arms(("pixel", "state"), "ALE/Pong-v5", None)
    assert "--obs pixel,state" in str(e.value)
    with pytest.raises(ValueError, match="needs the pretrained model"):
        check_arms(("random",), "CartPole-v1", None)
    with pytest.raises(ValueError, match="listed twice"):
        check_arms(("pixel", "pixel"), "CartPole-v1", None)
    assert set(ARMS) >= {"pixel", "latent", "encoder", "random", "pca", "state"}


@pytest.mark.parametrize("obs", ["pixel", "latent", "state"])
def test_sac_from_pixels_latents_and_state_on_pendulum(obs, tmp_path):
    torch.manual_seed(0)
    vae40 = AutoencoderConfig(kind="vae", frame_shape=(40, 40, 3), latent_dim=4, channels=(8, 16))
    save_model(Autoencoder(vae40), tmp_path / "vae")  # SB3's CnnPolicy needs >= 36 pixels
    cfg = resolve_config(
        "Pendulum-v1",
        obs,
        "sac",
        str(tmp_path / "vae") if obs == "latent" else None,
        48,
        seed=0,
        overrides={"learning_starts": 16, "buffer_size": 100, "batch_size": 8},
        env_given={"frame_size": 40, "max_episode_steps": 24},
        eval_freq=48,
        eval_episodes=1,
    )
    assert cfg.obs_options["frame_stack"] == (1 if obs == "state" else 2)  # Pendulum-v1.yaml
    assert cfg.env.frame_size == (40, 40) and cfg.env.max_episode_steps == 24
    venv = build_vec_env(cfg, 1, 0, load_encoder(tmp_path / "vae") if obs == "latent" else None)
    shape = {"pixel": (40, 40, 6), "latent": (8,), "state": (3,)}[obs]
    assert venv.observation_space.shape == shape
    venv.close()
    train_agent(cfg, tmp_path / "agent", progress=False)
    assert (tmp_path / "agent" / "eval.csv").read_text().splitlines()[-1].startswith("48,")
    assert load_bundle(tmp_path / "agent", device="cpu").config.algo == "sac"
