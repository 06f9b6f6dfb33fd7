"""Pieces every trainer shares: the run directory rules and resumable checkpoints.

A trainer's ``checkpoints/last/`` holds the model (``config.json`` + ``model.safetensors``),
``trainer_state.pt`` (optimizer, scheduler and RNG state; loaded with ``weights_only=True``)
and ``trainer_state.json`` (counters and history).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldvae.atomic import atomic_open, torch_save, write_json
from worldvae.rundir import check_ours, entries, remove_owned
from worldvae.vae.io import load_weights, save_model

logger = logging.getLogger(__name__)

STATE_PT, STATE_JSON = "trainer_state.pt", "trainer_state.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped with its last good checkpoint kept."""


def prepare_run_dir(
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    same_config: Callable[[dict[str, Any]], bool],
    ours: Iterable[str],
    what: str,
) -> None:
    """Check that ``run_dir`` may be written, clearing it for ``overwrite``; write nothing.

    The caller writes ``config.json`` once everything is built, so a run refused on the way
    leaves no file behind.

    A non-empty directory is continued with ``resume`` (only if ``same_config(old_config)``),
    has its own entries ``ours`` removed with ``overwrite``, and is refused otherwise. A folder
    holding anything else is refused either way: nothing a run did not write is deleted.

    Raises:
        ForeignDirError: ``run_dir`` holds entries that are not in ``ours``.
        FileExistsError: the directory exists and neither flag is set.
        ValueError: ``resume`` into a run started with another configuration.
    """
    cfg_path = run_dir / "config.json"
    if entries(run_dir):
        check_ours(run_dir, ours, what)
        if overwrite:
            remove_owned(run_dir, ours)
        elif not resume:
            raise FileExistsError(
                f"run directory {run_dir} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        elif cfg_path.is_file() and not _same(cfg_path, same_config):
            raise ValueError(
                f"cannot resume {run_dir}: it was started with another configuration "
                f"({cfg_path}); use the same options, or --overwrite to start afresh"
            )


def _same(cfg_path: Path, same_config: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        return same_config(json.loads(cfg_path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{cfg_path} is not a valid run config ({e}); restore it, or pass --overwrite to "
            "start the run afresh"
        ) from e


def save_checkpoint(
    model: nn.Module,
    directory: Path,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the model and everything a resume needs into ``directory``, atomically."""

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
    """Restore what :func:`save_checkpoint` wrote; return the trainer state dict.

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
    path = Path(run_dir) / "checkpoints" / "last" / STATE_JSON
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (OSError, json.JSONDecodeError):
        return False
