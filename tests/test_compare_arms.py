"""Comparisons with the control arms: one run per arm, probes, probability of improvement, the
report, and impossible arms refused before anything trains."""

import json

import numpy as np
import pytest
import torch

from agents.cli.main import main
from agents.comparison import CompareConfig, add_threshold_columns, run_comparison
from agents.report import write_report
from envs import collect
from worldvae.data import Manifest
from worldvae.envspec import EnvSpec
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model


@pytest.fixture(scope="module")
def vae_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    spec = EnvSpec("CartPole-v1", frame_size=(40, 40), max_episode_steps=40)
    collect(root / "data", spec, n_episodes=12, progress=False)
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=(40, 40, 3), latent_dim=4, channels=(8, 16))
    save_model(Autoencoder(cfg), root / "vae")
    return root


@pytest.mark.slow
def test_comparison_of_every_code_arm_with_probes(vae_and_data, tmp_path, capsys):
    cfg = CompareConfig(
        env_id="CartPole-v1",
        model_dir=str(vae_and_data / "vae"),
        data_dir=str(vae_and_data / "data"),
        obs_kinds=("pixel", "latent", "random", "pca", "state"),
        seeds=(0, 1),
        total_timesteps=64,
        eval_freq=64,
        eval_episodes=1,
        final_eval_episodes=2,
        env_given={"frame_size": 40, "max_episode_steps": 40},  # CnnPolicy needs >= 36
        overrides={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        n_envs=2,
        deterministic_eval=False,
    )
    # every arm plays the dataset's env spec, which the options given agree with
    assert cfg.arm_env_given() == Manifest.load(vae_and_data / "data").env_options
    assert cfg.agent_config("pixel", 0).env == Manifest.load(vae_and_data / "data").env_spec
    result = run_comparison(cfg, tmp_path / "cmp", progress=True)
    assert "compare" in capsys.readouterr().err  # the one progress bar over all runs
    assert {r["obs"] for r in result.runs} == set(cfg.obs_kinds) and len(result.runs) == 10
    assert set(result.improvement) == {"latent", "random", "pca", "state"}
    for poi in result.improvement.values():
        assert 0.0 <= poi["ci"][0] <= poi["probability"] <= poi["ci"][1] <= 1.0
    assert set(result.probes["r2"]) == {"latent", "random", "pca"}
    assert result.probes["state_names"] == ["x", "x_dot", "theta", "theta_dot"]
    assert (tmp_path / "cmp" / "controls" / "pca" / "model.safetensors").is_file()
    assert (tmp_path / "cmp" / "controls" / "random_seed1" / "model.safetensors").is_file()
    for v in result.summary.values():
        assert v["iqm_is_mean"] and len(v["steps_to_threshold_iqm_ci"]) == 2
    saved = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert saved["config"]["deterministic_eval"] is False
    report = write_report(result, tmp_path / "cmp" / "report", "worldvae compare ...").read_text()
    for arm in cfg.obs_kinds:
        assert f"| {arm} |" in report
    assert "IQM is the plain mean" in report and "theta_dot" in report
    assert (tmp_path / "cmp" / "report" / "profiles.png").is_file()


def test_threshold_columns_ignore_the_step_zero_evaluation():
    rows = [{"obs": "pixel"}, {"obs": "latent"}]
    curves = [
        {"steps": np.array([0, 100, 200]), "seconds": np.array([0.0, 1.0, 2.0]),
         "mean_return": np.array([9.0, 0.0, 9.0])},
        {"steps": np.array([0, 100]), "seconds": np.array([0.0, 1.5]),
         "mean_return": np.array([9.0, 0.0])},
    ]  # fmt: skip
    add_threshold_columns(rows, curves, threshold=5.0, vae_frames=1000)
    assert rows[0]["steps_to_threshold"] == 200 and rows[0]["seconds_to_threshold"] == 2.0
    assert rows[1]["steps_to_threshold"] is None  # lucky at step 0 only: never reached


def test_an_unreached_threshold_counts_the_steps_trained_not_the_step_cap():
    from agents.comparison import summarize

    def row(obs, steps, secs, trained):
        return {
            "obs": obs, "final_return_mean": 1.0, "auc": 0.0, "steps_per_second": 100.0,
            "train_seconds": 300.0, "budget_steps": 2_000_000, "steps_trained": trained,
            "steps_to_threshold": steps, "seconds_to_threshold": secs,
            "steps_to_threshold_with_pretraining": steps,
        }  # fmt: skip

    rows = [row("pixel", None, None, 36_000 + i) for i in range(4)]
    rows.append(row("pixel", 24_000, 200.0, 37_000))
    s = summarize(rows, ("pixel",))["pixel"]
    assert s["seeds_reaching_threshold"] == 1 and s["steps_to_threshold"] == 24_000
    # wall-clock stopped the runs near 36k steps: the 2M cap is no bound on when they'd reach it
    assert 24_000 <= s["steps_to_threshold_iqm_ci"][0] <= s["steps_to_threshold_iqm_ci"][1] < 37_000
    assert s["seconds_to_threshold_iqm_ci"][1] == 300.0


def test_impossible_arms_fail_before_training(vae_and_data, tmp_path, capsys):
    cfg = CompareConfig(
        env_id="ALE/Pong-v5", model_dir=str(vae_and_data / "vae"), obs_kinds=("pixel", "state")
    )
    with pytest.raises(ValueError, match="'state': ALE/Pong-v5 has no known"):
        run_comparison(cfg, tmp_path / "cmp", progress=False)
    assert not (tmp_path / "cmp" / "runs").exists()
    status = main(
        [
            "compare",
            "--env",
            "ALE/Pong-v5",
            "--obs",
            "pixel,pca,state",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("worldvae: error: --obs pixel,pca,state")
    assert "'pca' needs the pretrained model" in err and "'state': ALE/Pong-v5 has no known" in err
    status = main(
        ["compare", "--env", "CartPole-v1", "--obs", "pixel,sound", "--out", str(tmp_path / "c")]
    )
    assert status == 1 and "'sound'" in capsys.readouterr().err
    assert not (tmp_path / "c" / "runs").exists()


def test_time_to_threshold_separates_only_when_the_faster_arm_is_fully_timed():
    from agents.comparison import ComparisonResult
    from agents.report import separations

    def arm(reached, secs_ci):
        return {
            "n_seeds": 5,
            "seeds_reaching_threshold": reached,
            "iqm_ci": [0.0, 1.0],
            "steps_to_threshold_iqm_ci": [5.0, 6.0],
            "seconds_to_threshold_iqm_ci": secs_ci,
        }

    def result(latent_reached, pixel_reached=5, pixel_ci=(300.0, 340.0)):
        summary = {
            "pixel": arm(pixel_reached, list(pixel_ci)),
            "latent": arm(latent_reached, [160.0, 190.0]),
        }
        return ComparisonResult(None, [], summary, 0.0, 0.5, {}, None)  # type: ignore[arg-type]

    assert separations(result(5))["seconds to threshold"] == "latent"
    # latent reached it once: its other "times" are lower bounds, so its interval may be later
    assert separations(result(1))["seconds to threshold"] == ""
    # pixel mostly never reached it: its interval is a lower bound, which only widens the gap
    assert separations(result(5, pixel_reached=2))["seconds to threshold"] == "latent"
    # ...but an interval that starts before the faster arm's ends separates nothing
    assert separations(result(5, 2, (180.0, 340.0)))["seconds to threshold"] == ""
    # pixel fully timed and ahead: latent's unreached seeds only push latent later
    assert separations(result(4, 5, (100.0, 150.0)))["seconds to threshold"] == "pixel"
    assert separations(result(5))["steps to threshold"] == ""


def test_the_controls_verdict_says_whether_training_the_vae_mattered():
    from agents.comparison import ComparisonResult
    from agents.report import controls_verdict

    finals = {"latent": [500, 600, 700], "random": [100, 200, 650], "pca": [50, 60, 70]}
    runs = [{"obs": o, "final_return_mean": float(v)} for o, vs in finals.items() for v in vs]
    summary = {o: {"iqm": float(np.mean(v)), "iqm_ci": [min(v), max(v)]} for o, v in finals.items()}
    result = ComparisonResult(None, runs, summary, 0.0, 0.5, {}, None)  # type: ignore[arg-type]
    text = controls_verdict(result)
    # latent beats random in 7 of the 9 pairs of runs, pca in all 9
    assert "P(latent > random) = 0.78 [" in text and "P(latent > pca) = 1.00 [" in text
    assert "final IQM latent 600.00 [500.00, 700.00], random 316.67" in text
    del summary["random"], summary["pca"]
    assert controls_verdict(result) == ""  # no control arm ran: nothing to say
