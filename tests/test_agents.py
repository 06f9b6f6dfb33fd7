import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from agents import evaluate_bundle, load_bundle, load_hyperparams, resolve_config, train_agent
from agents.agent_config import validate_hyperparams
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vae") / "model"
    save_model(
        Autoencoder(
            AutoencoderConfig(
                kind="vae", frame_shape=(40, 40, 3), latent_dim=8, channels=(8, 16, 32)
            )
        ),
        path,
    )
    return path


def _cfg(obs, model_dir=None, steps=256, **kw):
    hp = {"env_given": {"frame_size": 40}, "n_envs": 2, "eval_freq": 128, "eval_episodes": 2}
    return resolve_config(
        "CartPole-v1", obs, "ppo", model_dir, steps, seed=1, overrides=FAST, **(hp | kw)
    )


@pytest.mark.parametrize("obs", ["pixel", "latent", "encoder"])
def test_ppo_trains_and_bundle_round_trips(obs, model_dir, tmp_path):
    cfg = _cfg(obs, model_dir if obs != "pixel" else None)
    result = train_agent(cfg, tmp_path / "agent", progress=False)
    assert result.steps_per_second > 0 and np.isfinite(result.final_mean_return)
    rows = (tmp_path / "agent" / "eval.csv").read_text().splitlines()
    assert rows[0] == "steps,seconds,wall_seconds,mean_return,std_return"
    assert len(rows) >= 3 and rows[-1].startswith("256,")
    bundle = load_bundle(tmp_path / "agent", device="cpu")
    venv = bundle.make_env(1, 0)
    obs_batch = np.stack([venv.reset()[0] for _ in range(4)])
    venv.close()
    again = load_bundle(tmp_path / "agent", device="cpu")
    a1, _ = bundle.agent.predict(obs_batch, deterministic=True)
    a2, _ = again.agent.predict(obs_batch, deterministic=True)
    np.testing.assert_array_equal(a1, a2)
    r1 = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    r2 = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    np.testing.assert_array_equal(r1.returns, r2.returns)  # fixed seeds, deterministic policy


def test_saved_agent_acts_like_the_trained_one(model_dir, tmp_path):
    cfg = _cfg("latent", model_dir)
    train_agent(cfg, tmp_path / "agent", progress=False)
    bundle = load_bundle(tmp_path / "agent", device="cpu")
    import stable_baselines3 as sb3

    # The same zip loaded by SB3 itself (trusted here) must agree with our pickle-free loader.
    plain = sb3.PPO.load(tmp_path / "agent" / "agent.zip", device="cpu")
    obs = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    np.testing.assert_array_equal(
        bundle.agent.predict(obs, deterministic=True)[0], plain.predict(obs, deterministic=True)[0]
    )


def test_bundle_with_changed_model_is_refused(model_dir, tmp_path):
    train_agent(_cfg("latent", model_dir), tmp_path / "agent", progress=False)
    weights = tmp_path / "agent" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="changed since the agent was trained on it"):
        load_bundle(tmp_path / "agent")


def test_existing_agent_is_not_overwritten_unless_asked(tmp_path):
    cfg = _cfg("pixel", None, 64, eval_freq=64)
    train_agent(cfg, tmp_path / "a", progress=False)
    with pytest.raises(FileExistsError, match="already holds a trained agent"):
        train_agent(cfg, tmp_path / "a", progress=False)
    assert train_agent(cfg, tmp_path / "a", skip_complete=True, progress=False).skipped


def test_hyperparams_reject_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['n_stepz'\] in section 'ppo'"):
        validate_hyperparams({"ppo": {"n_stepz": 5}}, "x.yaml")
    with pytest.raises(ValueError, match="unknown section 'ppoo'"):
        validate_hyperparams({"ppoo": {}}, "x.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ppo:\n  learning_rate: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_hyperparams("CartPole-v1", bad)
    assert "env" not in load_hyperparams("CarRacing-v3")
    with pytest.raises(ValueError, match="'env' section is not a hyperparameter"):
        validate_hyperparams({"env": {"frame_size": 40}}, "x.yaml")


def test_latent_needs_a_model():
    with pytest.raises(ValueError, match="needs a pretrained model"):
        resolve_config("CartPole-v1", "latent")


@pytest.mark.slow
def test_cli_train_and_evaluate_with_video(model_dir, tmp_path):
    hp = tmp_path / "hp.yaml"
    hp.write_text("ppo:\n  n_envs: 2\n  n_steps: 32\n  batch_size: 32\n  n_epochs: 1\n")
    agent = tmp_path / "agent"
    run = [sys.executable, "-m", "worldvae"]
    subprocess.run([*run, "train-agent", "--env", "CartPole-v1", "--obs", "latent", "--model", str(model_dir), "--frame-size", "40", "--steps", "64", "--eval-freq", "64", "--eval-episodes", "1", "--hyperparams", str(hp), "--out", str(agent)], check=True, capture_output=True)  # fmt: skip
    out = subprocess.run([*run, "evaluate", str(agent), "--episodes", "2", "--video", str(tmp_path / "v.mp4")], check=True, capture_output=True, text=True)  # fmt: skip
    assert "return" in out.stdout and (tmp_path / "v.mp4").stat().st_size > 1000
    info = json.loads((agent / "config.json").read_text())
    assert info["status"] == "complete" and info["agent"]["obs"] == "latent"


def test_recurrent_ppo_trains_on_latents_and_its_lstm_state_runs_through_episodes(
    model_dir, tmp_path
):
    pytest.importorskip("sb3_contrib")
    from agents.environments import evaluate_policy_seeded

    cfg = resolve_config("CartPole-v1", "latent", "recurrentppo", model_dir, 128, seed=1,
                         overrides=FAST | {"policy_kwargs": {"lstm_hidden_size": 16}},
                         env_given={"frame_size": 40}, n_envs=2, eval_freq=64,
                         eval_episodes=2)  # fmt: skip
    result = train_agent(cfg, tmp_path / "agent", progress=False)
    assert np.isfinite(result.final_mean_return)
    assert json.loads((tmp_path / "agent" / "config.json").read_text())["steps"] == 128
    bundle = load_bundle(tmp_path / "agent", device="cpu")
    assert type(bundle.agent).__name__ == "RecurrentPPO"
    assert bundle.agent.policy.lstm_actor.hidden_size == 16
    r1 = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    r2 = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    np.testing.assert_array_equal(r1.returns, r2.returns)

    class Spy:  # what the evaluation hands the policy, step by step
        def __init__(self, agent):
            self.agent, self.policy, self.starts, self.states = agent, agent.policy, [], []

        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            self.starts.append(bool(episode_start[0]))
            self.states.append(state)
            return self.agent.predict(obs, state, episode_start, deterministic)

    spy = Spy(bundle.agent)
    venv = bundle.make_env(1, 0)
    returns = evaluate_policy_seeded(spy, venv, 2, seed=5)
    venv.close()
    assert returns.shape == (2,)
    assert spy.starts.count(True) == 2 and spy.starts[0]  # a fresh state at each episode's start
    assert spy.states[0] is None and spy.states[1] is not None  # then carried step to step
