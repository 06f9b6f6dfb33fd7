"""bf16 where the hardware has it: the choice, its record, and how close its losses stay."""

import json
import warnings

import numpy as np
import pytest
import torch

from envs.backends import BackendMismatchWarning
from tests.conftest import write_synthetic_dataset
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.precision import autocast, cpu_flags, cpu_model, resolve_precision
from worldvae.vae import Autoencoder, AutoencoderConfig
from worldvae.vae.io import read_model_config
from worldvae.vae.trainer import TrainConfig, train_autoencoder


def test_auto_follows_the_cpu_capability():
    assert resolve_precision("auto", "cpu", cpu_bf16=lambda: True) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_bf16=lambda: False) == "fp32"
    assert resolve_precision("auto", "cuda", cpu_bf16=lambda: False) == "bf16"
    assert resolve_precision("fp32", "cpu", cpu_bf16=lambda: True) == "fp32"
    assert resolve_precision("bf16", "cpu", cpu_bf16=lambda: False) == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse avx2 avx512_bf16 amx_tile\n"
    )
    assert {"avx2", "avx512_bf16", "amx_tile"} <= cpu_flags(info)
    assert cpu_model(info) == "Test CPU 9000"
    assert cpu_flags(tmp_path / "absent") == frozenset()
    assert cpu_model(tmp_path / "absent") == "unknown"


def test_bf16_loss_stays_close_to_fp32_on_the_same_batch():
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), latent_dim=8, channels=(16, 32))
    )
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 32, 32, 3))
    frames = torch.from_numpy(
        np.clip(base + rng.integers(-20, 20, (16, 32, 32, 3)), 0, 255).astype(np.uint8)
    )
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(1)  # the same reparameterisation noise
        with autocast("cpu", precision):
            loss, metrics = model.training_loss(frames)
        losses[precision] = (float(loss), float(metrics["recon"]), float(metrics["kl"]))
    for fp32, bf16 in zip(losses["fp32"], losses["bf16"], strict=True):
        assert bf16 == pytest.approx(fp32, rel=0.02)


def test_trainer_records_the_resolved_precision_and_the_frames_backend(tmp_path):
    data = write_synthetic_dataset(
        tmp_path / "ds", n_episodes=4, length=10, frame_shape=(16, 16, 3)
    )
    cfg = TrainConfig(
        model={"kind": "vae", "latent_dim": 4, "channels": [8, 16]},
        epochs=1,
        batch_size=8,
        precision="bf16",
    )
    train_autoencoder(data, tmp_path / "run", cfg, progress=False)
    run_cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run_cfg["resolved"] == {"device": "cpu", "precision": "bf16", "ranks": 1}
    assert run_cfg["data"]["backend"] == "gymnasium"  # datasets without a backend: gymnasium
    _, extra = read_model_config(tmp_path / "run" / "checkpoints" / "best")
    # the dataset's whole spec travels with the model: a manifest without options or backend
    # (written before either was recorded) means the defaults, made by gymnasium
    assert extra["data"] == {
        "env_id": "Synthetic-v0",
        "env_options": {
            "frame_size": [64, 64],
            "crop": None,
            "grayscale": False,
            "frame_skip": 1,
            "max_episode_steps": None,
            "env_kwargs": {},
            "backend": "gymnasium",
        },
        "backend": "gymnasium",
    }
    assert read_env_spec(tmp_path / "run") == EnvSpec("Synthetic-v0", backend="gymnasium")


def test_agent_on_another_backend_than_its_vae_warns(tmp_path):
    from agents import resolve_config, train_agent
    from worldvae.vae import save_model

    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(40, 40, 3), latent_dim=4, channels=(8, 16))
    )
    envpool_frames = EnvSpec("CartPole-v1", frame_size=40, backend="envpool").to_dict()
    save_model(model, tmp_path / "m", extra={"data": envpool_frames})
    cfg = resolve_config(
        "CartPole-v1",
        "latent",
        "ppo",
        tmp_path / "m",
        64,
        overrides={"n_steps": 32, "batch_size": 32, "n_epochs": 1},
        env_given={"frame_size": 40, "backend": "auto"},  # as the command line gives it
        n_envs=2,
        eval_freq=64,
        eval_episodes=1,
    )
    assert cfg.env.backend == "gymnasium" and cfg.env.frame_size == (40, 40)
    with pytest.warns(
        BackendMismatchWarning, match="envpool backend but the env runs on gymnasium"
    ):
        train_agent(cfg, tmp_path / "agent", progress=False)
    gymnasium_frames = EnvSpec("CartPole-v1", frame_size=40, backend="gymnasium").to_dict()
    save_model(model, tmp_path / "m", extra={"data": gymnasium_frames})
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendMismatchWarning)
        train_agent(cfg, tmp_path / "agent2", progress=False)
