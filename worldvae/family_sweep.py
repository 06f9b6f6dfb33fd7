"""Train several members of the autoencoder family on one dataset and score each one.

Every run gets the same data, budget (epochs, batch size, learning rate, optional step cap)
and seeds, and goes through :func:`worldvae.vae.trainer.train_autoencoder`. A sweep directory::

    sweep.json                  the sweep's configuration
    runs/NAME/                  one trainer run directory per (member, seed)
    runs/NAME/representation.json, runs/NAME/traversals.png   its scores and factor traversals
    controls.json               raw pixels, random encoder and PCA, scored the same way

The sweep resumes run by run: finished runs are not retrained, a run killed mid-training
continues from its last checkpoint, and scores already written are kept while the scoring
configuration is unchanged. Runs train in parallel processes when ``workers > 1``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from worldvae.atomic import write_json
from worldvae.config_fields import check_ranges, option, option_from, reject_unknown_keys
from worldvae.records import record_path, recorded_path
from worldvae.representation import RepresentationConfig
from worldvae.rundir import RunDirLock, check_folder, check_ours, remove_owned
from worldvae.vae.config import KINDS, AutoencoderConfig
from worldvae.vae.trainer import TrainConfig
from worldvae.workers import parent_bound_pool

logger = logging.getLogger(__name__)

SCORES_FILE = "representation.json"
CONTROLS_FILE = "controls.json"
SWEEP_FILE = "sweep.json"
# What a sweep folder holds (its runs' own folders and the lock aside); ``overwrite`` removes
# these and nothing else, and a folder holding anything else is refused.
SWEEP_ENTRIES = (SWEEP_FILE, "runs", CONTROLS_FILE)
MAX_SEEDS = 1000

# The :class:`TrainConfig` fields a sweep sets, the same for every run (the training budget).
TRAIN_FIELDS = ("epochs", "batch_size", "lr", "warmup_steps", "max_steps")


@dataclass(frozen=True)
class SweepRun:
    """One member of the grid: its name, model options and training seed."""

    name: str
    model: dict[str, Any]
    seed: int


def sweep_grid(
    kinds: Sequence[str],
    betas: Sequence[float] = (1.0,),
    seeds: Sequence[int] = (0,),
    base_model: dict[str, Any] | None = None,
) -> list[SweepRun]:
    """The runs of a sweep: each kind once per seed, ``beta-vae`` once per beta and seed.

    Names read ``KIND__sSEED`` and ``beta-vae_bBETA__sSEED``. ``base_model`` (latent size,
    channels, ...) is shared by every run.

    Raises:
        ValueError: an unknown kind, a non-positive beta, or an empty list.
    """
    if not kinds or not seeds:
        raise ValueError("a sweep needs at least one kind and one seed")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown autoencoder kinds {unknown}; choose from {', '.join(KINDS)}")
    if any(b <= 0 for b in betas):
        raise ValueError(f"beta values must be positive, got {list(betas)}")
    base = dict(base_model or {})
    runs: list[SweepRun] = []
    for seed in seeds:
        for kind in dict.fromkeys(kinds):
            if kind == "beta-vae":
                for beta in dict.fromkeys(betas):
                    label = f"{beta:g}".replace(".", "p")
                    runs.append(
                        SweepRun(
                            f"beta-vae_b{label}__s{seed}", base | {"kind": kind, "beta": beta}, seed
                        )
                    )
            else:
                runs.append(SweepRun(f"{kind}__s{seed}", base | {"kind": kind}, seed))
    return runs


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the grid, the shared training budget and how runs are scored.

    ``sweep.json`` holds :meth:`to_dict` (flat keys); :meth:`from_dict` reads it back.

    Attributes:
        data: dataset directory (collected with states for the factor scores).
        shifted: a dataset of another distribution for the anomaly AUROC, or None.
        kinds, betas, seeds, model: see :func:`sweep_grid`.
        epochs, batch_size, lr, warmup_steps, max_steps: the training budget every run gets
            (:data:`TRAIN_FIELDS`); their defaults, ranges and help are
            :class:`~worldvae.vae.trainer.TrainConfig`'s, and every other training field keeps
            TrainConfig's default (see :meth:`train_config`).
        workers: runs trained and scored at once, in separate processes.
        scoring: :class:`RepresentationConfig` as a dict.
    """

    data: str
    kinds: tuple[str, ...] = option(
        ("ae", "dae", "vae", "beta-vae"),
        f"autoencoder kinds, a comma list of {', '.join(KINDS)}",
        choices=KINDS,
    )
    betas: tuple[float, ...] = option(
        (4.0, 16.0), "betas of beta-vae, a comma list", 0.0, 1e6, low_open=True, flag="--beta"
    )
    seeds: tuple[int, ...] = option(
        (0,), "training seeds, a comma list", 0, 2**32 - 1, max_len=MAX_SEEDS
    )
    model: dict[str, Any] = field(default_factory=lambda: {"latent_dim": 32})
    shifted: str | None = None
    epochs: int = option_from(TrainConfig, "epochs")
    batch_size: int = option_from(TrainConfig, "batch_size")
    lr: float = option_from(TrainConfig, "lr")
    warmup_steps: int = option_from(TrainConfig, "warmup_steps")
    max_steps: int | None = option_from(TrainConfig, "max_steps")
    workers: int = option(1, "runs trained and scored at once, in separate processes", 1, 1024)
    scoring: dict[str, Any] = field(default_factory=lambda: RepresentationConfig().to_dict())

    def __post_init__(self) -> None:
        """Check every setting, so that a sweep is refused before it writes anything.

        Raises:
            ValueError: a value out of range, an unknown kind, or a model or scoring
                configuration its class refuses.
        """
        check_ranges(self)
        for run in self.runs():
            AutoencoderConfig.from_dict(dict(run.model))  # frame_shape: the data's, later
            self.train_config(run)
        self.representation_config()

    def with_paths_recorded(self) -> SweepConfig:
        """This sweep with ``data`` and ``shifted`` absolute, as ``sweep.json`` records them
        (:mod:`worldvae.records`)."""
        return replace(
            self,
            data=record_path(self.data),
            shifted=record_path(self.shifted) if self.shifted else None,
        )

    def runs(self) -> list[SweepRun]:
        return sweep_grid(self.kinds, self.betas, self.seeds, self.model)

    def train_config(self, run: SweepRun) -> TrainConfig:
        """How ``run`` trains: this sweep's budget, the run's model and seed, on the CPU."""
        budget = {name: getattr(self, name) for name in TRAIN_FIELDS}
        return TrainConfig(model=run.model, seed=run.seed, device="cpu", **budget)

    def representation_config(self) -> RepresentationConfig:
        d = dict(self.scoring)
        d["label_budgets"] = tuple(d["label_budgets"])
        return RepresentationConfig(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with flat keys: what ``sweep.json`` holds."""
        return dict(json.loads(json.dumps(asdict(self))))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        """The sweep a ``sweep.json`` describes (keys it lacks take their defaults).

        Raises:
            ValueError: unknown keys or values out of range.
            TypeError: a required key (``data``) is missing.
        """
        reject_unknown_keys(cls, d, "sweep")
        fields: dict[str, Any] = dict(d)
        for k in ("kinds", "betas", "seeds"):
            if k in fields:
                fields[k] = tuple(fields[k])
        return cls(**fields)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_one(cfg: SweepConfig, run: SweepRun, out_dir: str, threads: int = 0) -> dict[str, Any]:
    """Train ``run`` (or resume it, or skip it when finished), then score it once.

    Returns its scores with ``run``, ``kind``, ``beta``, ``seed``, ``train_seconds`` added.
    """
    import torch

    from worldvae.data import EpisodeDataset
    from worldvae.representation import evaluate_model, load_factor_data
    from worldvae.vae import load_model
    from worldvae.vae.trainer import is_finished, train_autoencoder

    if threads > 0:
        torch.set_num_threads(threads)
    run_dir = Path(out_dir) / "runs" / run.name
    tcfg = cfg.train_config(run)
    if not is_finished(run_dir):
        logger.info("training %s", run.name)
        train_autoencoder(cfg.data, run_dir, tcfg, resume=run_dir.exists(), progress=False)
    scores_path = run_dir / SCORES_FILE
    rep = cfg.representation_config()
    identity = {"scoring": rep.to_dict(), "shifted": cfg.shifted, "data": cfg.data}
    cached = _read_json(scores_path)
    if cached is not None and cached.get("identity") == identity:
        return dict(cached["scores"])
    logger.info("scoring %s", run.name)
    data = load_factor_data(
        EpisodeDataset(cfg.data),
        rep,
        EpisodeDataset(cfg.shifted, val_fraction=0.0) if cfg.shifted else None,
    )
    model = load_model(run_dir, device="cpu")
    scores = evaluate_model(model, data, rep, run_dir)
    history = _read_json(run_dir / "checkpoints" / "last" / "trainer_state.json") or {}
    scores |= {
        "run": run.name,
        "kind": run.model["kind"],
        "beta": run.model.get("beta") if run.model["kind"] == "beta-vae" else None,
        "seed": run.seed,
        "train_seconds": float((history.get("history") or [{}])[-1].get("seconds", 0.0)),
        "model_dir": record_path(run_dir),
    }
    write_json(scores_path, {"identity": identity, "scores": scores})
    return scores


def score_controls(cfg: SweepConfig, out_dir: str | Path) -> dict[str, Any]:
    """Score the controls once per sweep (cached in ``controls.json``)."""
    from worldvae.data import EpisodeDataset
    from worldvae.representation import evaluate_controls, load_factor_data

    path = Path(out_dir) / CONTROLS_FILE
    rep = cfg.representation_config()
    identity = {"scoring": rep.to_dict(), "data": cfg.data, "model": cfg.model}
    cached = _read_json(path)
    if cached is not None and cached.get("identity") == identity:
        return dict(cached["controls"])
    dataset = EpisodeDataset(cfg.data)
    model_cfg = AutoencoderConfig.from_dict(
        {**cfg.model, "kind": "vae", "frame_shape": dataset.frame_shape}
    )
    controls = evaluate_controls(load_factor_data(dataset, rep), model_cfg, rep)
    write_json(path, {"identity": identity, "controls": controls})
    return controls


def _as_written_now(old: dict[str, Any], out: Path) -> dict[str, Any]:
    """A ``sweep.json`` of the folder ``out`` as this version writes it: keys it lacks take
    their defaults, and its dataset paths, relative in an older one, are read from ``out``
    first, then from the working folder (left as read when it is not a sweep config at all)."""
    try:
        cfg = SweepConfig.from_dict(old)
    except (TypeError, ValueError):
        return old
    data = recorded_path(cfg.data, out, "the sweep's dataset")
    shifted = recorded_path(cfg.shifted, out, "the sweep's shifted dataset")
    cfg = replace(cfg, data=str(data), shifted=str(shifted) if shifted else None)
    return cfg.with_paths_recorded().to_dict()


def _check_sweep_dir(cfg: SweepConfig, out: Path, overwrite: bool) -> None:
    """Under the folder's lock: refuse ``out`` when it holds what a sweep does not write, or
    a sweep with other settings (unless ``overwrite``, which removes a sweep's own entries
    and nothing else); then write ``sweep.json``, its paths absolute."""
    check_ours(out, SWEEP_ENTRIES, "sweep")
    path = out / SWEEP_FILE
    old = _read_json(path)
    new = cfg.with_paths_recorded().to_dict()
    if old is not None and not overwrite:
        old = _as_written_now(old, out)
        if old != new:
            changed = sorted(k for k in new if old.get(k) != new[k])
            raise ValueError(
                f"{out} holds a sweep with other settings (differs in {changed}); re-run with "
                "the same options to resume it, choose another --out, or pass --overwrite"
            )
    if overwrite:
        remove_owned(out, SWEEP_ENTRIES)
    write_json(path, new)


def run_sweep(
    cfg: SweepConfig, out_dir: str | Path, overwrite: bool = False
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train and score every run of ``cfg`` (resuming what is done), then the controls.

    The sweep holds the folder's :class:`~worldvae.rundir.RunDirLock` for its whole life and
    records its dataset paths absolute (:mod:`worldvae.records`).

    Returns:
        (one scores dict per run, in grid order; the controls' scores).

    Raises:
        ValueError: ``out_dir`` holds a sweep with other settings (unless ``overwrite``), or
            the dataset holds no states.
        ForeignDirError: ``out_dir`` is a file, or holds what a sweep does not write
            (``overwrite`` or not); nothing is changed.
        RunDirBusyError: another process is writing ``out_dir``.
    """
    from worldvae.data import EpisodeDataset
    from worldvae.representation import require_states

    require_states(EpisodeDataset(cfg.data))
    cfg = cfg.with_paths_recorded()
    out = Path(out_dir)
    check_folder(out)
    check_ours(out, SWEEP_ENTRIES, "sweep")  # before the lock makes the folder
    with RunDirLock(out, "sweep"):
        _check_sweep_dir(cfg, out, overwrite)
        return train_and_score(cfg, out)


def train_and_score(cfg: SweepConfig, out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train and score every run of ``cfg`` into the sweep folder ``out``, claimed by
    :func:`run_sweep`, then the controls; returns what :func:`run_sweep` does."""
    runs = cfg.runs()
    workers = max(1, min(cfg.workers, len(runs)))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with parent_bound_pool(workers) as pool:
            futures = [pool.submit(run_one, cfg, r, str(out), threads) for r in runs]
            rows = [f.result() for f in futures]
    else:
        rows = []
        for i, r in enumerate(runs):
            rows.append(run_one(cfg, r, str(out)))
            print(f"[sweep] {i + 1}/{len(runs)} {r.name} scored", flush=True)
    return rows, score_controls(cfg, out)
