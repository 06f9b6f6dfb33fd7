"""Wall-clock budgets (VAE and agents) and scoring an envpool-trained agent on gymnasium."""

import json
import warnings

import numpy as np
import pytest

from agents import evaluate_bundle, resolve_config, train_agent
from agents.pipeline import PRESETS
from envs.backends import BackendMismatchWarning
from tests.conftest import write_synthetic_dataset
from worldvae.vae.trainer import TrainConfig, is_finished, train_autoencoder

FAST = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}


def test_vae_time_budget_ends_the_run_as_finished(tmp_path):
    data = write_synthetic_dataset(
        tmp_path / "ds", n_episodes=6, length=12, frame_shape=(16, 16, 3)
    )
    cfg = TrainConfig(
        model={"kind": "vae", "latent_dim": 4, "channels": [8, 16]},
        epochs=50,
        batch_size=8,
        max_seconds=1e-6,
    )
    result = train_autoencoder(data, tmp_path / "run", cfg, progress=False)
    assert result.epochs_done == 1 and result.stopped_early
    assert is_finished(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "best" / "model.safetensors").is_file()


def test_agent_time_budget_stops_training_early(tmp_path):
    cfg = resolve_config(
        "CartPole-v1",
        "pixel",
        "ppo",
        None,
        1_000_000,
        overrides=FAST,
        env_given={"frame_size": 40},
        n_envs=2,
        eval_freq=10_000_000,
        eval_episodes=1,
        max_train_seconds=1e-6,
    )
    result = train_agent(cfg, tmp_path / "agent", progress=False)
    info = json.loads((tmp_path / "agent" / "config.json").read_text())
    assert info["status"] == "complete" and info["steps"] < 1_000
    assert info["agent"]["max_train_seconds"] == 1e-6
    assert np.isfinite(result.final_mean_return)


def test_envpool_agent_scores_on_gymnasium_tracks(tmp_path, capfd):
    pytest.importorskip("envpool")
    cfg = resolve_config(
        "CarRacing-v3",
        "pixel",
        "ppo",
        None,
        64,
        overrides=FAST,
        env_given={"frame_size": 40, "max_episode_steps": 20, "backend": "auto"},
        n_envs=2,
        eval_freq=64,
        eval_episodes=1,
    )
    assert cfg.env.backend == "envpool"
    train_agent(cfg, tmp_path / "agent", progress=False)
    own = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    with pytest.warns(
        BackendMismatchWarning, match="envpool backend but the env runs on gymnasium"
    ):
        canonical = evaluate_bundle(tmp_path / "agent", 2, device="cpu", backend="gymnasium")
    assert own.returns.shape == canonical.returns.shape == (2,)
    assert not np.allclose(own.returns, canonical.returns)  # other tracks, other returns
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        split = evaluate_bundle(tmp_path / "agent", 2, device="cpu", backend="gymnasium", workers=2)
    assert split.returns.tolist() == canonical.returns.tolist()
    said = [w for w in seen if issubclass(w.category, BackendMismatchWarning)]
    assert len(said) == 1  # once for the call, not once per process
    assert "BackendMismatchWarning" not in capfd.readouterr().err
    with pytest.raises(ValueError, match="envpool has no equivalent"):
        resolve_config("MiniGrid-Empty-5x5-v0", "pixel", env_given={"backend": "envpool"})


def test_carracing_preset_is_budgeted_in_wall_clock():
    p = PRESETS["carracing"]
    assert p.env.env_id == "CarRacing-v3" and p.env.backend == "envpool"
    assert p.collect.policy == "brownian" and p.compare.max_train_seconds and p.vae.max_seconds
    assert p.canonical.episodes == 100
    assert p.compare.obs_kinds == ("pixel", "latent", "random", "pca")  # with the controls


def test_pipeline_settings_must_be_preset_fields(tmp_path):
    from agents.pipeline import run_pipeline

    with pytest.raises(ValueError, match=r"unknown preset setting 'max_train_second'; did you "
                       r"mean compare\.max_train_seconds\?"):  # fmt: skip
        run_pipeline("smoke", tmp_path / "p", settings={"max_train_second": 10})
    assert not (tmp_path / "p").exists()  # refused before any stage ran
