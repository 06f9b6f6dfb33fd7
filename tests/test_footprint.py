"""Models too large for the machine are refused with what they need, before anything is written."""

import pytest

from agents.cli.main import main
from tests.conftest import write_synthetic_dataset
from tests.latent_fixtures import write_synthetic_latents
from worldvae.footprint import (
    GIB,
    InsufficientMemoryError,
    autoencoder_bytes,
    available_host_bytes,
    check_fits,
    count_parameters,
    memory_model_bytes,
)
from worldvae.memory.config import MemoryConfig
from worldvae.memory.model import MDNRNN
from worldvae.vae.config import AutoencoderConfig


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("worldvae: error: "), err
    return err[0]


def test_parameters_are_counted_without_allocating_them():
    cfg = MemoryConfig(latent_dim=4, action_dim=2, hidden_size=16, n_gaussians=3)
    assert count_parameters(MDNRNN, cfg) == sum(p.numel() for p in MDNRNN(cfg).parameters())
    # 17 billion parameters: counted in no time and no memory
    assert count_parameters(MDNRNN, MemoryConfig(hidden_size=65536)) > 17 * 10**9


def test_m_estimate_grows_with_the_square_of_the_hidden_size_and_with_the_batch():
    small, big = (memory_model_bytes(MemoryConfig(hidden_size=h), 32, 32) for h in (4096, 8192))
    assert 3.5 < big / small < 4.5
    assert memory_model_bytes(MemoryConfig(), 64, 32) > memory_model_bytes(MemoryConfig(), 32, 32)
    assert memory_model_bytes(MemoryConfig(), 32, 32) < GIB // 10  # the default is small


def test_autoencoder_estimate_follows_channels_latent_size_and_batch():
    default = autoencoder_bytes(AutoencoderConfig(), 128)
    assert default < GIB // 2
    assert autoencoder_bytes(AutoencoderConfig(), 256) > default
    wide = autoencoder_bytes(AutoencoderConfig(channels=(1024, 1024, 1024, 1024)), 128)
    assert wide > 20 * default
    # one 4096-channel conv on 64x64 frames feeds a 3.9M-wide head into a 4096-d code
    huge = AutoencoderConfig(channels=(4096,), latent_dim=4096)
    assert autoencoder_bytes(huge, 32) > 500 * GIB


def test_check_fits_names_both_sizes_and_the_fix():
    import torch

    cpu = torch.device("cpu")
    check_fits(1, cpu, "a tiny model", "nothing")
    with pytest.raises(InsufficientMemoryError, match=r"about 4294967296\.0 GiB.*lower --x"):
        check_fits(2**62, cpu, "a huge model", "lower --x")
    have = available_host_bytes()
    assert have is not None and 0 < have < 2**50


def test_train_rnn_with_a_huge_hidden_size_is_refused_in_one_line(tmp_path, capsys):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=4, length=8)
    out = tmp_path / "rnn"
    line = _error_line(
        capsys,
        ["train-rnn", "--data", str(data), "--out", str(out), "--hidden-size", "65536",
         "--device", "cpu"],
    )  # fmt: skip
    assert "--hidden-size 65536" in line and "GiB" in line and "available" in line
    assert "lower --hidden-size" in line
    assert not out.exists()  # nothing written
    assert main(["train-rnn", "--data", str(data), "--out", str(out), "--hidden-size", "8",
                 "--epochs", "1", "--device", "cpu"]) == 0  # fmt: skip


def test_train_vae_with_a_huge_head_is_refused_in_one_line(tmp_path, capsys):
    data = write_synthetic_dataset(
        tmp_path / "data", n_episodes=2, length=5, frame_shape=(64, 64, 3)
    )
    out = tmp_path / "vae"
    line = _error_line(
        capsys,
        ["train-vae", "--data", str(data), "--out", str(out), "--channels", "4096",
         "--latent-dim", "4096", "--batch-size", "4", "--device", "cpu"],
    )  # fmt: skip
    assert "--channels 4096" in line and "GiB" in line and "lower --channels" in line
    assert not out.exists()
