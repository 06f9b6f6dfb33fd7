import json

import torch

from agents.comparison import CompareConfig, run_comparison
from agents.report import write_report
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model


def test_comparison_with_zero_shot_shifted_evaluation(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(
            kind="vae", frame_shape=(64, 64, 3), latent_dim=8, channels=(8, 16, 32, 32)
        )
    )
    save_model(model, tmp_path / "vae")
    cfg = CompareConfig(
        env_id="CarRacing-v3",
        model_dir=str(tmp_path / "vae"),
        seeds=(0,),
        total_timesteps=64,
        eval_freq=64,
        eval_episodes=1,
        final_eval_episodes=1,
        vae_frames=1000,
        threshold=-1000.0,  # reached at once: the with/without-pretraining columns differ by vae_frames
        shifted_env_kwargs={"domain_randomize": True},
        env_given={"frame_size": 64, "max_episode_steps": 30},
        overrides={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        n_envs=2,
    )
    result = run_comparison(cfg, tmp_path / "cmp", progress=False)
    rows = {r["obs"]: r for r in result.runs}
    assert set(rows) == {"pixel", "latent"}
    for r in rows.values():
        assert isinstance(r["shifted_return_mean"], float)
    assert (
        rows["latent"]["steps_to_threshold_with_pretraining"]
        == rows["latent"]["steps_to_threshold"] + 1000
    )
    assert (
        rows["pixel"]["steps_to_threshold_with_pretraining"] == rows["pixel"]["steps_to_threshold"]
    )
    report = write_report(result, tmp_path / "cmp" / "report", "worldvae compare ...")
    assert "zero-shot shifted return" in report.read_text()
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["config"]["shifted_env_kwargs"] == {"domain_randomize": True}
    assert saved["config"]["env_given"] == {"frame_size": 64, "max_episode_steps": 30}
