"""One env spec from collection to every agent: the VAE and all arms see the same frames."""

import pytest

from agents import resolve_config
from agents.comparison import CompareConfig
from agents.control_arms import random_encoder_dir
from envs import collect
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.vae.trainer import TrainConfig, train_autoencoder

CROP = [4, 2, 0, 0]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    """A tiny VAE trained on cropped 16x16 CartPole frames: (dataset, run directory)."""
    root = tmp_path_factory.mktemp("spec")
    opts = {"frame_size": 16, "crop": CROP, "backend": "gymnasium"}
    collect(root / "data", "CartPole-v1", n_episodes=4, env_options=opts, progress=False)
    cfg = TrainConfig(
        model={"kind": "vae", "latent_dim": 4, "channels": (8, 16)},
        epochs=1,
        batch_size=16,
        device="cpu",
    )
    train_autoencoder(root / "data", root / "vae", cfg, progress=False)
    return root / "data", root / "vae"


def test_the_model_records_the_dataset_spec(vae_run):
    spec = read_env_spec(vae_run[1])
    assert spec is not None and spec.env_id == "CartPole-v1"
    assert spec.options["crop"] == CROP and spec.options["frame_size"] == [16, 16]


@pytest.mark.parametrize("obs", ["latent", "encoder"])
def test_agents_on_the_model_take_its_spec(vae_run, obs):
    cfg = resolve_config("CartPole-v1", obs, model_dir=str(vae_run[1]))
    assert cfg.env_options["crop"] == CROP and cfg.env_options["frame_size"] == [16, 16]


def test_every_arm_of_a_comparison_sees_the_vae_frames(vae_run, tmp_path):
    cmp = CompareConfig(env_id="CartPole-v1", model_dir=str(vae_run[1]))
    pixel = cmp.agent_config("pixel", seed=0)  # no model of its own: the VAE's spec all the same
    latent = cmp.agent_config("latent", seed=0)
    rand = cmp.agent_config("random", 0, str(random_encoder_dir(vae_run[1], tmp_path, 0)))
    for cfg in (pixel, latent, rand):
        assert cfg.env_options["crop"] == CROP and cfg.env_options["frame_size"] == [16, 16]


def test_a_given_option_that_contradicts_the_spec_names_both_values(vae_run):
    with pytest.raises(ValueError, match=r"crop: recorded \[4, 2, 0, 0\], given \[0, 12, 0, 0\]"):
        resolve_config(
            "CartPole-v1", "latent", model_dir=str(vae_run[1]), env_options={"crop": (0, 12, 0, 0)}
        )
    with pytest.raises(ValueError, match="frame_size: recorded"):
        CompareConfig(
            env_id="CartPole-v1", model_dir=str(vae_run[1]), env_options={"frame_size": [32, 32]}
        ).agent_config("pixel", 0)
    # agreeing and free options pass: a longer time limit does not change a frame
    cfg = resolve_config(
        "CartPole-v1",
        "latent",
        model_dir=str(vae_run[1]),
        env_options={"crop": CROP, "max_episode_steps": 1000},
    )
    assert cfg.env_options["max_episode_steps"] == 1000


def test_without_a_recorded_spec_the_env_recommended_options_apply():
    cfg = resolve_config("CarRacing-v3", "pixel", env_options={"backend": "gymnasium"})
    assert cfg.env_options["crop"] == [0, 12, 0, 0] and cfg.env_options["frame_skip"] == 2
    assert resolve_config("CartPole-v1", "pixel").env_options["crop"] is None
    assert EnvSpec.from_dict({"env_id": "x"}) is None  # a record without options holds no spec
