"""Which autoencoder to pick: a sweep over the family, scored as representations and for RL.

:func:`run_representation_sweep` collects the data (when given an env; states recorded),
a shifted dataset for the anomaly AUROC, trains and scores every member through
:func:`worldvae.family_sweep.run_sweep`, optionally trains a short latent agent per member
(downstream return), and writes the report (:mod:`agents.representation_report`). Every stage resumes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agents.agent_config import resolve_config
from agents.agent_training import train_agent
from agents.statistics import normalized_auc
from worldvae.atomic import write_json
from worldvae.config_fields import check_ranges, option
from worldvae.envspec import EnvSpec, as_frame_size
from worldvae.family_sweep import SweepConfig, run_sweep
from worldvae.records import record_path
from worldvae.representation import RepresentationConfig
from worldvae.rundir import RunDirLock, check_folder, check_ours, remove_owned
from worldvae.workers import parent_bound_pool

logger = logging.getLogger(__name__)

RETURN_FILE = "return.json"
# What a representation sweep's folder holds; a folder holding anything else is refused.
SWEEP_ENTRIES = ("data", "shifted", "sweep", "agents", "report")
# What ``overwrite`` removes: all made from the models; the collected frames are kept.
REPLACED_ENTRIES = ("sweep", "agents", "report")


@dataclass(frozen=True)
class SweepPreset:
    """Budgets of a representation sweep.

    ``shifted_env_id`` (another env's frames) or ``shifted_env_kwargs`` (the same env changed,
    e.g. ``domain_randomize=True``) gives the anomaly AUROC its out-of-distribution frames.
    ``return_steps = 0`` skips the downstream agents. Fields declared with
    :func:`~worldvae.config_fields.option` are range-checked (and are ``worldvae sweep`` flags).
    """

    env_id: str
    frame_size: int = 64
    collect_frames: int = 20_000
    collect_policy: str = "random"
    shifted_env_id: str | None = None
    shifted_env_kwargs: dict[str, Any] | None = None
    shifted_frames: int = 2_000
    kinds: tuple[str, ...] = ("ae", "dae", "vae", "beta-vae")
    betas: tuple[float, ...] = (4.0, 16.0)
    seeds: tuple[int, ...] = (0,)
    model: dict[str, Any] = field(default_factory=lambda: {"latent_dim": 32})
    epochs: int = 5
    batch_size: int = 128
    max_steps: int | None = None
    label_budgets: tuple[int, ...] = (50, 500, 5000)
    test_frames: int = 2000
    return_steps: int = option(20_000, "latent PPO steps per model (0: no agents)", 0, 10**11)
    agent_overrides: dict[str, Any] = field(default_factory=dict)
    n_envs: int = 4
    eval_freq: int = 2_000
    eval_episodes: int = 5
    workers: int = 2

    def __post_init__(self) -> None:
        check_ranges(self)


PRESETS: dict[str, SweepPreset] = {
    # Every stage in about a minute; nothing is expected to learn. Used by the tests.
    "smoke": SweepPreset(
        env_id="MiniGrid-Empty-5x5-v0",
        frame_size=16,
        collect_frames=600,
        shifted_env_id="MiniGrid-Empty-6x6-v0",
        shifted_frames=200,
        kinds=("ae", "beta-vae"),
        betas=(4.0,),
        model={"latent_dim": 4, "channels": [8, 16]},
        epochs=1,
        batch_size=64,
        label_budgets=(20, 100),
        test_frames=100,
        return_steps=256,
        agent_overrides={"n_steps": 64, "batch_size": 64, "n_epochs": 1},
        n_envs=2,
        eval_freq=128,
        eval_episodes=2,
        workers=1,
    ),
    # The documented sweep: MiniGrid-Empty-8x8 with agent position and heading as factors,
    # DoorKey-8x8 (same grid size, a wall, a door and a key added) as the shifted frames.
    "representation": SweepPreset(
        env_id="MiniGrid-Empty-8x8-v0",
        frame_size=40,
        collect_frames=8_000,
        shifted_env_id="MiniGrid-DoorKey-8x8-v0",
        model={"latent_dim": 16, "channels": [32, 64, 128]},
        epochs=3,
        batch_size=128,
        # 12,000 steps left every latent agent at 0 in the documented run (docs/representation);
        # latent agents on Empty-8x8 passed half the best return at 18,000 in an earlier run.
        return_steps=30_000,
        agent_overrides={"n_steps": 128, "batch_size": 128, "n_epochs": 4, "learning_rate": 2.5e-4},
        n_envs=4,
        eval_freq=2_000,
        eval_episodes=5,
        workers=2,
    ),
}


def _collect_data(preset: SweepPreset, out: Path, progress: bool) -> tuple[Path, Path | None]:
    from envs import collect

    env = EnvSpec(preset.env_id, frame_size=as_frame_size(preset.frame_size))
    data = out / "data"
    collect(
        data,
        env,
        n_frames=preset.collect_frames,
        n_workers=2,
        policy=preset.collect_policy,
        progress=progress,
        record_state=True,
    )
    shifted = None
    if preset.shifted_env_id or preset.shifted_env_kwargs:
        shifted = out / "shifted"
        collect(
            shifted,
            env.replace(
                env_id=preset.shifted_env_id or preset.env_id, env_kwargs=preset.shifted_env_kwargs
            ),
            n_frames=preset.shifted_frames,
            n_workers=2,
            policy=preset.collect_policy,
            progress=progress,
            seed=1,
            record_state=False,
        )
    return data, shifted


def _train_return(
    env: EnvSpec,
    model_dir: str,
    seed: int,
    preset: SweepPreset,
    bundle: str,
    threads: int,
) -> dict[str, Any]:
    """A short latent agent on ``model_dir``; its final return and normalised AUC (cached)."""
    import csv

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    path = Path(bundle)
    cached = path.parent / f"{path.name}.{RETURN_FILE}"
    identity = {"steps": preset.return_steps, "model_dir": model_dir, "seed": seed}
    if cached.is_file():
        d = json.loads(cached.read_text())
        if d.get("identity") == identity:
            return dict(d["result"])
    cfg = resolve_config(
        env.env_id,
        "latent",
        "ppo",
        model_dir,
        preset.return_steps,
        seed,
        overrides=preset.agent_overrides,
        n_envs=preset.n_envs,
        eval_freq=preset.eval_freq,
        eval_episodes=preset.eval_episodes,
        env_given=env.options(),
        device="cpu",
    )
    r = train_agent(cfg, path, skip_complete=True, progress=False)
    with open(path / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    steps = np.array([float(x["steps"]) for x in rows])
    returns = np.array([float(x["mean_return"]) for x in rows])
    result = {
        "return": float(r.final_mean_return),
        "return_auc": normalized_auc(steps, returns),
        "agent_seconds": float(r.train_seconds),
    }
    write_json(cached, {"identity": identity, "result": result})
    return result


def downstream_returns(
    rows: list[dict[str, Any]],
    env: EnvSpec,
    preset: SweepPreset,
    out: Path,
    workers: int,
) -> None:
    """Add ``return``, ``return_auc`` and ``agent_seconds`` to each row (a latent PPO run)."""
    import os

    jobs = [
        (
            env,
            row["model_dir"],
            int(row["seed"]),
            preset,
            str(out / "agents" / row["run"]),
        )
        for row in rows
    ]
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with parent_bound_pool(max(1, min(workers, len(jobs)))) as pool:
            results = list(pool.map(_train_return, *zip(*jobs, strict=True), [threads] * len(jobs)))
    else:
        results = []
        for i, job in enumerate(jobs):
            results.append(_train_return(*job, threads=1))
            print(f"[agents] {i + 1}/{len(jobs)} {rows[i]['run']}", flush=True)
    for row, res in zip(rows, results, strict=True):
        row.update(res)


def sweep_config(
    preset: SweepPreset, data: str | Path, shifted: str | Path | None = None
) -> SweepConfig:
    """The family sweep ``preset`` runs on the dataset folder ``data`` (paths recorded
    absolute), every setting checked; nothing is read or written.

    Raises:
        ValueError: a setting out of range, an unknown kind, or a model its class refuses.
    """
    scoring = RepresentationConfig(
        label_budgets=preset.label_budgets, test_frames=preset.test_frames
    ).to_dict()
    return SweepConfig(
        data=record_path(data),
        shifted=record_path(shifted) if shifted else None,
        kinds=preset.kinds,
        betas=preset.betas,
        seeds=preset.seeds,
        model=preset.model,
        epochs=preset.epochs,
        batch_size=preset.batch_size,
        max_steps=preset.max_steps,
        workers=preset.workers,
        scoring=scoring,
    )


def run_representation_sweep(
    preset: SweepPreset,
    out_dir: str | Path,
    data: str | Path | None = None,
    shifted: str | Path | None = None,
    command: str = "",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Collect (unless ``data`` is given), train, score, run agents, report; returns report.md.

    With ``data`` the env is the dataset's; ``shifted`` is then an optional dataset of
    shifted frames (without one, the anomaly AUROC is left out). Every setting is checked
    before anything is written; the sweep holds ``out_dir``'s
    :class:`~worldvae.rundir.RunDirLock` for its whole life, refuses a folder holding what it
    does not write, and ``overwrite`` removes only what it made from the models
    (:data:`REPLACED_ENTRIES`; the collected frames are kept).

    Raises:
        ValueError: a setting out of range, or a dataset without states.
        ForeignDirError: ``out_dir`` is a file, or holds what a sweep does not write.
        RunDirBusyError: another process is writing ``out_dir``.
    """
    from worldvae.data import EpisodeDataset
    from worldvae.representation import require_states

    out = Path(out_dir)
    sweep_config(preset, data if data is not None else out / "data", shifted)
    if data is not None:
        require_states(EpisodeDataset(data))
    check_folder(out)
    check_ours(out, SWEEP_ENTRIES, "representation sweep")  # before the lock makes the folder
    with RunDirLock(out, "sweep"):
        if overwrite:
            remove_owned(out, REPLACED_ENTRIES)
        return _sweep_in(preset, out, data, shifted, command, progress)


def _sweep_in(
    preset: SweepPreset,
    out: Path,
    data: str | Path | None,
    shifted: str | Path | None,
    command: str,
    progress: bool,
) -> Path:
    """The stages of :func:`run_representation_sweep` in the claimed, locked folder ``out``."""
    from agents.representation_report import write_sweep_report
    from worldvae.data import EpisodeDataset

    timings: dict[str, float] = {}
    t = time.perf_counter()
    if data is None:
        data_dir, shifted_dir = _collect_data(preset, out, progress)
    else:
        data_dir, shifted_dir = Path(data), (Path(shifted) if shifted else None)
    timings["collect"] = time.perf_counter() - t
    dataset = EpisodeDataset(data_dir)
    env_id = dataset.manifest.env_id
    preset = replace(preset, env_id=env_id)
    cfg = sweep_config(preset, data_dir, shifted_dir)
    t = time.perf_counter()
    rows, controls = run_sweep(cfg, out / "sweep")
    timings["train_and_score"] = time.perf_counter() - t
    if preset.return_steps > 0:
        t = time.perf_counter()
        downstream_returns(rows, dataset.manifest.env_spec, preset, out, preset.workers)
        timings["agents"] = time.perf_counter() - t
    report = write_sweep_report(
        rows,
        controls,
        out / "report",
        env_id=env_id,
        n_frames=dataset.n_frames(),
        settings=asdict(preset),
        command=command,
        timings=timings,
    )
    return report
