"""Bad input is refused up front with one line, and nothing is left behind."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from agents.cli.main import main
from tests.conftest import write_synthetic_dataset
from worldvae.envspec import EnvSpec
from worldvae.rundir import LOCK_NAME, RunDirLock
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model


def _run(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("worldvae: error:")]
    return status, errors, err


def _one_line(capsys, argv, status=None):
    code, errors, err = _run(capsys, argv)
    assert code != 0 and (status is None or code == status)
    assert len(errors) == 1, err
    assert "Traceback" not in err
    return errors[0]


NONSENSE = [
    ("train-vae", ["--epochs", "0"]),
    ("train-vae", ["--epochs", "-3"]),
    ("train-vae", ["--max-steps", "0"]),
    ("train-vae", ["--batch-size", "0"]),
    ("train-vae", ["--lr", "0"]),
    ("train-vae", ["--inpaint-fraction", "0"]),
    ("train-agent", ["--steps", "0"]),
    ("train-agent", ["--steps", "-1"]),
    ("train-agent", ["--eval-episodes", "0"]),
    ("train-agent", ["--eval-freq", "0"]),
    ("train-agent", ["--n-envs", "0"]),
    ("collect", ["--frame-skip", "0"]),
    ("collect", ["--frame-size", "100000"]),
    ("collect", ["--workers", "0"]),
    ("compare", ["--workers", "0"]),
    ("compare", ["--seeds", "0"]),
    ("inspect", ["--frames", "-5"]),
    ("data info", ["--n", "0"]),
    ("collect", ["--env-kwarg", "no-equals-sign"]),
    ("collect", ["--env-kwarg", "render_mode=human"]),
]
BASE = {
    "train-vae": ["train-vae", "--data", "{d}/data", "--out", "{d}/out"],
    "train-agent": ["train-agent", "--env", "CartPole-v1", "--obs", "pixel", "--out", "{d}/out"],
    "collect": ["collect", "--env", "CartPole-v1", "--episodes", "1", "--out", "{d}/out"],
    "compare": ["compare", "--env", "CartPole-v1", "--model", "{d}/m", "--out", "{d}/out"],
    "inspect": ["inspect", "{d}/m", "--data", "{d}/data", "--out", "{d}/out"],
    "data info": ["data", "info", "{d}/data", "--mosaic", "{d}/out/m.png"],
}


@pytest.mark.parametrize(("command", "extra"), NONSENSE)
def test_nonsense_numbers_are_refused_at_parse_time(command, extra, tmp_path, capsys):
    argv = [a.format(d=tmp_path) for a in BASE[command]] + extra
    line = _one_line(capsys, argv, status=2)
    assert extra[0] in line and "--help" in line
    assert not (tmp_path / "out").exists()  # nothing left behind


def test_every_model_and_training_field_is_an_option():
    from agents.cli.main import build_parser

    sub = build_parser()._subparsers._group_actions[0].choices["train-vae"]
    flags = {s for a in sub._actions for s in a.option_strings}
    for name in ("noise_std", "l1_weight", "contractive_weight", "inpaint_fraction",
                 "warmup_steps", "weight_decay", "mask_prob", "capacity_gamma", "grad_clip",
                 "latent_dim", "channels", "free_bits", "max_steps", "checkpoint_every"):  # fmt: skip
        assert "--" + name.replace("_", "-") in flags
    args = build_parser().parse_args(
        ["train-vae", "--data", "d", "--out", "o", "--noise-std", "0.3", "--channels", "8,16"]
    )
    assert args.noise_std == 0.3 and args.channels == (8, 16) and args.l1_weight == 1e-2


def test_yaml_errors_are_one_line_and_nothing_is_written(tmp_path, capsys):
    cases = {
        "broken.yaml": "ppo: [unclosed\n",
        "tagged.yaml": "ppo: !!python/object/apply:os.system ['touch pwned']\n",
        "string.yaml": "ppo:\n  learning_rate: fast\n",
        "section.yaml": "nonsense:\n  a: 1\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        line = _one_line(
            capsys,
            ["train-agent", "--env", "CartPole-v1", "--obs", "pixel", "--hyperparams",
             str(tmp_path / name), "--out", str(tmp_path / "out")],
        )  # fmt: skip
        assert name in line
    assert not (tmp_path / "out").exists() and not os.path.exists("pwned")


def test_env_errors_are_one_line(tmp_path, capsys):
    line = _one_line(capsys, ["collect", "--env", "CartPole-v1", "--env-kwarg", "bogus=1",
                              "--episodes", "1", "--out", str(tmp_path / "o")])  # fmt: skip
    assert "does not accept" in line and "bogus" in line
    assert not (tmp_path / "o").exists()


def test_broken_configs_are_one_line(tmp_path, capsys):
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "config.json").write_text(
        json.dumps({"agent": {"obs": "pixel"}, "status": "complete"})
    )
    (agent / "agent.zip").write_bytes(b"")
    assert "incomplete agent config" in _one_line(capsys, ["evaluate", str(agent)])
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=2, length=5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"epochs": 1, "bogus": 2}}))
    line = _one_line(capsys, ["train-vae", "--data", str(data), "--out", str(run), "--resume"])
    assert "not a valid train-vae run config" in line


def test_batch_larger_than_the_data_is_refused_and_leaves_nothing(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=2, length=5)
    argv = ["train-vae", "--data", str(data), "--out", str(tmp_path / "run"),
            "--batch-size", "4096", "--channels", "8,16"]  # fmt: skip
    assert "larger than the train split" in _one_line(capsys, argv)
    assert not (tmp_path / "run").exists()
    # the corrected command is not blocked by anything the refused one left
    argv[-3:] = ["4", "--channels", "8,16"]
    assert main([*argv, "--max-steps", "1"]) == 0


@pytest.fixture
def cartpole_model(tmp_path):
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(4, 8))
    return save_model(Autoencoder(cfg), tmp_path / "model")


def test_compare_checks_the_model_before_training(tmp_path, capsys, cartpole_model):
    base = ["compare", "--env", "CartPole-v1", "--steps", "64", "--seeds", "1",
            "--out", str(tmp_path / "cmp")]  # fmt: skip
    line = _one_line(capsys, [*base, "--model", str(tmp_path / "missing")])
    assert "not a model directory" in line
    line = _one_line(capsys, [*base, "--model", str(cartpole_model)])  # 16x16 vs 64x64 frames
    assert "(16, 16, 3)" in line and "(64, 64, 3)" in line
    assert not (tmp_path / "cmp").exists()


def test_model_of_another_env_is_refused_unless_asked(tmp_path, cartpole_model):
    from agents.preflight import check_env_and_model

    (tmp_path / "run").mkdir()
    best = tmp_path / "run" / "checkpoints" / "best"
    best.parent.mkdir()
    os.replace(cartpole_model, best)
    (tmp_path / "run" / "config.json").write_text(
        json.dumps({"data": {"env_id": "MiniGrid-Empty-5x5-v0"}})
    )
    spec = EnvSpec("CartPole-v1", frame_size=16)
    with pytest.raises(ValueError, match="trained on MiniGrid-Empty-5x5-v0, not CartPole-v1"):
        check_env_and_model(spec, tmp_path / "run")
    assert check_env_and_model(spec, tmp_path / "run", True) == (16, 16, 3)
    with pytest.raises(ValueError, match=r"encodes frames \(16, 16, 3\), but CartPole-v1"):
        check_env_and_model(spec.replace(frame_size=24), tmp_path / "run", True)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "ds"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from worldvae.rundir import RunDirLock; "
         f"l = RunDirLock({str(out)!r}, 'test').acquire(); print('locked', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _one_line(capsys, ["collect", "--env", "CartPole-v1", "--frame-size", "16",
                                  "--episodes", "1", "--out", str(out)])  # fmt: skip
        assert f"PID {holder.pid}" in line
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait()
    # the OS released the lock of the killed holder: the folder is free again
    with RunDirLock(out, "test"):
        pass


def test_lock_released_on_failure_leaves_no_trace(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError), RunDirLock(out, "test"):
        raise RuntimeError("refused")
    assert not (tmp_path / "a").exists()
    with RunDirLock(out, "test"), pytest.raises(Exception, match="in use"):
        RunDirLock(out, "other").acquire()
    time.sleep(0)
