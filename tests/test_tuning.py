"""``worldvae tune``: a real Optuna study of tiny latent PPO agents on CartPole frames."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from agents import resolve_config
from agents.cli.main import main
from agents.tuning import (
    BEST_YAML,
    NET_ARCHS,
    TuneConfig,
    import_optuna,
    rdb_storage,
    sample_section,
    search_space,
    study_url,
    tune,
)
from worldvae.rundir import ForeignDirError
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model
from worldvae.workers import max_local_workers

optuna = pytest.importorskip("optuna")

# 128 env steps a trial, evaluated at 0, 64 and 128 on one fixed-seed episode of at most 50 steps.
AGENT_FLAGS = ["--env", "CartPole-v1", "--obs", "latent", "--frame-size", "40", "--max-episode-steps", "50", "--steps", "128", "--n-envs", "2", "--eval-freq", "64", "--eval-episodes", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Trials of a few hundred steps run faster on one thread than on contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def _cfg(model_dir: Path, steps: int = 128):
    return resolve_config(
        "CartPole-v1",
        "latent",
        "ppo",
        str(model_dir),
        steps,
        seed=1,
        env_given={"frame_size": 40, "max_episode_steps": 50},
        n_envs=2,
        eval_freq=64,
        eval_episodes=1,
    )


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv") as f:
        return list(csv.DictReader(f))


def _study(out: Path):
    return optuna.load_study(study_name="tune", storage=rdb_storage(optuna, study_url(out)))


def test_space_fits_the_trial_and_batches_fit_the_rollout():
    space = search_space("ppo", n_envs=2, steps=128)
    assert space["n_steps"].choices == (32, 64)  # rollouts of 2 x n_steps within 128 steps
    assert search_space("ppo", n_envs=8, steps=100)["n_steps"].choices == (32,)  # the smallest
    fixed = {name: (dim.choices[-1] if dim.choices else dim.low) for name, dim in space.items()}
    base = {"learning_rate": {"linear": 0.001}, "policy_kwargs": {"ortho_init": False}}
    section = sample_section(optuna.trial.FixedTrial(fixed), space, base, n_envs=2)
    assert section["batch_size"] == 128  # 512 sampled, clipped to one rollout of 2 x 64
    assert section["learning_rate"] == space["learning_rate"].low
    assert section["policy_kwargs"] == {"ortho_init": False, "net_arch": NET_ARCHS["medium"]}
    with pytest.raises(ValueError, match="no search space for --algo cmaes"):
        search_space("cmaes", 1, 1000)


@pytest.mark.slow
def test_tune_resumes_and_writes_best_yaml_that_train_agent_accepts(model_dir, tmp_path, capsys):
    out = tmp_path / "study"
    # No pruning here (warm-up: the whole trial): every trial that runs is complete.
    command = ["tune", *AGENT_FLAGS, "--model", str(model_dir), "--startup-trials", "1", "--warmup-steps", "128", "--out", str(out)]  # fmt: skip
    assert main([*command, "--trials", "2"]) == 0
    first = _rows(out)
    assert [r["state"] for r in first] == ["complete", "complete"]
    assert {"study.db", "best.yaml", "trials.csv", "history.png", "tb"} <= {
        p.name for p in out.iterdir()
    }
    assert "train with: worldvae train-agent" in capsys.readouterr().out

    # A run killed mid-trial leaves it running in the study: the next run trains it again.
    study = _study(out)
    killed = study.ask()
    lr = killed.suggest_float("learning_rate", 1e-5, 3e-3, log=True)
    assert main([*command, "--trials", "3"]) == 0
    rows = _rows(out)
    assert rows[:2] == first  # the finished trials are kept, not re-run
    assert [r["state"] for r in rows] == ["complete", "complete", "cut", "complete"]
    retry = _study(out).trials[3]
    assert retry.user_attrs["retry_of"] == killed.number and retry.params["learning_rate"] == lr

    # The same study with other settings is refused, naming what differs.
    assert main([*command, "--trials", "4", "--seed", "5"]) == 1
    assert "other settings (seed)" in capsys.readouterr().err

    best = yaml.safe_load((out / BEST_YAML).read_text())
    agent = tmp_path / "agent"
    train = ["train-agent", *AGENT_FLAGS, "--model", str(model_dir), "--steps", "64", "--eval-freq", "64", "--hyperparams", str(out / BEST_YAML), "--out", str(agent)]  # fmt: skip
    assert main(train) == 0
    info = json.loads((agent / "config.json").read_text())["agent"]
    assert {"n_envs": info["n_envs"], **info["algo_kwargs"]} == best["ppo"]


def test_a_trial_below_the_median_is_pruned_at_its_evaluation(model_dir, tmp_path):
    out = tmp_path / "study"
    cfg = _cfg(model_dir)
    tune(cfg, TuneConfig(trials=1, startup_trials=1), out, progress=False)
    study = _study(out)
    for _ in range(2):  # earlier trials that evaluated far better at every step
        study.add_trial(
            optuna.trial.create_trial(
                value=-1e9, intermediate_values={0: 1e6, 64: 1e6, 128: 1e6}, params={}
            )
        )
    result = tune(cfg, TuneConfig(trials=4, startup_trials=1, warmup_steps=0), out, progress=False)
    pruned = _study(out).trials[3]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert list(pruned.intermediate_values) == [0]  # stopped at its first evaluation
    assert _rows(out)[3]["state"] == "pruned" and not (out / "trials" / "00003").exists()
    assert (out / "trials" / "00000" / "agent.zip").is_file()
    assert (result.pruned, result.best_number) == (1, 0)  # hand-made trials are never best


def test_a_folder_that_is_not_a_study_is_refused(model_dir, tmp_path):
    out = tmp_path / "elsewhere"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ForeignDirError, match="not a worldvae tune study folder"):
        tune(_cfg(model_dir), TuneConfig(trials=1), out, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_more_local_workers_than_the_cap_are_refused_before_anything_runs(tmp_path, capsys):
    too_many = str(max_local_workers() + 1)
    out = tmp_path / "study"
    assert main(["tune", *AGENT_FLAGS, "--workers", too_many, "--out", str(out)]) == 2
    assert f"--workers {too_many}" in capsys.readouterr().err and not out.exists()


def test_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"pip install 'worldvae\[tune\]'"):
        import_optuna()


@pytest.mark.slow
def test_trials_run_in_parallel_processes(model_dir, tmp_path):
    result = tune(
        _cfg(model_dir), TuneConfig(trials=3, workers=2), tmp_path / "study", progress=False
    )
    assert result.trials == 3 and result.best_yaml is not None
    numbers = [t.number for t in _study(tmp_path / "study").trials]
    assert numbers == [0, 1, 2]


@pytest.mark.slow
def test_trials_run_as_ray_tasks(model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = tune(
            _cfg(model_dir),
            TuneConfig(trials=2, workers=2, cluster="ray"),
            tmp_path / "study",
            progress=False,
        )
    finally:
        ray.shutdown()
    assert (result.trials, result.complete) == (2, 2)
