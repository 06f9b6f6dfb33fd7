"""Memory model directories: ``config.json`` + ``model.safetensors``. Loading never unpickles."""

from __future__ import annotations

import json
import os
from typing import Any

from worldvae.devices import resolve_device
from worldvae.memory.config import MemoryConfig
from worldvae.memory.model import MDNRNN
from worldvae.vae.io import CONFIG_NAME, CheckpointError, build_and_load, resolve_model_dir


def read_memory_config(path: str | os.PathLike[str]) -> tuple[MemoryConfig, dict[str, Any]]:
    """A memory model directory's config and ``extra_info`` (the VAE it pairs with, the env)."""
    path = resolve_model_dir(path)
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(
            f"{path} is not a memory model directory (no {CONFIG_NAME}); train one with "
            "`worldvae train-rnn`"
        )
    try:
        d = json.loads(cfg_path.read_text())
        return MemoryConfig.from_dict(d["model"]), d.get("extra_info", {})
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"{cfg_path} is not a memory model config ({e}); pass the directory written by "
            "`worldvae train-rnn`"
        ) from e


def load_memory(
    path: str | os.PathLike[str], device: str = "auto"
) -> tuple[MDNRNN, dict[str, Any]]:
    """Load M (a model directory, or a ``train-rnn`` run directory's best checkpoint) in eval
    mode, with its ``extra_info``.

    Raises:
        CheckpointError: missing, corrupt, or not a memory model; weights that do not fit the
            config (found from the weights file's header before M is built), or non-finite.
    """
    path = resolve_model_dir(path)
    config, info = read_memory_config(path)
    model = build_and_load(lambda: MDNRNN(config), path)
    return model.to(resolve_device(device)).eval(), info
