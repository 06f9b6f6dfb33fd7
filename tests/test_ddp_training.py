"""``torchrun -m worldvae train-vae``: 2 gloo ranks train the weights of one process at the same
global batch, rank 0 alone writes the usual run folder, and a run resumes on another number
of ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import repo_pythonpath, write_synthetic_dataset
from worldvae.rundir import entries
from worldvae.vae.trainer import TrainConfig, train_autoencoder

MODEL = ["--kind", "vae", "--latent-dim", "4", "--channels", "8,16"]
TRAIN = ["--batch-size", "8", "--warmup-steps", "1", "--log-every", "2", "--seed", "3"]
TRAIN += ["--device", "cpu", "--precision", "fp32", "--data-shards", "2"]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_synthetic_dataset(tmp_path / "ds", n_episodes=6, length=8, frame_shape=(16, 16, 3))


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {
        "model": {"kind": "vae", "latent_dim": 4, "channels": [8, 16]},
        "batch_size": 8,
        "warmup_steps": 1,
        "log_every": 2,
        "seed": 3,
        "device": "cpu",
        "precision": "fp32",
        "data_shards": 2,
    }
    return TrainConfig(**(base | kw))  # type: ignore[arg-type]


def _torchrun(ranks: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": repo_pythonpath()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(ranks), "-m", "worldvae", "train-vae", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _weights(run: Path, which: str = "last") -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / which / "model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_two_torchrun_ranks_train_the_weights_of_one_process(data, tmp_path):
    one = train_autoencoder(data, tmp_path / "one", _config(epochs=2), progress=False)
    run = tmp_path / "two"
    r = _torchrun(2, "--data", str(data), "--out", str(run), "--epochs", "2", *MODEL, *TRAIN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained 2 epochs") == 1  # rank 0 alone reports
    _assert_same_weights(_weights(run), _weights(tmp_path / "one"))
    _assert_same_weights(_weights(run, "best"), _weights(tmp_path / "one", "best"))
    assert entries(run) == [
        "checkpoints",
        "config.json",
        "images",
        "metrics.csv",
        "tb",
    ]  # nothing per rank
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["resolved"]["ranks"] == 2 and cfg["train"]["data_shards"] == 2
    state = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == one.steps and state["finished"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 epochs
    one_rows = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    two_loss = float(rows[-1].split(",")[2])
    assert two_loss == pytest.approx(float(one_rows[-1].split(",")[2]), rel=1e-4)


@pytest.mark.slow  # about 15 s: one torchrun job
def test_a_two_rank_run_resumes_on_one_process(data, tmp_path):
    train_autoencoder(data, tmp_path / "whole", _config(epochs=2), progress=False)
    run = tmp_path / "moved"
    r = _torchrun(2, "--data", str(data), "--out", str(run), "--epochs", "2", "--max-steps", "3",
                  *MODEL, *TRAIN)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    state = json.loads((run / "checkpoints" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 3 and not state.get("finished")
    # One process, --data-shards left at 0: the run's own 2 shards, both read here.
    train_autoencoder(data, run, _config(epochs=2, data_shards=0), resume=True, progress=False)
    _assert_same_weights(_weights(run), _weights(tmp_path / "whole"))


def test_data_shards_follow_the_run_on_resume_and_conflicts_are_refused(data, tmp_path):
    run = tmp_path / "run"
    train_autoencoder(data, run, _config(epochs=1, data_shards=4), progress=False)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["train"]["data_shards"] == 4
    train_autoencoder(data, run, _config(epochs=2, data_shards=0), resume=True, progress=False)
    assert json.loads((run / "config.json").read_text())["train"]["data_shards"] == 4
    with pytest.raises(ValueError, match="started with another configuration"):
        train_autoencoder(data, run, _config(epochs=3, data_shards=2), resume=True, progress=False)


def test_a_sharded_single_process_run_resumes_to_the_same_weights(data, tmp_path):
    train_autoencoder(data, tmp_path / "whole", _config(epochs=2), progress=False)
    train_autoencoder(data, tmp_path / "cut", _config(epochs=2, max_steps=3), progress=False)
    train_autoencoder(data, tmp_path / "cut", _config(epochs=2), resume=True, progress=False)
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for k in whole:
        torch.testing.assert_close(whole[k], cut[k], rtol=0, atol=0, msg=k)


def test_runs_written_before_sharding_resume_as_one_shard(data, tmp_path):
    run = tmp_path / "run"
    train_autoencoder(data, run, _config(epochs=1, data_shards=1), progress=False)
    path = run / "config.json"
    old = json.loads(path.read_text())
    del old["train"]["data_shards"]  # what older versions wrote
    path.write_text(json.dumps(old))
    result = train_autoencoder(
        data, run, _config(epochs=2, data_shards=0), resume=True, progress=False
    )
    assert result.epochs_done == 2
    assert json.loads(path.read_text())["train"]["data_shards"] == 1


def test_shards_that_do_not_split_the_batch_are_refused_before_writing(data, tmp_path):
    with pytest.raises(ValueError, match="does not split over data_shards=3"):
        train_autoencoder(data, tmp_path / "run", _config(data_shards=3), progress=False)
    assert not (tmp_path / "run" / "config.json").exists()
