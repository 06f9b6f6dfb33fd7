"""``worldvae sweep`` keeps the folder and option rules of the other commands: options are
range-checked when parsed, every setting is checked before anything is written, one writer
holds the folder, a folder holding what a sweep does not write is refused, and ``sweep.json``
names its dataset so that the sweep resumes from any working folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agents.cli.main import main
from agents.representation_sweep import PRESETS, SweepPreset, sweep_config
from envs import collect
from worldvae.envspec import EnvSpec
from worldvae.family_sweep import SWEEP_FILE, SweepConfig, run_sweep
from worldvae.representation import RepresentationConfig
from worldvae.rundir import LOCK_NAME, ForeignDirError, RunDirLock, entries

SPEC = EnvSpec("CartPole-v1", frame_size=(16, 16), max_episode_steps=40, backend="gymnasium")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CartPole-v1 frames at 16x16 with the true state recorded."""
    root = tmp_path_factory.mktemp("sweep_rules") / "data"
    collect(root, SPEC, n_frames=800, n_workers=1, record_state=True, progress=False)
    return root


def _sweep(data: Path | str, out: Path | str, *flags: str) -> list[str]:
    """A small sweep: the smoke preset's budgets on ``data``, no agents."""
    return ["sweep", "--preset", "smoke", "--data", str(data), "--out", str(out), *flags]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str], status: int = 1) -> str:
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--epochs", "0"], "--epochs"),
        (["--latent-dim", "0"], "--latent-dim"),
        (["--max-steps", "-1"], "--max-steps"),
        (["--kinds", "ae,vqvae"], "--kinds"),
        (["--workers", "0"], "--workers"),
        (["--return-steps", "-5"], "--return-steps"),
        (["--beta", "0"], "--beta"),
        (["--seeds", "-1"], "--seeds"),
    ],
)
def test_options_out_of_range_are_refused_when_parsed(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    err = _error(capsys, _sweep(data, tmp_path / "sw", *flags), status=2)
    assert named in err and "sweep --help" in err
    assert not (tmp_path / "sw").exists()


def test_settings_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    for bad in ({"kinds": ("ae", "vqvae")}, {"workers": 0}, {"model": {"latent_dim": 0}}):
        with pytest.raises(ValueError):
            SweepConfig(data="d", **bad)
    with pytest.raises(ValueError, match="return_steps"):
        SweepPreset(env_id="CartPole-v1", return_steps=-5)
    assert SweepConfig(data="d", kinds=("ae",), workers=2).workers == 2


def test_a_sweep_refused_for_its_settings_writes_nothing(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model the kind refuses (topk above the latent size) fails before sweep.json is
    written, so the corrected command is not refused as "a sweep with other settings"."""
    out = tmp_path / "sw"
    err = _error(capsys, _sweep(data, out, "--kinds", "topk", "--latent-dim", "4"), status=2)
    assert "topk" in err and "latent_dim=4" in err
    assert not out.exists()
    with pytest.raises(ValueError, match="topk"):
        run_sweep(SweepConfig(data=str(data), kinds=("topk",), model={"latent_dim": 4}), out)
    assert not out.exists()


def test_a_sweep_resumes_from_any_working_folder(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sweep.json`` names its dataset absolute; an older one, relative, is read as typed in
    the folder the sweep was started from."""
    scoring = RepresentationConfig(
        label_budgets=(20, 100), test_frames=60, pixel_side=4, pca_fit_frames=100
    )
    monkeypatch.chdir(data.parent)
    cfg = SweepConfig(
        data=data.name,
        kinds=("ae",),
        model={"latent_dim": 4, "channels": [8, 16]},
        epochs=1,
        batch_size=32,
        scoring=scoring.to_dict(),
    )
    rows, _ = run_sweep(cfg, "sw")
    out = data.parent / "sw"
    recorded = json.loads((out / SWEEP_FILE).read_text())
    assert recorded["data"] == str(data.resolve())
    assert rows[0]["model_dir"] == str((out / "runs" / "ae__s0").resolve())
    weights = out / "runs" / "ae__s0" / "checkpoints" / "best" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    monkeypatch.chdir(tmp_path)  # elsewhere, the dataset named absolute: resumed
    assert run_sweep(replace(cfg, data=str(data)), out)[0] == rows
    (out / SWEEP_FILE).write_text(json.dumps(recorded | {"data": data.name}))  # as before
    monkeypatch.chdir(data.parent)
    run_sweep(cfg, "sw")
    assert weights.stat().st_mtime_ns == before  # never trained again


def test_a_folder_another_process_writes_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sw"
    with RunDirLock(out, "other"):
        err = _error(capsys, _sweep(data, out, "--kinds", "ae", "--return-steps", "0"))
        assert "in use" in err and "PID" in err
        assert entries(out) == []  # nothing written beside the holder's lock
    with RunDirLock(out / "sweep", "other"), pytest.raises(RuntimeError, match="in use"):
        run_sweep(SweepConfig(data=str(data), kinds=("ae",)), out / "sweep")


def test_a_foreign_folder_is_refused_and_left_as_it_was(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    for flags in ((), ("--overwrite",)):
        err = _error(capsys, _sweep(data, out, "--kinds", "ae", "--return-steps", "0", *flags))
        assert "notes.txt" in err and "not a representation sweep folder" in err
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    err = _error(capsys, _sweep(data, a_file, "--kinds", "ae"))
    assert "not a folder" in err and a_file.read_text() == "x"


def test_the_family_sweep_keeps_what_it_did_not_write(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    out.mkdir()
    (out / SWEEP_FILE).write_text(json.dumps({"data": "elsewhere", "kinds": ["vae"]}))
    (out / "mine.csv").write_text("a,b\n")
    cfg = SweepConfig(data=str(data), kinds=("ae",))
    for overwrite in (False, True):
        with pytest.raises(ForeignDirError, match=r"mine\.csv"):
            run_sweep(cfg, out, overwrite=overwrite)
        assert sorted(p.name for p in out.iterdir()) == ["mine.csv", SWEEP_FILE]
    assert not (out / LOCK_NAME).exists()


def test_the_presets_pass_their_own_checks() -> None:
    for preset in PRESETS.values():
        cfg = sweep_config(preset, "data")
        assert cfg.kinds == preset.kinds and Path(cfg.data).is_absolute()
