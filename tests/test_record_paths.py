"""Records name folders that survive a change of working folder; a dataset given beside a model
must hold the frames the model was trained on.

The project below is made with relative paths from its own folder, as a user types them; the
commands are then run from another folder that holds a ``./data`` of its own (other frames).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agents.cli.main import main
from agents.comparison import CompareConfig, plan_runs
from envs import collect
from envs.latent_memory import encode_latent_dataset
from worldvae.data.latents import LATENT_MANIFEST, LatentManifest
from worldvae.envspec import EnvSpec
from worldvae.memory.trainer import MemoryTrainConfig, train_memory
from worldvae.records import recorded_path
from worldvae.vae.trainer import TrainConfig, train_autoencoder

SPEC = EnvSpec("CartPole-v1", frame_size=(16, 16), max_episode_steps=20, backend="gymnasium")
OTHER = SPEC.replace(frame_skip=2)  # frames of the same shape, made otherwise
VAE = TrainConfig(
    model={"kind": "vae", "latent_dim": 4, "channels": [8, 16]},
    epochs=1,
    batch_size=16,
    warmup_steps=1,
    device="cpu",
)
RNN = MemoryTrainConfig(
    model={"hidden_size": 16, "n_gaussians": 2}, epochs=1, batch_size=4, seq_len=8, device="cpu"
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``proj/{data,vae,latents}`` made from ``proj`` with relative paths, and
    ``elsewhere/data``, a dataset of other frames under another working folder."""
    root = tmp_path_factory.mktemp("records")
    (root / "proj").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root / "proj")
        collect("data", SPEC, n_episodes=6, n_workers=1, progress=False)
        train_autoencoder("data", "vae", VAE, progress=False)
        encode_latent_dataset("data", "vae", "latents", device="cpu", progress=False)
    collect(root / "elsewhere" / "data", OTHER, n_episodes=3, n_workers=1, progress=False)
    return root


def _error(capsys: pytest.CaptureFixture[str], argv: list[Any]) -> str:
    assert main([str(a) for a in argv]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_records_hold_absolute_paths(project: Path) -> None:
    proj = (project / "proj").resolve()
    vae = json.loads((proj / "vae" / "config.json").read_text())
    assert vae["data"]["root"] == str(proj / "data")
    latents = LatentManifest.load(proj / "latents")
    assert latents.source == str(proj / "data")
    assert latents.model_dir == str(proj / "vae" / "checkpoints" / "best")


def test_compare_reads_the_vaes_own_dataset_from_another_folder(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PCA arm and the probes use the data the VAE was trained on, not ``./data``."""
    monkeypatch.chdir(project / "elsewhere")
    cfg = CompareConfig(
        env_id="CartPole-v1", model_dir=str(project / "proj" / "vae"), obs_kinds=("pca",)
    )
    assert Path(cfg.resolved_data_dir() or "") == (project / "proj" / "data").resolve()
    runs = plan_runs(cfg, tmp_path / "cmp")
    pca = json.loads((Path(runs[0].config.model_dir or "") / "config.json").read_text())
    assert pca["extra_info"]["data"]["env_options"]["frame_skip"] == 1  # the VAE's frames
    assert Path(runs[0].config.model_dir or "").is_absolute()


def test_train_rnn_from_another_folder_keeps_its_dream_strips(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "elsewhere")
    train_memory(project / "proj" / "latents", tmp_path / "rnn", RNN, progress=False)
    assert (tmp_path / "rnn" / "images" / "dream.png").is_file()
    with Image.open(tmp_path / "rnn" / "images" / "dream.gif") as gif:  # real | M's dream
        assert gif.n_frames > 1 and gif.size[0] > 2 * gif.size[1]
    data = json.loads((tmp_path / "rnn" / "config.json").read_text())["data"]
    assert data["latent_data"] == str((project / "proj" / "latents").resolve())
    assert data["vae_dir"] == str((project / "proj" / "vae" / "checkpoints" / "best").resolve())


def _old_latents(project: Path, where: Path, model_dir: str, source: str) -> Path:
    """A copy of the latent dataset whose manifest holds relative paths, as before."""
    shutil.copytree(project / "proj" / "latents", where)
    path = where / LATENT_MANIFEST
    d = json.loads(path.read_text())
    path.write_text(json.dumps(d | {"model_dir": model_dir, "source": source}))
    return where


def test_an_old_relative_record_is_read_beside_the_record_first(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(project / "proj" / "vae", tmp_path / "vae")
    latents = _old_latents(project, tmp_path / "latents", "../vae", "../data")
    monkeypatch.chdir(project / "elsewhere")
    train_memory(latents, tmp_path / "rnn", RNN, progress=False)
    assert (tmp_path / "rnn" / "images" / "dream.png").is_file()
    data = json.loads((tmp_path / "rnn" / "config.json").read_text())["data"]
    assert data["vae_dir"] == str((tmp_path / "vae").resolve())


def test_an_old_latent_dataset_resumes_from_the_folder_it_was_made_in(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as typed (``data``, ``vae/checkpoints/best``): the same encode-data resumes."""
    latents = _old_latents(project, tmp_path / "latents", "vae/checkpoints/best", "data")
    monkeypatch.chdir(project / "proj")
    r = encode_latent_dataset("data", "vae", latents, device="cpu", progress=False)
    assert r.new_episodes == 0 and r.total_episodes == 6


def test_an_ambiguous_old_record_reads_beside_the_record_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "run" / "data").mkdir(parents=True)
    (tmp_path / "cwd" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")
    with caplog.at_level(logging.WARNING):
        got = recorded_path("data", tmp_path / "run", "the dataset")
    assert got == (tmp_path / "run" / "data").resolve()
    assert str(tmp_path / "cwd" / "data") in caplog.text
    caplog.clear()
    (tmp_path / "run" / "data").rmdir()
    assert recorded_path("data", tmp_path / "run") == (tmp_path / "cwd" / "data").resolve()
    assert recorded_path(str(tmp_path / "x"), tmp_path / "run") == tmp_path / "x"
    assert recorded_path(None, tmp_path) is None
    assert not caplog.text


def test_an_old_vae_record_read_from_another_folder_meets_the_frames_check(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded as typed (``data``) and read from a folder with its own ``./data`` of other
    frames: refused, naming both, instead of fitting the PCA on them."""
    vae = tmp_path / "vae"
    shutil.copytree(project / "proj" / "vae", vae)
    cfg_path = vae / "config.json"
    d = json.loads(cfg_path.read_text())
    d["data"]["root"] = "data"
    cfg_path.write_text(json.dumps(d))
    monkeypatch.chdir(project / "elsewhere")
    cfg = CompareConfig(env_id="CartPole-v1", model_dir=str(vae), obs_kinds=("pca",))
    with pytest.raises(ValueError, match="frame_skip: model 1, dataset 2") as e:
        cfg.resolved_data_dir()
    assert str(vae) in str(e.value) and "data" in str(e.value)
    monkeypatch.chdir(project / "proj")  # where it was made: the cwd's ./data is the VAE's
    assert Path(cfg.resolved_data_dir() or "") == (project / "proj" / "data").resolve()


def test_a_dataset_of_other_frames_is_refused_naming_both(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vae, other = project / "proj" / "vae", project / "elsewhere" / "data"
    compare = ["compare", "--env", "CartPole-v1", "--model", vae, "--data", other]
    err = _error(capsys, [*compare, "--obs", "latent,pca", "--out", tmp_path / "cmp"])
    assert str(vae) in err and str(other) in err and "frame_skip" in err
    assert not (tmp_path / "cmp").exists()
    err = _error(capsys, ["encode-data", "--data", other, "--model", vae, "--out", tmp_path / "z"])
    assert str(vae) in err and str(other) in err and "frame_skip" in err
    assert not (tmp_path / "z").exists()
    err = _error(capsys, ["inspect", vae, "--data", other, "--out", tmp_path / "inspect"])
    assert str(vae) in err and str(other) in err
    assert not (tmp_path / "inspect").exists()


def test_train_vae_resumes_only_on_the_runs_frames(
    project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "vae"
    shutil.copytree(project / "proj" / "vae", run)
    other = project / "elsewhere" / "data"
    argv = ["train-vae", "--data", other, "--out", run, "--resume", "--device", "cpu"]
    err = _error(capsys, [*argv, "--kind", "vae", "--latent-dim", "4", "--channels", "8,16"])
    assert str(other) in err and str(run) in err and "frame_skip" in err
