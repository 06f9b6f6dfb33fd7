"""CUDA paths: run with ``pytest -m gpu`` on a machine with a GPU."""

import numpy as np
import pytest
import torch

from tests.conftest import repo_pythonpath, write_synthetic_dataset
from worldvae.vae import Autoencoder, AutoencoderConfig, load_model
from worldvae.vae.trainer import TrainConfig, train_autoencoder

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_device_trains_on_cuda_with_bf16(tmp_path):
    data = write_synthetic_dataset(
        tmp_path / "ds", n_episodes=6, length=40, frame_shape=(64, 64, 3)
    )
    cfg = TrainConfig(
        model={"kind": "beta-vae", "beta": 2.0}, epochs=2, batch_size=64, warmup_steps=1
    )
    result = train_autoencoder(data, tmp_path / "run", cfg, progress=False)
    assert np.isfinite(result.best_val_loss)
    model = load_model(tmp_path / "run")  # device="auto"
    assert model.device.type == "cuda"


def test_cuda_encode_matches_cpu():
    torch.manual_seed(0)
    cpu = Autoencoder(AutoencoderConfig()).eval()
    gpu = Autoencoder(AutoencoderConfig()).eval().cuda()
    gpu.load_state_dict(cpu.state_dict())
    frames = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(cpu.encode(frames), gpu.encode(frames), rtol=1e-3, atol=1e-3)
    z = gpu.encode(torch.from_numpy(frames).cuda())
    assert z.device.type == "cuda" and z.shape == (16, 32)


def test_torchrun_trains_on_nccl_with_one_gpu_per_rank(tmp_path):
    """``torchrun`` on a CUDA node: NCCL, ``cuda:LOCAL_RANK``, rank 0 writes the run."""
    import json
    import os
    import subprocess
    import sys

    ranks = torch.cuda.device_count()
    data = write_synthetic_dataset(
        tmp_path / "ds", n_episodes=8, length=40, frame_shape=(64, 64, 3)
    )
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(ranks), "-m", "worldvae", "train-vae", "--data", str(data),
           "--out", str(run), "--epochs", "1", "--batch-size", str(16 * ranks),
           "--warmup-steps", "1", "--device", "cuda"]  # fmt: skip
    r = subprocess.run(
        cmd, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": repo_pythonpath()}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["ranks"] == ranks and cfg["resolved"]["device"] == "cuda:0"
    assert load_model(run).device.type == "cuda"
