import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import write_synthetic_dataset
from worldvae.vae import load_model
from worldvae.vae.trainer import NonFiniteLossError, TrainConfig, VAETrainer, train_autoencoder

SMALL = {"kind": "vae", "latent_dim": 4, "channels": [8, 16]}


@pytest.fixture
def data(tmp_path):
    return write_synthetic_dataset(
        tmp_path / "ds", n_episodes=10, length=15, frame_shape=(16, 16, 3)
    )


def _cfg(**kw):
    base = {"model": SMALL, "epochs": 2, "batch_size": 16, "warmup_steps": 1, "log_every": 2}
    return TrainConfig(**(base | kw))


def _weights(run):
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def test_training_writes_a_loadable_run(data, tmp_path):
    result = train_autoencoder(data, tmp_path / "run", _cfg(), progress=False)
    run = tmp_path / "run"
    assert result.epochs_done == 2 and result.steps > 0 and np.isfinite(result.best_val_loss)
    for name in ("config.json", "metrics.csv", "images/reconstructions.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").iterdir())
    model = load_model(run, device="cpu")  # the run dir resolves to its best checkpoint
    assert model.config.frame_shape == (16, 16, 3)
    assert model.encode(np.zeros((16, 16, 3), np.uint8)).shape == (4,)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,step,train_loss,val_loss") and len(rows) == 3


def test_resume_after_interruption_equals_uninterrupted(data, tmp_path):
    train_autoencoder(data, tmp_path / "whole", _cfg(epochs=3), progress=False)
    # Stop mid-epoch 2 (max_steps), then resume with the full budget.
    steps_per_epoch = (
        json.loads(
            (tmp_path / "whole" / "checkpoints" / "last" / "trainer_state.json").read_text()
        )["step"]
        // 3
    )
    train_autoencoder(
        data, tmp_path / "cut", _cfg(epochs=3, max_steps=steps_per_epoch + 2), progress=False
    )
    assert (
        json.loads((tmp_path / "cut" / "checkpoints" / "last" / "trainer_state.json").read_text())[
            "batch_in_epoch"
        ]
        == 2
    )
    train_autoencoder(data, tmp_path / "cut", _cfg(epochs=3), resume=True, progress=False)
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert whole.keys() == cut.keys()
    for k in whole:
        torch.testing.assert_close(whole[k], cut[k], rtol=0, atol=0, msg=k)


def test_existing_run_dir_is_refused(data, tmp_path):
    train_autoencoder(data, tmp_path / "run", _cfg(epochs=1), progress=False)
    with pytest.raises(FileExistsError, match="already exists; pass --resume"):
        train_autoencoder(data, tmp_path / "run", _cfg(epochs=1), progress=False)
    with pytest.raises(ValueError, match="started with another configuration"):
        train_autoencoder(
            data, tmp_path / "run", _cfg(epochs=1, lr=0.5), resume=True, progress=False
        )
    train_autoencoder(data, tmp_path / "run", _cfg(epochs=1), overwrite=True, progress=False)


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(data, tmp_path):
    run = tmp_path / "run"
    train_autoencoder(data, run, _cfg(epochs=1), progress=False)
    good = _weights(run)
    trainer = VAETrainer(data, run, _cfg(epochs=2), resume=True)
    with torch.no_grad():
        trainer.model.head.weight.fill_(float("nan"))
    with pytest.raises(
        NonFiniteLossError, match=r"loss became nan at step \d+ .*last good checkpoint is kept"
    ):
        trainer.fit(progress=False)
    after = _weights(run)
    for k in good:
        torch.testing.assert_close(good[k], after[k], rtol=0, atol=0)


def test_frame_shape_comes_from_the_data(tmp_path):
    data = write_synthetic_dataset(
        tmp_path / "gray", n_episodes=4, length=10, frame_shape=(20, 24, 1)
    )
    train_autoencoder(data, tmp_path / "run", _cfg(epochs=1), progress=False)
    model = load_model(tmp_path / "run", device="cpu")
    assert model.config.frame_shape == (20, 24, 1)
    with pytest.raises(ValueError, match=r"expects uint8 frames \(B, 20, 24, 1\)"):
        model.encode(np.zeros((16, 16, 3), np.uint8))
