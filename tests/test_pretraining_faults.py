"""A run that cannot train is refused before it writes anything, with one line naming the
problem and the fix; a run that fails before its first step leaves nothing behind; and the
corrected command then runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents import resolve_config, train_agent
from agents.cli.errors import interrupted
from agents.cli.main import build_parser, main
from tests.conftest import repo_pythonpath, write_synthetic_dataset
from worldvae.envspec import EnvSpec
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

FAST = "ppo:\n  n_steps: 32\n  batch_size: 32\n  n_epochs: 1\n"


def _model(path: Path, frame_size: int = 16, nan: bool = False) -> Path:
    """A tiny untrained VAE of CartPole frames, recording their env spec."""
    torch.manual_seed(0)
    shape = (frame_size, frame_size, 3)
    cfg = AutoencoderConfig(kind="vae", frame_shape=shape, latent_dim=4, channels=(4, 8))
    model = Autoencoder(cfg)
    if nan:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    spec = EnvSpec("CartPole-v1", frame_size=frame_size, backend="gymnasium")
    return save_model(model, path, extra={"data": spec.to_dict()})


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "v16": _model(root / "v16"),
        "v32": _model(root / "v32", 32),
        "nan": _model(root / "nan", nan=True),
    }


def _one_line(capsys, argv: list[str]) -> str:
    status = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("worldvae: error:")]
    assert status == 1 and len(errors) == 1, err
    assert "Traceback" not in err and "unexpected failure" not in err, err
    return errors[0]


def _train_agent(out: Path, *extra: str) -> list[str]:
    return ["train-agent", "--env", "CartPole-v1", "--steps", "32", "--n-envs", "1",
            "--eval-episodes", "1", "--max-episode-steps", "20", "--out", str(out), *extra]  # fmt: skip


# (the command's options, what the one line must say); {m}: the models, {d}: the test folder
REFUSED = {
    "frames too small for the CNN": (
        ["--obs", "pixel", "--frame-size", "16"],
        ["at least 36x36", "--frame-size 36"],
    ),
    "cmaes on frames": (["--obs", "pixel", "--frame-size", "36", "--algo", "cmaes"], ["latent+h"]),
    "sac on discrete actions": (
        ["--obs", "latent", "--model", "{v16}", "--algo", "sac"],
        ["Box", "Discrete(2)", "ppo"],
    ),
    "dqn on pixels of a bad size": (
        ["--obs", "pixel", "--frame-size", "20", "--algo", "dqn"],
        ["at least 36x36"],
    ),
    "negative learning rate": (["--hyperparams", "{d}/neg_lr.yaml"], ["learning_rate", "> 0"]),
    "NaN learning rate": (["--hyperparams", "{d}/nan_lr.yaml"], ["learning_rate", "finite"]),
    "negative net_arch": (["--hyperparams", "{d}/arch.yaml"], ["net_arch", ">= 1"]),
    "one-step rollouts": (["--hyperparams", "{d}/n_steps.yaml"], ["n_steps", "2 or more"]),
    "NaN weights in V": (["--obs", "latent", "--model", "{nan}"], ["non-finite"]),
}
YAML = {
    "neg_lr.yaml": "ppo:\n  learning_rate: -0.001\n",
    "nan_lr.yaml": "ppo:\n  learning_rate: .nan\n",
    "arch.yaml": "ppo:\n  policy_kwargs:\n    net_arch: [64, -4]\n",
    "n_steps.yaml": "ppo:\n  n_steps: 1\n",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_train_agent_refuses_before_writing(case, models, tmp_path, capsys):
    for name, text in YAML.items():
        (tmp_path / name).write_text(text)
    options, expected = REFUSED[case]
    options = [o.format(d=tmp_path, **models) for o in options]
    if "--obs" not in options:
        options = ["--obs", "latent", "--model", str(models["v16"]), *options]
    line = _one_line(capsys, _train_agent(tmp_path / "agent", *options))
    assert all(text in line for text in expected), line
    assert not (tmp_path / "agent").exists()  # nothing written: the corrected command runs


def test_the_corrected_command_runs_where_the_refused_one_was(models, tmp_path, capsys):
    (tmp_path / "fast.yaml").write_text(FAST)
    out = tmp_path / "agent"
    _one_line(capsys, _train_agent(out, "--obs", "pixel", "--frame-size", "16"))
    argv = _train_agent(out, "--obs", "pixel", "--frame-size", "36", "--hyperparams",
                        str(tmp_path / "fast.yaml"))  # fmt: skip
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["status"] == "complete"


class FailAt(BaseCallback):
    """Fails when training starts (before its first step) or at step ``steps``."""

    def __init__(self, steps: int | None = None):
        super().__init__()
        self.steps = steps

    def _on_training_start(self) -> None:
        if self.steps is None:
            raise RuntimeError("failed before the first step")

    def _on_step(self) -> bool:
        if self.steps is not None and self.num_timesteps >= self.steps:
            raise RuntimeError("failed after some steps")
        return True


def _cfg(model_dir: Path, **fields):
    return resolve_config(
        "CartPole-v1", "latent", "ppo", str(model_dir), 64, overrides={"n_steps": 32,
        "batch_size": 32, "n_epochs": 1}, env_given={"frame_size": 16, "max_episode_steps": 20},
        n_envs=1, eval_episodes=1, eval_freq=32, checkpoint_freq=32, **fields,
    )  # fmt: skip


def test_a_run_failing_before_its_first_step_leaves_nothing(models, tmp_path):
    out = tmp_path / "runs" / "agent"
    with pytest.raises(RuntimeError, match="before the first step"):
        train_agent(_cfg(models["v16"]), out, progress=False, callbacks=[FailAt()])
    assert not out.exists()  # its config.json, model/ and eval.csv removed with its folder
    # another run (other settings) into the same folder is not refused as "unfinished"
    r = train_agent(_cfg(models["v16"], seed=1), out, progress=False)
    assert r.final_mean_return > 0 and (out / "agent.zip").is_file()


def test_a_run_failing_later_is_kept_and_evaluate_says_how_to_resume(models, tmp_path, capsys):
    out = tmp_path / "agent"
    with pytest.raises(RuntimeError, match="after some steps"):
        train_agent(_cfg(models["v16"]), out, progress=False, callbacks=[FailAt(48)])
    assert json.loads((out / "config.json").read_text())["status"] == "training"  # resumable
    line = _one_line(capsys, ["evaluate", str(out)])
    assert "unfinished" in line and "train-agent" in line and "not an agent directory" not in line
    train_agent(_cfg(models["v16"]), out, progress=False)  # the same settings: resumed
    assert main(["evaluate", str(out), "--episodes", "1"]) == 0


def test_collect_with_a_vae_folder_as_the_agent_is_one_clear_line(models, tmp_path, capsys):
    argv = ["collect", "--env", "CartPole-v1", "--episodes", "1", "--out", str(tmp_path / "d"),
            "--policy", f"agent:{models['v16']}"]  # fmt: skip
    line = _one_line(capsys, argv)
    assert "not an agent directory" in line and "train-agent" in line
    assert not (tmp_path / "d").exists()


def test_compare_refuses_a_pixel_arm_on_small_frames_before_training(models, tmp_path, capsys):
    out = tmp_path / "cmp"
    base = ["compare", "--env", "CartPole-v1", "--steps", "64", "--seeds", "1", "--out", str(out)]
    line = _one_line(capsys, [*base, "--model", str(models["v32"])])  # pixel,latent on 32 px
    assert "at least 36x36" in line and "32x32" in line and "--frame-size 36" in line
    assert "leave pixel out of --obs" in line
    line = _one_line(capsys, [*base, "--obs", "pixel", "--algo", "sac"])
    assert "--algo sac" in line and "Discrete(2)" in line
    line = _one_line(capsys, [*base, "--obs", "pixel", "--shifted"])  # CartPole: no such option
    assert "shifted" in line and "domain_randomize" in line
    assert not out.exists()


PIPELINE_REFUSED = {
    "vae.epochs={bad": "not a JSON value",
    'vae.model={"kind": "nope"}': "vae.model.kind",
    "agent_steps=many": "agent_steps",
    'compare.overrides={"ppo": {"learning_rate": -1}}': "learning_rate must be > 0",
    'compare.overrides={"ppo": {"bogus": 1}}': "unknown keys ['bogus']",
    'compare.overrides={"ppo": {"policy_kwargs": {"net_arch": [0]}}}': "net_arch",
    "compare.algo=sac": "Discrete(7)",
    "compare.hyperparams_file=no_such.yaml": "no_such.yaml does not exist",
    "collect.policy=nope": "collect.policy",
    "env.frame_size=32": "at least 36x36",
    'env.env_kwargs={"bogus": 1}': "bogus",
}


@pytest.mark.parametrize("setting", list(PIPELINE_REFUSED))
def test_every_pipeline_setting_is_checked_before_any_stage(setting, tmp_path, capsys):
    out = tmp_path / "pipe"
    line = _one_line_or_usage(capsys, ["pipeline", "--preset", "smoke", "--set", setting,
                                       "--out", str(out)])  # fmt: skip
    assert PIPELINE_REFUSED[setting] in line
    assert not out.exists()  # nothing collected, nothing trained


def test_pipeline_frame_size_flag_is_checked_before_collecting(tmp_path, capsys):
    out = tmp_path / "pipe"
    line = _one_line(capsys, ["pipeline", "--preset", "smoke", "--frame-size", "32", "--out",
                              str(out)])  # fmt: skip
    assert "at least 36x36" in line and "--frame-size 36" in line and "compare.obs_kinds" in line
    assert not out.exists()


def _one_line_or_usage(capsys, argv: list[str]) -> str:
    """One error line, exit status 1 (a refused setting) or 2 (a malformed one)."""
    status = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("worldvae: error:")]
    assert status in (1, 2) and len(errors) == 1, err
    assert "Traceback" not in err and "unexpected failure" not in err, err
    return errors[0]


@pytest.mark.parametrize(
    ("argv", "expected", "unexpected"),
    [
        (["train-vae", "--data", "d", "--out", "o"], "with --resume", None),
        (["train-vae", "--data", "d", "--out", "o", "--overwrite"], "--resume instead of", None),
        (["train-vae", "--data", "d", "--out", "o", "--resume"], "the same command", "with"),
        (["train-rnn", "--data", "d", "--out", "o"], "with --resume", None),
        (["train-agent", "--env", "E", "--obs", "pixel"], "the same command", "--resume"),
        (["train-agent", "--env", "E", "--obs", "pixel", "--overwrite"], "without --overwrite",
         "--resume"),
        (["collect", "--env", "E", "--episodes", "1", "--out", "o"], "the same command", "resume"),
    ],
)  # fmt: skip
def test_the_interruption_line_names_the_command_that_continues(argv, expected, unexpected):
    line = interrupted(build_parser().parse_args(argv))
    assert line.startswith("interrupted; re-run") and expected in line
    assert unexpected is None or unexpected not in line


@pytest.mark.slow
def test_ctrl_c_in_train_vae_names_resume_and_that_command_continues(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=4, length=20)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "worldvae", "train-vae", "--data", str(data), "--out",
            str(out), "--channels", "4,8", "--latent-dim", "4", "--batch-size", "8",
            "--epochs", "100000"]  # fmt: skip
    env = os.environ | {"PYTHONPATH": repo_pythonpath()}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "train-vae wrote no checkpoint in 120 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "re-run the same command with --resume to continue" in err.splitlines()[-1]
    done = subprocess.run([*argv[:-1], "1", "--resume"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
