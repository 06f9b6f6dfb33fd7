"""Pieces every trainer shares: the run directory rules and resumable checkpoints.

A trainer's ``checkpoints/last/`` holds the model (``config.json`` + ``model.safetensors``),
``trainer_state.pt`` (optimizer, scheduler and RNG state; loaded with ``weights_only=True``)
and ``trainer_state.json`` (counters and history).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from worldvae.atomic import atomic_open, write_json
from worldvae.models.io import WEIGHTS_NAME, save_model

STATE_PT, STATE_JSON = "trainer_state.pt", "trainer_state.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped with its last good checkpoint kept."""


def prepare_run_dir(
    run_dir: Path,
    run_config: dict[str, Any],
    resume: bool,
    overwrite: bool,
    same_config: Callable[[dict[str, Any]], bool],
) -> None:
    """Create or reuse ``run_dir`` and write ``config.json``.

    A non-empty directory is replaced with ``overwrite``, continued with ``resume`` (only if
    ``same_config(old_config)``), and refused otherwise.

    Raises:
        FileExistsError: the directory exists and neither flag is set.
        ValueError: ``resume`` into a run started with another configuration.
    """
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and any(run_dir.iterdir()):
        if overwrite:
            shutil.rmtree(run_dir)
        elif not resume:
            raise FileExistsError(
                f"run directory {run_dir} already exists; pass --resume to continue it, "
                "--overwrite to replace it, or choose another --out"
            )
        elif cfg_path.is_file() and not same_config(json.loads(cfg_path.read_text())):
            raise ValueError(
                f"cannot resume {run_dir}: it was started with another configuration "
                f"({cfg_path}); use the same options, or --overwrite to start afresh"
            )
    write_json(cfg_path, run_config)


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
        torch.save(
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
    """Restore what :func:`save_checkpoint` wrote; return the trainer state dict."""
    model.load_state_dict(load_file(str(directory / WEIGHTS_NAME), device="cpu"))
    blob = torch.load(directory / STATE_PT, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng_cpu"])
    if blob["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["rng_cuda"])
    state: dict[str, Any] = json.loads((directory / STATE_JSON).read_text())
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


def is_finished(run_dir: str | Path) -> bool:
    """True once a run completed its epochs or stopped early (not when it was cut short)."""
    path = Path(run_dir) / "checkpoints" / "last" / STATE_JSON
    try:
        return bool(json.loads(path.read_text()).get("finished"))
    except (OSError, json.JSONDecodeError):
        return False
