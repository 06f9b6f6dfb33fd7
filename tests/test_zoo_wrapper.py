"""The latent wrappers on the env as ``gym.make`` gives it (how RL zoo's ``env_wrapper`` calls
them): the model's recorded env spec is applied, and the latents are those of ``make_env``."""

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import AddRenderObservation, RepeatAction

from envs import FramePreprocess, LatentObservation, make_env, preprocess_frames
from envs.latent_memory import LatentMemoryObservation
from worldvae.envspec import EnvSpec
from worldvae.memory import MDNRNN, MemoryConfig
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

ROOT = Path(__file__).resolve().parents[1]
SIZE = 16
# CartPole's 400x600 render, its top and sides cropped, resized to 16 px
SPEC = EnvSpec(
    "CartPole-v1", frame_size=SIZE, crop=(100, 0, 100, 100), frame_skip=2, backend="gymnasium"
)


def _model(frame_shape: tuple[int, int, int]) -> Autoencoder:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=frame_shape, latent_dim=4, channels=(8, 16))
    return Autoencoder(cfg).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A V of 16 px CartPole frames that records its env spec, as train-vae writes it."""
    path = tmp_path_factory.mktemp("v") / "model"
    save_model(_model(SPEC.frame_shape), path, extra={"data": SPEC.to_dict()})
    return path


def _raw_cartpole(**kwargs) -> gym.Env:
    return gym.make("CartPole-v1", render_mode="rgb_array", **kwargs)


def _rollout(env: gym.Env, seed: int, n_steps: int) -> list[tuple]:
    obs, _ = env.reset(seed=seed)
    steps: list[tuple] = [(obs,)]
    for t in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(t % 2)
        steps.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return steps


def _assert_same_rollouts(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for step_a, step_b in zip(a, b, strict=True):
        np.testing.assert_array_equal(step_a[0], step_b[0])
        assert step_a[1:] == step_b[1:]


@pytest.mark.parametrize(
    "raw",
    [
        _raw_cartpole,  # the wrapper adds the render as observation itself
        lambda: AddRenderObservation(_raw_cartpole()),
        lambda: RepeatAction(AddRenderObservation(_raw_cartpole()), 2),  # frame skip done already
    ],
    ids=["observations", "AddRenderObservation", "RepeatAction"],
)
def test_raw_env_gives_the_latents_of_make_env(model_dir, raw):
    ours = LatentObservation(make_env(SPEC), str(model_dir), frame_stack=2, runtime="torch")
    zoo = LatentObservation(raw(), str(model_dir), frame_stack=2, runtime="torch")
    assert zoo.env_spec == SPEC and zoo.observation_space == ours.observation_space
    _assert_same_rollouts(_rollout(zoo, 3, 12), _rollout(ours, 3, 12))


def test_memory_wrapper_takes_the_raw_env_too(model_dir):
    memory = MDNRNN(MemoryConfig(latent_dim=4, action_dim=2, hidden_size=8, n_gaussians=2)).eval()
    ours = LatentMemoryObservation(make_env(SPEC), str(model_dir), memory, runtime="torch")
    zoo = LatentMemoryObservation(_raw_cartpole(), str(model_dir), memory, runtime="torch")
    assert zoo.env_spec == SPEC
    _assert_same_rollouts(_rollout(zoo, 5, 6), _rollout(ours, 5, 6))


def test_another_env_is_refused_naming_both(model_dir):
    with pytest.raises(
        ValueError, match=r"trained on frames of CartPole-v1, the env is Acrobot-v1"
    ):
        LatentObservation(gym.make("Acrobot-v1", render_mode="rgb_array"), str(model_dir))


@pytest.mark.parametrize(
    ("env_fn", "problem"),
    [
        (lambda: make_env(SPEC.replace(frame_size=24)), r"frames: recorded \(16, 16, 3\)"),
        (
            lambda: _raw_cartpole(sutton_barto_reward=True),
            "sutton_barto_reward: recorded None, the env has True",
        ),
        (lambda: RepeatAction(_raw_cartpole(), 3), "frame_skip: recorded 2, the env has 3"),
    ],
    ids=["preprocessed", "env-kwargs", "frame-skip"],
)
def test_spec_mismatch_names_both_values(model_dir, env_fn, problem):
    with pytest.raises(
        ValueError, match=f"disagrees with the env spec the model records.*{problem}"
    ):
        LatentObservation(env_fn(), str(model_dir))


def test_env_without_frames_says_how_to_render(model_dir):
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        LatentObservation(gym.make("CartPole-v1"), str(model_dir))


def test_frame_preprocess_takes_yaml_literals():
    """A YAML file gives lists and ints: the same frames as tuples give."""
    env = FramePreprocess(
        AddRenderObservation(_raw_cartpole()), crop=[100, 0, 100, 100], grayscale=True, size=SIZE
    )
    ref = preprocess_frames(
        AddRenderObservation(_raw_cartpole()), (SIZE, SIZE), crop=(100, 0, 100, 100), grayscale=True
    )
    assert env.observation_space.shape == ref.observation_space.shape == (SIZE, SIZE, 1)
    np.testing.assert_array_equal(env.reset(seed=1)[0], ref.reset(seed=1)[0])
    with pytest.raises(ValueError, match="crop must be"):
        FramePreprocess(AddRenderObservation(_raw_cartpole()), crop=[1, 2])


ZOO_HYPERPARAMS = """\
CartPole-v1:
  n_envs: 2
  n_timesteps: 256
  policy: MlpPolicy
  n_steps: 64
  batch_size: 64
  n_epochs: 1
  env_kwargs:
    render_mode: rgb_array
  env_wrapper:
    - envs.latent.LatentObservation:
        model: {model}
        frame_stack: 2
"""


@pytest.mark.slow
def test_rl_zoo_trains_on_our_wrapper(model_dir, tmp_path):
    pytest.importorskip("rl_zoo3")
    conf = tmp_path / "cartpole.yml"
    conf.write_text(ZOO_HYPERPARAMS.format(model=model_dir))
    cmd = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "-n",
        "256",
        "--conf-file",
        str(conf),
        "-f",
        str(tmp_path / "logs"),
        "--eval-freq",
        "-1",
        "--seed",
        "0",
        "--vec-env",
        "dummy",
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = list((tmp_path / "logs" / "ppo").glob("CartPole-v1_*/CartPole-v1.zip"))
    assert len(saved) == 1
    from stable_baselines3 import PPO

    assert PPO.load(saved[0], device="cpu").observation_space.shape == (2 * 4,)  # 2 latents
