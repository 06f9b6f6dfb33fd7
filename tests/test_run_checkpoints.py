"""Run checkpoints shared by the trainers: resume gives the uninterrupted run's weights, old runs
resume, an interrupted checkpoint write is put back, and the sweep's training budget."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.latent_fixtures import write_synthetic_latents
from worldvae.checkpoints import STATE_JSON, RunCheckpoints, new_trainer_state
from worldvae.data.latents import LatentManifest
from worldvae.family_sweep import TRAIN_FIELDS, SweepConfig, SweepRun, _check_sweep_dir
from worldvae.memory import load_memory
from worldvae.memory.trainer import MemoryTrainConfig, MemoryTrainer, train_memory
from worldvae.vae import load_model
from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import AutoencoderConfig
from worldvae.vae.io import model_sha256, save_model
from worldvae.vae.trainer import TrainConfig, train_autoencoder

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "compat_v1"


def _memory_cfg(**kw) -> MemoryTrainConfig:
    base = {
        "model": {"hidden_size": 16, "n_gaussians": 2},
        "epochs": 3,
        "batch_size": 2,
        "seq_len": 6,
        "device": "cpu",
    }
    return MemoryTrainConfig(**(base | kw))


def _latents_with_v(root: Path) -> Path:
    """Synthetic 3-d latents whose manifest names a V that is present and unchanged, so the
    trainer builds V (drawing from the torch RNG) and draws dream strips."""
    torch.manual_seed(1)
    vae = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=3, channels=(8, 16))
    )
    save_model(vae, root / "vae")
    data = write_synthetic_latents(
        root / "lat", n_episodes=8, length=12, model_dir=str(root / "vae")
    )
    manifest = LatentManifest.load(data)
    dataclasses.replace(manifest, model_sha256=model_sha256(root / "vae")).save(data)
    return data


def _last_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / "model.safetensors"))


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def _state(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "last" / STATE_JSON).read_text())


# ---- M: resume equals the uninterrupted run ---------------------------------------------------
def test_m_resumed_after_a_stop_equals_the_uninterrupted_run_with_v_present(tmp_path):
    data = _latents_with_v(tmp_path)
    train_memory(data, tmp_path / "whole", _memory_cfg(), progress=False)
    assert (tmp_path / "whole" / "images" / "dream.png").is_file()  # V was built
    per_epoch = _state(tmp_path / "whole")["step"] // 3
    train_memory(data, tmp_path / "cut", _memory_cfg(max_steps=per_epoch + 1), progress=False)
    assert _state(tmp_path / "cut")["batch_in_epoch"] == 1
    train_memory(data, tmp_path / "cut", _memory_cfg(), resume=True, progress=False)
    _assert_bitwise_equal(_last_weights(tmp_path / "whole"), _last_weights(tmp_path / "cut"))


KILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from worldvae.memory.trainer import MemoryTrainConfig, MemoryTrainer
from tests.test_run_checkpoints import _memory_cfg

step = MemoryTrainer._train_step
def killed_after(self, raw, epoch):
    if self.state["step"] == int(sys.argv[4]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, raw, epoch)
MemoryTrainer._train_step = killed_after
MemoryTrainer(sys.argv[2], sys.argv[3], _memory_cfg(checkpoint_every=2)).fit(progress=False)
"""


@pytest.mark.slow
def test_m_resumed_after_kill_9_equals_the_uninterrupted_run(tmp_path):
    """``train-rnn --resume`` after ``kill -9`` mid-epoch, past a checkpoint: the same last
    weights, bit for bit, as the run that was never stopped."""
    data = _latents_with_v(tmp_path)
    train_memory(data, tmp_path / "whole", _memory_cfg(checkpoint_every=2), progress=False)
    per_epoch = _state(tmp_path / "whole")["step"] // 3
    kill_at = per_epoch + 3  # one step past the checkpoint at an even step of epoch 2
    kill_at += kill_at % 2
    killed = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(ROOT), str(data), str(tmp_path / "cut"),
         str(kill_at + 1)],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    cut = _state(tmp_path / "cut")
    assert (cut["step"], cut["epoch"]) == (kill_at, 1) and 0 < cut["batch_in_epoch"] < per_epoch
    train_memory(
        data, tmp_path / "cut", _memory_cfg(checkpoint_every=2), resume=True, progress=False
    )
    _assert_bitwise_equal(_last_weights(tmp_path / "whole"), _last_weights(tmp_path / "cut"))


def test_m_resume_after_a_kill_between_the_checkpoint_renames(tmp_path, caplog):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=6, length=10)
    run = tmp_path / "run"
    train_memory(data, run, _memory_cfg(epochs=2, max_steps=3), progress=False)
    last = run / "checkpoints" / "last"
    os.replace(last, last.with_name(".last.old"))  # killed after the first rename
    caplog.set_level("WARNING")
    trainer = MemoryTrainer(data, run, _memory_cfg(epochs=2), resume=True)
    assert "checkpoint write was interrupted" in caplog.text
    assert trainer.state["step"] == 3  # not step 0
    assert trainer.last_dir == last and last.is_dir()


# ---- runs written by the previous code resume -------------------------------------------------
@pytest.fixture
def old_runs(tmp_path: Path) -> Path:
    dst = tmp_path / "compat_v1"
    shutil.copytree(FIXTURES, dst, ignore=shutil.ignore_patterns("*.py", "__pycache__", "agent_*"))
    return dst


def _layout(run: Path) -> dict[str, list[str]]:
    return {
        d: sorted(p.name for p in (run / "checkpoints" / d).iterdir()) for d in ("last", "best")
    }


def test_an_old_vae_run_resumes_for_another_epoch(old_runs):
    run = old_runs / "vae"
    old = json.loads((run / "config.json").read_text())["train"]
    layout, step = _layout(run), _state(run)["step"]
    result = train_autoencoder(
        old_runs / "data", run, TrainConfig(**(old | {"epochs": 2})), resume=True, progress=False
    )
    state = _state(run)
    assert result.epochs_done == 2 and state["step"] == 2 * step and len(state["history"]) == 2
    assert state["finished"] and _layout(run) == layout
    extra = json.loads((run / "checkpoints" / "last" / "config.json").read_text())["extra_info"]
    assert set(extra) == {"data", "step"} and extra["step"] == state["step"]
    assert load_model(run, device="cpu").latent_dim == 4


def test_an_old_memory_run_resumes_for_another_epoch(old_runs):
    run = old_runs / "memory"
    old = json.loads((run / "config.json").read_text())["train"]
    layout, step = _layout(run), _state(run)["step"]
    result = train_memory(
        old_runs / "latents",
        run,
        MemoryTrainConfig(**(old | {"epochs": 2})),
        resume=True,
        progress=False,
    )
    state = _state(run)
    assert result.epochs_done == 2 and state["step"] == 2 * step and len(state["history"]) == 2
    assert state["finished"] and _layout(run) == layout
    model, info = load_memory(run, device="cpu")
    assert model.config.hidden_size == 8 and info["env_id"] == "CartPole-v1"


# ---- RunCheckpoints ---------------------------------------------------------------------------
def _trainable() -> tuple[torch.nn.Module, torch.optim.Optimizer, object]:
    model = Autoencoder(
        AutoencoderConfig(kind="ae", frame_shape=(16, 16, 3), latent_dim=2, channels=(4, 8))
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


def test_run_checkpoints_round_trip_restores_weights_counters_and_the_rng(tmp_path):
    ckpt = RunCheckpoints(tmp_path / "run", extra={"env_id": "X-v0"})
    ckpt.prepare(False, False, lambda old: True, ("config.json", "checkpoints"), "test run")
    model, opt, sched = _trainable()
    state = new_trainer_state("best") | {"step": 7}
    ckpt.save_last(model, opt, sched, state)
    ckpt.save_best(model, {"epoch": 1, "step": 7})
    expected_draw = torch.rand(3)  # what comes next after the save
    torch.manual_seed(123)
    fresh, opt2, sched2 = _trainable()
    assert ckpt.restore(fresh, opt2, sched2, new_trainer_state("best"), resume=False)["step"] == 0
    restored = ckpt.restore(fresh, opt2, sched2, new_trainer_state("best"), resume=True)
    assert restored["step"] == 7
    assert torch.equal(torch.rand(3), expected_draw)
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    best = json.loads((ckpt.best_dir / "config.json").read_text())["extra_info"]
    assert best == {"env_id": "X-v0", "epoch": 1, "step": 7}


def test_run_checkpoints_that_do_not_write_leave_nothing(tmp_path):
    ckpt = RunCheckpoints(tmp_path / "run", writes=False)
    model, opt, sched = _trainable()
    ckpt.save_last(model, opt, sched, new_trainer_state("best"))
    ckpt.save_best(model)
    ckpt.write_run_config({"train": {}})
    assert not (tmp_path / "run").exists()


# ---- the sweep's training budget --------------------------------------------------------------
def test_sweep_budget_defaults_and_ranges_are_train_configs():
    cfg = SweepConfig(data="d")
    for name in TRAIN_FIELDS:
        assert getattr(cfg, name) == getattr(TrainConfig(), name), name
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        SweepConfig(data="d", epochs=0)
    run = SweepRun("ae__s3", {"kind": "ae", "latent_dim": 4}, 3)
    tcfg = SweepConfig(data="d", epochs=2, lr=3e-3, max_steps=9).train_config(run)
    assert tcfg == dataclasses.replace(
        TrainConfig(), model=run.model, seed=3, device="cpu", epochs=2, lr=3e-3, max_steps=9
    )


OLD_SWEEP_JSON = {  # as the previous code wrote it: flat keys
    "data": "data",
    "kinds": ["ae", "beta-vae"],
    "betas": [4.0],
    "seeds": [0],
    "model": {"latent_dim": 4, "channels": [8, 16]},
    "shifted": None,
    "epochs": 5,
    "batch_size": 8,
    "lr": 0.003,
    "warmup_steps": 1,
    "max_steps": None,
    "workers": 1,
    "scoring": {"label_budgets": [20, 100]},
}


def test_an_old_sweep_json_still_loads_and_resumes(tmp_path):
    cfg = SweepConfig.from_dict(OLD_SWEEP_JSON)
    assert cfg.kinds == ("ae", "beta-vae") and cfg.epochs == 5 and cfg.batch_size == 8
    assert cfg.to_dict() == OLD_SWEEP_JSON
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps(OLD_SWEEP_JSON))
    _check_sweep_dir(cfg, out, overwrite=False)  # the same sweep: resumed
    with pytest.raises(ValueError, match=r"other settings \(differs in \['epochs'\]\)"):
        _check_sweep_dir(dataclasses.replace(cfg, epochs=6), out, overwrite=False)
    with pytest.raises(ValueError, match="unknown sweep keys"):
        SweepConfig.from_dict(OLD_SWEEP_JSON | {"bogus": 1})
