"""The representation sweep: grid, training and scoring, resuming after a kill, report, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from agents.cli.main import main
from agents.representation_report import rank_correlations, write_sweep_report
from worldvae.data import Episode, Manifest, episode_filename, read_episode, write_episode
from worldvae.data.episodes import EPISODE_KEYS
from worldvae.data.manifest import EPISODES_DIR
from worldvae.family_sweep import SCORES_FILE, SweepConfig, run_sweep, sweep_grid
from worldvae.representation import RepresentationConfig, factor_units

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("square_x", "square_y", "brightness")


def write_square_dataset(root: Path, n_episodes: int = 8, length: int = 30, seed: int = 0) -> Path:
    """Frames 16x16x3 of a 4x4 square whose position and brightness are the recorded states.

    The square random-walks on a 13x13 grid of positions; brightness drifts in [0.3, 1].
    """
    rng = np.random.default_rng(seed)
    Manifest(
        env_id="Square-v0",
        env_options={},
        frame_shape=(16, 16, 3),
        policy={"name": "random", "params": {}},
        seed=seed,
        state_names=list(NAMES),
    ).save(root)
    for i in range(n_episodes):
        pos = np.clip(np.cumsum(rng.integers(-1, 2, (length + 1, 2)), axis=0) + 6, 0, 12)
        light = np.clip(0.65 + np.cumsum(rng.normal(0, 0.05, length + 1)), 0.3, 1.0)
        frames = np.zeros((length + 1, 16, 16, 3), np.uint8)
        for t, ((x, y), b) in enumerate(zip(pos, light, strict=True)):
            frames[t, y : y + 4, x : x + 4] = int(255 * b)
        write_episode(
            root / EPISODES_DIR / episode_filename(i),
            Episode(
                frames=frames,
                actions=np.zeros(length, np.int64),
                rewards=np.zeros(length, np.float32),
                terminated=np.zeros(length, bool),
                truncated=np.r_[np.zeros(length - 1, bool), True],
                seed=i,
                states=np.c_[pos, light].astype(np.float32),
            ),
        )
    return root


def tiny_sweep(data: Path, shifted: Path | None = None, **changes) -> SweepConfig:
    cfg = SweepConfig(
        data=str(data),
        shifted=str(shifted) if shifted else None,
        kinds=("ae", "beta-vae"),
        betas=(4.0,),
        model={"latent_dim": 4, "channels": [8, 16]},
        epochs=1,
        batch_size=8,
        lr=3e-3,
        warmup_steps=1,
        scoring=RepresentationConfig(
            label_budgets=(20, 100), test_frames=60, pixel_side=4, pca_fit_frames=100
        ).to_dict(),
    )
    return replace(cfg, **changes)


@pytest.fixture(scope="module")
def square_data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("square")
    data = write_square_dataset(root / "data")
    shifted = write_square_dataset(root / "shifted", n_episodes=2, seed=5)
    frames = read_episode(shifted / EPISODES_DIR / episode_filename(0), ("frames",))["frames"]
    assert frames.max() > 0
    # shift: an inverted picture (dark square on a white background)
    for i in range(2):
        path = shifted / EPISODES_DIR / episode_filename(i)
        d = read_episode(path, (*EPISODE_KEYS, "states"))
        d["frames"] = 255 - d["frames"]
        write_episode(
            path,
            Episode(
                d["frames"],
                d["actions"],
                d["rewards"],
                d["terminated"],
                d["truncated"],
                int(d["seed"]),
                states=d["states"],
            ),
        )
    return data, shifted


@pytest.fixture(scope="module")
def finished_sweep(square_data, tmp_path_factory):
    data, shifted = square_data
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    cfg = tiny_sweep(data, shifted)
    rows, controls = run_sweep(cfg, out)
    return cfg, out, rows, controls


# ---- the grid -------------------------------------------------------------------------------
def test_grid_names_every_kind_and_beta_once_per_seed():
    runs = sweep_grid(["ae", "vae", "beta-vae", "ae"], [1, 4, 16, 4], [0, 1], {"latent_dim": 8})
    names = [r.name for r in runs]
    assert names[:5] == [
        "ae__s0",
        "vae__s0",
        "beta-vae_b1__s0",
        "beta-vae_b4__s0",
        "beta-vae_b16__s0",
    ]
    assert len(names) == 10 and len(set(names)) == 10
    b4 = runs[3]
    assert b4.model == {"latent_dim": 8, "kind": "beta-vae", "beta": 4} and b4.seed == 0
    assert sweep_grid(["beta-vae"], [0.5])[0].name == "beta-vae_b0p5__s0"


def test_grid_refuses_unknown_kinds_and_bad_betas():
    with pytest.raises(ValueError, match="unknown autoencoder kinds \\['vqvae'\\]"):
        sweep_grid(["ae", "vqvae"])
    with pytest.raises(ValueError, match="positive"):
        sweep_grid(["beta-vae"], [0.0])
    with pytest.raises(ValueError, match="at least one"):
        sweep_grid([])


# ---- training and scoring -------------------------------------------------------------------
def test_sweep_trains_and_scores_every_member_and_the_controls(finished_sweep):
    _, out, rows, controls = finished_sweep
    assert [r["run"] for r in rows] == ["ae__s0", "beta-vae_b4__s0"]
    ae, bvae = rows
    assert ae["kl"] is None and bvae["kl"] is not None and bvae["kl"] >= 0
    for r in rows:
        assert r["recon"] > 0 and 0 <= r["active_units"] <= 4 and r["latent_dim"] == 4
        assert set(r["probe"]) == set(NAMES)
        assert set(r["probe_mean"]) == {"20", "100"}
        assert 0 <= r["mig"] <= 1 and 0 <= r["dci_disentanglement"] <= 1
        assert 0 <= r["anomaly_auroc"] <= 1
        assert set(r["controllability"]) == set(NAMES)
        assert Path(r["traversals_png"]).is_file()
    # the inverted frames are far from anything seen in training
    assert ae["anomaly_auroc"] > 0.9
    assert set(controls) == {"pixels", "random", "pca"}
    assert "mig" not in controls["pixels"] and "mig" in controls["pca"]
    # position and brightness are linear in the pixels: the pixel control reads them well
    assert controls["pixels"]["probe_mean"]["100"] > 0.4
    assert json.loads((out / "sweep.json").read_text())["kinds"] == ["ae", "beta-vae"]


def test_rerun_reuses_finished_runs_and_refuses_other_settings(finished_sweep):
    cfg, out, rows, _ = finished_sweep
    weights = out / "runs" / "ae__s0" / "checkpoints" / "best" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again, _ = run_sweep(cfg, out)
    assert weights.stat().st_mtime_ns == before
    assert again == rows
    with pytest.raises(ValueError, match=r"other settings .*epochs"):
        run_sweep(replace(cfg, epochs=2), out)


@pytest.mark.slow  # a second process imports torch and trains; about a minute on a busy machine
def test_sweep_resumes_after_a_kill(square_data, tmp_path):
    data, _ = square_data
    out = tmp_path / "sweep"
    script = (
        "import sys; from pathlib import Path; "
        "sys.path.insert(0, sys.argv[1]); sys.path.insert(0, str(Path(sys.argv[1]) / 'tests')); "
        "from test_sweep import tiny_sweep; from worldvae.family_sweep import run_sweep; "
        "run_sweep(tiny_sweep(Path(sys.argv[2])), sys.argv[3])"
    )
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(ROOT), str(data), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = out / "runs" / "ae__s0" / SCORES_FILE
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists(), "the first run did not finish before the deadline"
    second = out / "runs" / "beta-vae_b4__s0" / SCORES_FILE
    assert not second.exists()  # killed before the second run was scored
    mtime = first.stat().st_mtime_ns
    rows, _ = run_sweep(tiny_sweep(data), out)
    assert first.stat().st_mtime_ns == mtime  # the finished run was kept as it was
    assert second.exists() and [r["run"] for r in rows] == ["ae__s0", "beta-vae_b4__s0"]
    assert rows[1]["anomaly_auroc"] is None  # no shifted data in this sweep


def test_sweep_needs_states(synthetic_dataset, tmp_path):
    with pytest.raises(ValueError, match="--record-state"):
        run_sweep(tiny_sweep(synthetic_dataset), tmp_path / "s")


# ---- helpers and report ---------------------------------------------------------------------
def test_factor_units_picks_the_most_correlated_unit():
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((500, 2))
    codes = np.c_[rng.standard_normal(500), -3 * factors[:, 1], factors[:, 0] + 0.1, np.ones(500)]
    units, corr = factor_units(codes, factors)
    assert list(units) == [2, 1] and np.all(corr > 0.99)


def test_rank_correlations_follow_return_order():
    flat = [
        {"recon": 30.0 - i, "mig": float(i % 2), "return": float(i), "return_auc": None}
        for i in range(5)
    ]
    corr = rank_correlations(flat, [])
    assert set(corr) == {"return"}  # no AUC recorded
    assert corr["return"]["recon"] == pytest.approx(-1.0)
    assert corr["return"]["kl"] is None


def test_report_writes_table_csv_json_and_pictures(finished_sweep, tmp_path):
    _, _, rows, controls = finished_sweep
    with_return = [r | {"return": float(i), "return_auc": 0.5 * i} for i, r in enumerate(rows)]
    report = write_sweep_report(
        with_return, controls, tmp_path / "report", "Square-v0", 492, {"epochs": 1}, "cmd"
    )
    text = report.read_text()
    assert "| ae__s0 |" in text and "| control: pca |" in text and "Spearman" in text
    for name in ("results.csv", "results.json", "label_efficiency.png", "traversals_ae__s0.png"):
        assert (tmp_path / "report" / name).is_file()
    csv_lines = (tmp_path / "report" / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + 2 + 3 and "probe@100" in csv_lines[0]


def test_cli_reports_a_dataset_without_states(synthetic_dataset, tmp_path, capsys):
    code = main(["sweep", "--data", str(synthetic_dataset), "--out", str(tmp_path / "s")])
    assert code == 1
    assert "worldvae: error:" in capsys.readouterr().err
    assert main(["sweep", "--data", "x", "--env", "CartPole-v1"]) == 1
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    out = tmp_path / "smoke"
    assert main(["sweep", "--preset", "smoke", "--out", str(out)]) == 0
    results = json.loads((out / "report" / "results.json").read_text())
    assert [r["run"] for r in results["runs"]] == ["ae__s0", "beta-vae_b4__s0"]
    assert all(r["return"] is not None for r in results["runs"])
    assert (out / "report" / "report.md").is_file()
