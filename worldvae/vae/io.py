"""Model directories: ``config.json`` + ``model.safetensors``. Loading never unpickles."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from worldvae.atomic import atomic_dir, usual_mode, write_json
from worldvae.devices import resolve_device
from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import AutoencoderConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A model directory is missing, incomplete, corrupt or not a model at all."""


def save_model(
    model: nn.Module,
    directory: str | os.PathLike[str],
    extra: dict | None = None,
    write_more: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``model`` (any module with a ``config.to_dict()``) to ``directory`` atomically
    (a sibling temp dir, then renamed).

    ``extra`` (JSON-ready) is stored in ``config.json`` under ``"extra_info"``, e.g. training
    metadata. ``write_more(tmp_dir)`` may add files (e.g. optimiser state) before the rename.
    An existing directory is replaced only once the new one is complete.
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        try:
            save_file(state, str(tmp / WEIGHTS_NAME))
            usual_mode(tmp / WEIGHTS_NAME)  # safetensors creates its files private (0600)
        except SafetensorError as e:
            if "No space left" in str(e) or "os error 28" in str(e):
                raise OSError(errno.ENOSPC, "No space left on device", str(directory)) from e
            raise
        config: Any = model.config
        write_json(tmp / CONFIG_NAME, {"model": config.to_dict(), "extra_info": extra or {}})
        if write_more is not None:
            write_more(tmp)
    return directory


def read_model_config(path: str | os.PathLike[str]) -> tuple[AutoencoderConfig, dict]:
    """Read a model directory's config (and its ``extra_info``) without loading weights."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(
            f"{path} is not a model directory (expected a folder with {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}, as written by `worldvae train-vae`)"
        )
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"model directory {path} lacks {CONFIG_NAME}")
    try:
        d = json.loads(cfg_path.read_text())
        return AutoencoderConfig.from_dict(d["model"]), d.get("extra_info", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_path} is not a valid model config ({e})") from e


def resolve_model_dir(path: str | os.PathLike[str]) -> Path:
    """A model directory itself, or a ``train-vae`` run directory's best checkpoint."""
    path = Path(path)
    if (path / "checkpoints" / "best" / CONFIG_NAME).is_file():
        return path / "checkpoints" / "best"
    return path


def model_sha256(model_dir: str | os.PathLike[str]) -> str:
    """Hash of a model directory's config and weights (a run directory: its best checkpoint)."""
    model_dir = resolve_model_dir(model_dir)
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        h.update(name.encode())
        h.update((model_dir / name).read_bytes())
    return h.hexdigest()


def load_model(path: str | os.PathLike[str], device: str | torch.device = "auto") -> Autoencoder:
    """Load a model directory onto ``device`` (``"auto"``: CUDA when present) in eval mode.

    A run directory from ``worldvae train-vae`` is accepted too (its best checkpoint is used).

    Raises:
        CheckpointError: missing or corrupt files, or weights that do not fit the config.
    """
    path = resolve_model_dir(path)
    config, _ = read_model_config(path)
    model = Autoencoder(config)
    load_weights(model, path)
    return model.to(resolve_device(device)).eval()


def load_weights(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Load ``directory``'s ``model.safetensors`` into ``model`` (never unpickles).

    Raises:
        CheckpointError: the file is missing or unreadable, or its weights do not fit ``model``.
    """
    directory = Path(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"model directory {directory} lacks {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({e}); it is corrupt or not a "
            "worldvae checkpoint, re-train or restore it"
        ) from e
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not match {directory / CONFIG_NAME}: {e}") from e
