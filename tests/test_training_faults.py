"""train-vae: a kill in the checkpoint rename window, a second writer, --overwrite, umask."""

import os
import stat

import pytest

from tests.conftest import write_synthetic_dataset
from worldvae.rundir import RunDirBusyError, RunDirLock
from worldvae.vae.trainer import TrainConfig, VAETrainer, train_autoencoder

MODEL = {"kind": "vae", "latent_dim": 4, "channels": [8, 16]}


def _cfg(**kw):
    return TrainConfig(model=MODEL, batch_size=8, epochs=2, seed=0, device="cpu", **kw)


def test_resume_after_a_kill_between_the_checkpoint_renames(tmp_path, caplog):
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=6)
    run = tmp_path / "run"
    train_autoencoder(data, run, _cfg(max_steps=5), progress=False)
    last = run / "checkpoints" / "last"
    os.replace(last, last.with_name(".last.old"))  # killed after the first rename
    caplog.set_level("WARNING")
    trainer = VAETrainer(data, run, _cfg(max_steps=9), resume=True)
    assert "checkpoint write was interrupted" in caplog.text
    assert trainer.state["step"] == 5  # not step 0


def test_second_writer_refused_and_overwrite_keeps_foreign_files(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=6)
    run = tmp_path / "run"
    with RunDirLock(run, "other"), pytest.raises(RunDirBusyError, match=f"PID {os.getpid()}"):
        train_autoencoder(data, run, _cfg(max_steps=2), progress=False)
    train_autoencoder(data, run, _cfg(max_steps=2), progress=False)
    (run / "notes.txt").write_text("mine")
    train_autoencoder(data, run, _cfg(max_steps=2), overwrite=True, progress=False)
    assert (run / "notes.txt").read_text() == "mine"


def test_files_get_the_usual_permissions(tmp_path):
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=6)
    old = os.umask(0o022)
    try:
        train_autoencoder(data, tmp_path / "run", _cfg(max_steps=2), progress=False)
    finally:
        os.umask(old)
    weights = tmp_path / "run" / "checkpoints" / "best" / "model.safetensors"
    for path in (weights, weights.parent / "config.json", tmp_path / "run" / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE(weights.parent.stat().st_mode) == 0o755
    episode = next((data / "episodes").glob("ep_*.npz"))
    assert stat.S_IMODE(episode.stat().st_mode) & 0o044 == 0o044  # group and others can read
