"""The world-model commands keep the run-folder rules: locks, no foreign deletions, ranges."""

import dataclasses
import os

import pytest
import torch

from agents.cli.main import main
from tests.conftest import write_synthetic_dataset
from tests.latent_fixtures import write_synthetic_latents
from worldvae.data.latents import ActionSpec, encode_dataset
from worldvae.memory.config import MemoryConfig
from worldvae.memory.trainer import RUN_ENTRIES, MemoryTrainConfig, train_memory
from worldvae.rundir import LOCK_NAME, ForeignDirError, RunDirBusyError, RunDirLock
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model
from worldvae.vae.io import model_sha256

TINY = MemoryTrainConfig(
    model={"hidden_size": 8, "n_gaussians": 2},
    epochs=1,
    batch_size=4,
    seq_len=8,
    device="cpu",
)


def _encode(data, out, **kw):
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
    ).eval()
    save_model(model, out.parent / "vae")
    return encode_dataset(
        data,
        model,
        out.parent / "vae",
        model_sha256(out.parent / "vae"),
        out,
        ActionSpec("discrete", 2),
        progress=False,
        **kw,
    )


def test_train_rnn_overwrite_removes_only_its_own_files(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=6, length=10)
    run = tmp_path / "rnn"
    train_memory(data, run, TINY, progress=False)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ForeignDirError, match=r"notes\.txt"):
        train_memory(data, run, TINY, overwrite=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "checkpoints" / "best" / "model.safetensors").is_file()
    (run / "notes.txt").unlink()
    r = train_memory(data, run, TINY, overwrite=True, progress=False)
    assert r.epochs_done == 1
    left = {p.name for p in run.iterdir()} - {LOCK_NAME}
    assert {"config.json", "checkpoints", "metrics.csv"} <= left <= set(RUN_ENTRIES)


def test_train_rnn_refuses_a_second_writer_and_a_refused_run_leaves_nothing(tmp_path):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=6, length=10)
    run = tmp_path / "rnn"
    with (
        RunDirLock(run, "other"),
        pytest.raises(RunDirBusyError, match=f"PID {os.getpid()}"),
    ):
        train_memory(data, run, TINY, progress=False)
    # an empty train split is refused before anything is written
    with pytest.raises(ValueError, match=r"train split .* is empty"):
        train_memory(
            data, tmp_path / "rnn2", dataclasses.replace(TINY, val_fraction=0.9), progress=False
        )
    assert not (tmp_path / "rnn2").exists()


def test_encode_data_overwrite_keeps_foreign_files_and_takes_the_lock(tmp_path):
    data = write_synthetic_dataset(tmp_path / "ds", n_episodes=3, length=8)
    out = tmp_path / "lat"
    _encode(data, out)
    (out / "README.txt").write_text("mine")
    with pytest.raises(ForeignDirError, match=r"README\.txt"):
        _encode(data, out, overwrite=True)
    assert (out / "README.txt").is_file() and len(list((out / "episodes").iterdir())) == 3
    (out / "README.txt").unlink()
    assert _encode(data, out, overwrite=True).new_episodes == 3
    with RunDirLock(out, "other"), pytest.raises(RunDirBusyError, match="in use"):
        _encode(data, out)


@pytest.mark.parametrize(
    "option",
    [
        ["--epochs", "0"],
        ["--batch-size", "0"],
        ["--seq-len", "-1"],
        ["--lr", "0"],
        ["--hidden-size", "0"],
        ["--n-gaussians", "0"],
        ["--temperature", "0"],
        ["--val-fraction", "1.5"],
        ["--max-steps", "0"],
        ["--reward-weight", "-1"],
    ],
)
def test_train_rnn_refuses_nonsense_numbers_at_parse_time(tmp_path, capsys, option):
    out = tmp_path / "rnn"
    assert main(["train-rnn", "--data", str(tmp_path), "--out", str(out), *option]) == 2
    assert option[0] in capsys.readouterr().err
    assert not out.exists()


def test_every_memory_field_is_an_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train-rnn", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    data_decided = {"model", "latent_dim", "action_dim"}
    negated = {"sample_latents": "--no-sample", "predict_reward": "--no-reward-head",
               "predict_done": "--no-done-head"}  # fmt: skip
    for cls in (MemoryTrainConfig, MemoryConfig):
        for f in dataclasses.fields(cls):
            if f.name in data_decided:
                continue
            flag = negated.get(f.name, "--" + f.name.replace("_", "-"))
            assert flag in text, flag
