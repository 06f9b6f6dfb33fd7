"""Model directories: ``config.json`` + ``model.safetensors``. Loading never unpickles."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from worldvae.atomic import atomic_dir, usual_mode, write_json
from worldvae.devices import resolve_device
from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import AutoencoderConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_Module = TypeVar("_Module", bound=nn.Module)


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
        CheckpointError: missing or corrupt files, weights that do not fit the config (found
            from the weights file's header before the network is built), or non-finite weights.
    """
    path = resolve_model_dir(path)
    config, _ = read_model_config(path)
    model = build_and_load(lambda: Autoencoder(config), path)
    return model.to(resolve_device(device)).eval()


def _unreadable(weights: Path, e: Exception) -> CheckpointError:
    return CheckpointError(
        f"{weights} is not a readable safetensors file ({e}); it is corrupt or not a "
        "worldvae checkpoint, re-train or restore it"
    )


def _weights_file(directory: Path) -> Path:
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"model directory {directory} lacks {WEIGHTS_NAME}")
    return weights


def weight_shapes(weights: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor of a safetensors file, from its header alone
    (nothing is loaded).

    Raises:
        CheckpointError: the file is unreadable.
    """
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            names = f.keys()  # a safe_open handle is not iterable itself
            return {k: tuple(f.get_slice(k).get_shape()) for k in names}
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(Path(weights), e) from e


def expected_shapes(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the state dict of the module ``build()`` makes, built on
    the meta device: nothing is allocated and the torch RNG is not drawn from."""
    with torch.device("meta"):
        module = build()
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def check_weights_fit(
    directory: str | os.PathLike[str], expected: dict[str, tuple[int, ...]]
) -> None:
    """Check from the header of ``directory``'s weights file that its tensors are those of
    ``expected`` (name: shape), before anything is allocated for them.

    Raises:
        CheckpointError: the file is missing or unreadable, or the shapes differ (the first
            differences named, and ``config.json`` as what was changed).
    """
    directory = Path(directory)
    weights = _weights_file(directory)
    found = weight_shapes(weights)
    wrong = [f"{k} is missing" for k in expected if k not in found]
    wrong += [f"{k} is not in the model" for k in found if k not in expected]
    wrong += [
        f"{k} is {found[k]} in the weights, {expected[k]} by the config"
        for k in expected
        if k in found and found[k] != expected[k]
    ]
    if wrong:
        shown = "; ".join(wrong[:3]) + (f"; and {len(wrong) - 3} more" if len(wrong) > 3 else "")
        raise CheckpointError(
            f"{directory / CONFIG_NAME} does not describe the weights in {weights} ({shown}); "
            "the config was edited or belongs to other weights: restore it, or re-train"
        )


def check_finite(state: dict[str, torch.Tensor], weights: str | os.PathLike[str]) -> None:
    """Refuse weights holding NaN or infinity: every output of the model would be NaN.

    Raises:
        CheckpointError: naming the file and the first tensors that hold them.
    """
    bad = [k for k, t in state.items() if t.is_floating_point() and not bool(t.isfinite().all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(
            f"{weights} holds non-finite weights (NaN or infinity, in {shown}); the model is "
            "damaged (its training diverged, or the file was altered): re-train it or restore "
            "an earlier checkpoint"
        )


def build_and_load(build: Callable[[], _Module], directory: str | os.PathLike[str]) -> _Module:
    """``build()`` with ``directory``'s weights, built only once the weights file's header
    shows that they fit what ``build`` makes (checked on the meta device, so a config that
    would need terabytes allocates nothing).

    Raises:
        CheckpointError: as :func:`check_weights_fit` and :func:`load_weights`.
    """
    check_weights_fit(directory, expected_shapes(build))
    model = build()
    load_weights(model, directory)
    return model


def load_weights(model: nn.Module, directory: str | os.PathLike[str]) -> None:
    """Load ``directory``'s ``model.safetensors`` into ``model`` (never unpickles), once its
    header shows that the shapes fit ``model``.

    Raises:
        CheckpointError: the file is missing or unreadable, its weights do not fit ``model``,
            or they hold NaN or infinity.
    """
    directory = Path(directory)
    weights = _weights_file(directory)
    check_weights_fit(directory, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise _unreadable(weights, e) from e
    check_finite(state, weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{weights} does not match {directory / CONFIG_NAME}: {e}") from e
