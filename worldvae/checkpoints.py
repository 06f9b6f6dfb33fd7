"""Pieces every trainer shares: the run directory rules and resumable checkpoints.

A run directory holds the run's ``config.json`` and ``checkpoints/``::

    checkpoints/last/   config.json + model.safetensors (the model), trainer_state.pt (optimizer,
                        scheduler and RNG state; loaded with ``weights_only=True``) and
                        trainer_state.json (counters and history)
    checkpoints/best/   config.json + model.safetensors (the best validation score so far)

Every write is atomic (a sibling temporary folder, then renamed). :class:`RunCheckpoints`
prepares a run directory, saves both checkpoints and restores ``last`` on a resume, for every
trainer the same way.

A trainer uses it as::

    ckpt = RunCheckpoints(run_dir, extra={"env_id": env_id})
    ckpt.prepare(resume, overwrite, same_config, RUN_ENTRIES, "train-rnn run")
    ...  # build the model, optimizer, scheduler, data: everything that draws from the torch RNG
    state = ckpt.restore(model, optimizer, scheduler, new_trainer_state("best_val"), resume)
    ckpt.write_run_config(run_config)
    ...  # train: ckpt.save_last(...), ckpt.save_best(...), finally ckpt.finish(...)
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldvae.atomic import atomic_open, recover_dir, torch_save, write_json
from worldvae.rundir import check_ours, entries, remove_owned
from worldvae.vae.io import load_weights, save_model

logger = logging.getLogger(__name__)

STATE_PT, STATE_JSON = "trainer_state.pt", "trainer_state.json"
RUN_CONFIG = "config.json"
CHECKPOINTS, LAST, BEST = "checkpoints", "last", "best"

_CONFIG_ERRORS = (json.JSONDecodeError, KeyError, TypeError, ValueError)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped with its last good checkpoint kept."""


def last_checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/checkpoints/last``: the checkpoint a resume continues from."""
    return Path(run_dir) / CHECKPOINTS / LAST


def best_checkpoint_dir(run_dir: str | os.PathLike[str]) -> Path:
    """``RUN_DIR/checkpoints/best``: the model with the best validation score."""
    return Path(run_dir) / CHECKPOINTS / BEST


def _invalid_config(path: Path, what: str, error: Exception) -> ValueError:
    return ValueError(
        f"{path} is not a valid {what} config ({error}); restore it, or pass --overwrite to "
        "start the run afresh"
    )


def read_run_config(
    path: Path, what: str, check: Callable[[dict[str, Any]], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A run's ``config.json``, passed through ``check`` (which may fill in fields older
    versions did not write, and raises KeyError, TypeError or ValueError on a bad config).

    Raises:
        ValueError: the file is not JSON, or ``check`` rejects it (the message names ``what``,
            e.g. ``"train-vae run"``, and the fix).
    """
    try:
        d = json.loads(path.read_text())
        return dict(check(d) if check is not None else d)
    except _CONFIG_ERRORS as e:
        raise _invalid_config(path, what, e) from e


def check_run_dir(
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    same_config: Callable[[dict[str, Any]], bool],
    ours: Iterable[str],
    what: str,
    keep_foreign: bool = False,
) -> bool:
    """Check that ``run_dir`` may be written; True when ``overwrite`` is to clear it. Writes
    nothing.

    A non-empty directory is continued with ``resume`` (only if ``same_config(old_config)``),
    is to have its own entries ``ours`` removed with ``overwrite`` (the caller removes them),
    and is refused otherwise. A folder holding anything else is refused either way, except that
    with ``keep_foreign`` a run directory that has its ``config.json`` may hold other files
    (they are kept): nothing a run did not write is deleted.

    Raises:
        ForeignDirError: ``run_dir`` holds entries that are not in ``ours``.
        FileExistsError: the directory exists and neither flag is set.
        ValueError: ``resume`` into a run started with another configuration, or an
            unreadable ``config.json``.
    """
    cfg_path = run_dir / RUN_CONFIG
    if not entries(run_dir):
        return False
    ours = tuple(ours)
    if not (keep_foreign and cfg_path.is_file()):
        check_ours(run_dir, ours, what)
    if overwrite:
        return True
    if not resume:
        raise FileExistsError(
            f"run directory {run_dir} already exists; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    if cfg_path.is_file():
        try:
            same = same_config(json.loads(cfg_path.read_text()))
        except _CONFIG_ERRORS as e:
            raise _invalid_config(cfg_path, what, e) from e
        if not same:
            raise ValueError(
                f"cannot resume {run_dir}: it was started with another configuration "
                f"({cfg_path}); use the same options, or --overwrite to start afresh"
            )
    return False


def save_checkpoint(
    model: nn.Module,
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the model and everything a resume needs into ``directory``, atomically.

    The CPU and CUDA RNG states are saved as the uint8 tensors torch gives; ``extra`` and
    ``state["step"]`` go to the model config's ``extra_info``.
    """

    def write_state(d: Path) -> None:
        torch_save(
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            d / STATE_PT,
        )
        write_json(d / STATE_JSON, state)

    save_model(
        model, directory, extra={"step": state["step"], **(extra or {})}, write_more=write_state
    )


def load_checkpoint(
    model: nn.Module, directory: Path, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote (weights, optimizer, scheduler, the torch RNG
    state); return the trainer state dict.

    Raises:
        CheckpointError: the weights are unreadable or do not fit ``model``.
    """
    load_weights(model, directory)
    blob = torch.load(directory / STATE_PT, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    state: dict[str, Any] = json.loads((directory / STATE_JSON).read_text())
    logger.info("resuming from %s at epoch %d, step %d", directory, state["epoch"], state["step"])
    return state


class RunCheckpoints:
    """The ``checkpoints/last`` and ``checkpoints/best`` of one run directory.

    One trainer holds one of these: :meth:`prepare` before building anything, :meth:`restore`
    once everything is built, :meth:`save_last` / :meth:`save_best` while training and
    :meth:`finish` at the end.

    Args:
        run_dir: the run directory.
        extra: JSON-ready metadata stored in both checkpoints' ``config.json`` under
            ``"extra_info"`` (e.g. the data and env the model was trained on).
        writes: False on ``torchrun`` ranks other than rank 0: they read the checkpoints and
            write nothing.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        extra: dict[str, Any] | None = None,
        writes: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.last_dir = last_checkpoint_dir(run_dir)
        self.best_dir = best_checkpoint_dir(run_dir)
        self.extra = dict(extra or {})
        self.writes = writes

    def has_last(self) -> bool:
        """True when ``checkpoints/last`` holds a complete checkpoint to resume from."""
        return (self.last_dir / STATE_JSON).is_file()

    def prepare(
        self,
        resume: bool,
        overwrite: bool,
        same_config: Callable[[dict[str, Any]], bool],
        ours: Iterable[str],
        what: str,
        keep_foreign: bool = False,
        sync: Callable[[], None] | None = None,
    ) -> None:
        """Check the run directory (:func:`check_run_dir`), then remove the entries ``ours``
        for ``overwrite`` and put back a checkpoint whose replacement a kill interrupted.

        No file is written: the caller writes ``config.json`` (:meth:`write_run_config`) once
        everything is built, so a run refused on the way leaves nothing behind. ``sync`` (a
        barrier across ``torchrun`` ranks) runs once every rank has checked and again once the
        writing rank has changed the directory.

        Raises:
            ForeignDirError, FileExistsError, ValueError: as :func:`check_run_dir`.
        """
        ours = tuple(ours)
        clear = check_run_dir(
            self.run_dir, resume, overwrite, same_config, ours, what, keep_foreign
        )
        if sync is not None:
            sync()  # every rank has looked before anything changes
        if self.writes:
            if clear:
                remove_owned(self.run_dir, ours)
            self.recover()
        if sync is not None:
            sync()
        if resume and not self.has_last() and (self.run_dir / RUN_CONFIG).is_file():
            logger.warning("%s holds no checkpoint yet; starting from step 0", self.run_dir)

    def recover(self) -> None:
        """Undo checkpoint replacements that a kill interrupted (see :func:`recover_dir`)."""
        recover_dir(self.best_dir)
        if recover_dir(self.last_dir):
            logger.warning(
                "%s: the last checkpoint write was interrupted; continuing from the one before it",
                self.run_dir,
            )

    def write_run_config(self, run_config: dict[str, Any]) -> None:
        """Write the run's ``config.json`` (what a resume compares), atomically."""
        if self.writes:
            write_json(self.run_dir / RUN_CONFIG, run_config)

    def restore(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        fresh_state: dict[str, Any],
        resume: bool,
    ) -> dict[str, Any]:
        """The trainer state to continue from: ``last``'s on a resume when there is one (the
        weights, optimizer, scheduler and torch RNG state are restored too), else
        ``fresh_state``.

        Call it once everything that draws from the torch RNG at start-up is built: a draw after
        the restore would make a resumed run differ from an uninterrupted one.

        Raises:
            CheckpointError: the weights are unreadable or do not fit ``model``.
        """
        if not (resume and self.has_last()):
            return fresh_state
        return load_checkpoint(model, self.last_dir, optimizer, scheduler)

    def save_last(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Any],
    ) -> None:
        """Replace ``checkpoints/last`` with the model and everything a resume needs."""
        if self.writes:
            save_checkpoint(model, self.last_dir, optimizer, scheduler, state, self.extra)

    def save_best(self, model: nn.Module, info: dict[str, Any] | None = None) -> None:
        """Replace ``checkpoints/best`` with the model; ``info`` (JSON-ready: step, epoch,
        scores) joins ``extra`` in its ``extra_info``."""
        if self.writes:
            save_model(model, self.best_dir, extra={**self.extra, **(info or {})})

    def finish(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        state: dict[str, Any],
        epochs: int,
        max_steps: int | None,
        stopped_early: bool,
    ) -> None:
        """At the end of ``fit``: a best checkpoint when no epoch ended (e.g. ``max_steps`` came
        first), and ``last`` marked finished unless ``max_steps`` cut the run short of its
        epochs (see :func:`mark_finished`)."""
        if not self.best_dir.exists():
            self.save_best(model, {"step": state["step"]})
        if mark_finished(state, epochs, max_steps, stopped_early):
            self.save_last(model, optimizer, scheduler, state)


def write_metrics_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows so far as CSV, atomically (the header from the union of keys, in order)."""
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with atomic_open(path) as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def new_trainer_state(best_key: str) -> dict[str, Any]:
    """A trainer's state before its first step; ``best_key`` holds the best validation score."""
    return {
        "epoch": 0,
        "batch_in_epoch": 0,
        "step": 0,
        best_key: math.inf,
        "epochs_without_improvement": 0,
        "history": [],
    }


def stopped_mid_epoch(state: dict[str, Any], max_steps: int | None, n_batches: int) -> bool:
    """True when ``max_steps`` ended the run inside an epoch (it resumes there)."""
    return (
        max_steps is not None and state["step"] >= max_steps and state["batch_in_epoch"] < n_batches
    )


def mark_finished(
    state: dict[str, Any], epochs: int, max_steps: int | None, stopped_early: bool
) -> bool:
    """At the end of ``fit``: set ``state["finished"]`` and return True, unless ``max_steps``
    cut the run short of its epochs (then a later call with more steps continues it)."""
    cut = max_steps is not None and state["epoch"] < epochs and not stopped_early
    if not cut:
        state["finished"] = True
    return not cut


def close_epoch(state: dict[str, Any], epoch: int, score: float, best_key: str) -> bool:
    """Book the end of epoch ``epoch`` (0-based) in a trainer's ``state``; True if it improved.

    ``score`` (lower is better) is compared with ``state[best_key]``; the counter of epochs
    without improvement, the epoch number and the batch position are updated for a resume.
    """
    improved = score < state[best_key]
    if improved:
        state[best_key] = score
        state["epochs_without_improvement"] = 0
    else:
        state["epochs_without_improvement"] += 1
    state["epoch"] = epoch + 1
    state["batch_in_epoch"] = 0
    return bool(improved)


def is_finished(run_dir: str | Path) -> bool:
    """True once a run completed its epochs or stopped early (not when it was cut short)."""
    path = last_checkpoint_dir(run_dir) / STATE_JSON
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (OSError, json.JSONDecodeError):
        return False
