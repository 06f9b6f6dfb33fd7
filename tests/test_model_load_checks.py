"""A model's config is checked against its weights file's header before the network is built,
and weights holding NaN or infinity are refused, naming the file.

A config edited to a frame shape of a million pixels a side would need hundreds of terabytes;
it is refused from the header alone. A checkpoint whose training diverged would encode every
frame to NaN; it is refused instead of writing NaN latents.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from agents.cli.main import main
from agents.controller.cmaes import CONTROLLER_FILE, LinearController, load_controller
from tests.conftest import write_synthetic_dataset
from worldvae.checkpoints import load_checkpoint, save_checkpoint
from worldvae.data.manifest import MANIFEST_NAME
from worldvae.memory import MDNRNN, MemoryConfig, load_memory
from worldvae.pca import PCAEncoder, fit_pca
from worldvae.vae import Autoencoder, AutoencoderConfig, load_model, save_model
from worldvae.vae.io import CONFIG_NAME, WEIGHTS_NAME, CheckpointError

FRAME_SHAPE = (16, 16, 3)


def _vae(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=FRAME_SHAPE, latent_dim=4, channels=(4, 8))
    return save_model(Autoencoder(cfg), tmp_path / "vae")


def _memory(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = MemoryConfig(latent_dim=3, action_dim=2, hidden_size=8, n_gaussians=2)
    return save_model(MDNRNN(cfg), tmp_path / "memory")


def _edit_config(model_dir: Path, **fields) -> None:
    path = model_dir / CONFIG_NAME
    d = json.loads(path.read_text())
    d["model"].update(fields)
    path.write_text(json.dumps(d))


def _poison(model: torch.nn.Module) -> None:
    """One weight NaN, as a diverged training run leaves them."""
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")


def test_a_frame_shape_needing_terabytes_is_refused_from_the_header(tmp_path):
    model_dir = _vae(tmp_path)
    _edit_config(model_dir, frame_shape=[1_000_000, 1_000_000, 3])
    with pytest.raises(CheckpointError) as caught:
        load_model(model_dir, device="cpu")
    message = str(caught.value)
    assert str(model_dir / CONFIG_NAME) in message and str(model_dir / WEIGHTS_NAME) in message
    assert "in the weights" in message and "by the config" in message


def test_a_memory_config_that_does_not_fit_its_weights_is_refused_before_building(tmp_path):
    model_dir = _memory(tmp_path)
    _edit_config(model_dir, latent_dim=65_536, n_gaussians=1024)  # a 200 GB mixture head
    with pytest.raises(CheckpointError, match=r"does not describe the weights"):
        load_memory(model_dir, device="cpu")


def test_nan_weights_are_refused_naming_the_file(tmp_path):
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=FRAME_SHAPE, latent_dim=4, channels=(4, 8))
    model = Autoencoder(cfg)
    _poison(model)
    model_dir = save_model(model, tmp_path / "vae")
    with pytest.raises(CheckpointError, match=r"non-finite weights") as caught:
        load_model(model_dir, device="cpu")
    assert str(model_dir / WEIGHTS_NAME) in str(caught.value)
    memory = MDNRNN(MemoryConfig(latent_dim=3, action_dim=2, hidden_size=8, n_gaussians=2))
    _poison(memory)
    with pytest.raises(CheckpointError, match=r"non-finite weights"):
        load_memory(save_model(memory, tmp_path / "memory"), device="cpu")


def test_a_resume_refuses_a_nan_checkpoint(tmp_path):
    cfg = MemoryConfig(latent_dim=3, action_dim=2, hidden_size=8, n_gaussians=2)
    model = MDNRNN(cfg)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    _poison(model)
    save_checkpoint(model, tmp_path / "last", optimizer, scheduler, {"step": 3, "epoch": 0})
    with pytest.raises(CheckpointError, match=r"non-finite weights"):
        load_checkpoint(MDNRNN(cfg), tmp_path / "last", optimizer, scheduler)


def test_encode_data_writes_no_nan_latents(tmp_path, capsys):
    data = write_synthetic_dataset(tmp_path / "ds", n_episodes=3, length=6)
    manifest = json.loads((data / MANIFEST_NAME).read_text())
    (data / MANIFEST_NAME).write_text(json.dumps(manifest | {"env_id": "CartPole-v1"}))
    cfg = AutoencoderConfig(kind="vae", frame_shape=FRAME_SHAPE, latent_dim=4, channels=(4, 8))
    model = Autoencoder(cfg)
    _poison(model)
    model_dir = save_model(model, tmp_path / "vae")
    argv = ["encode-data", "--data", str(data), "--model", str(model_dir)]
    assert main([*argv, "--out", str(tmp_path / "lat")]) == 1
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("worldvae: error:")]
    assert str(model_dir / WEIGHTS_NAME) in line and "non-finite" in line
    assert not (tmp_path / "lat").exists()
    _edit_config(_vae(tmp_path), frame_shape=[1_000_000, 1_000_000, 3])
    assert main(["encode-data", "--data", str(data), "--model", str(tmp_path / "vae"),
                 "--out", str(tmp_path / "lat")]) == 1  # fmt: skip
    assert "does not describe the weights" in capsys.readouterr().err


def test_a_controller_of_nan_or_misshapen_weights_is_refused(tmp_path):
    obs = gym.spaces.Box(-1, 1, (5,), np.float32)
    actions = gym.spaces.Discrete(3)
    controller = LinearController(5, actions, np.ones(18, np.float32))
    controller.save(tmp_path / CONTROLLER_FILE)
    assert load_controller(tmp_path, obs, actions).params().tolist() == [1.0] * 18
    weight = np.ones((3, 5), np.float32)
    weight[1, 2] = np.nan
    save_file({"weight": weight, "bias": np.zeros(3, np.float32)}, str(tmp_path / CONTROLLER_FILE))
    with pytest.raises(ValueError, match=r"controller.safetensors holds non-finite weights"):
        load_controller(tmp_path, obs, actions)
    save_file({"weight": np.ones((3, 5), np.float32), "bias": np.zeros(4, np.float32)},
              str(tmp_path / CONTROLLER_FILE))  # fmt: skip
    with pytest.raises(ValueError, match=r"bias \(4,\) do not fit"):
        load_controller(tmp_path, obs, actions)


def test_a_pca_encoder_of_nan_values_is_refused(tmp_path):
    frames = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 1), dtype=np.uint8)
    encoder = fit_pca(frames, latent_dim=3)
    encoder.mean[0] = np.nan
    encoder.save(tmp_path / "pca")
    with pytest.raises(ValueError, match=r"model.safetensors holds non-finite values"):
        PCAEncoder.load(tmp_path / "pca")
