"""Checks made before any agent trains: the env builds, the model loads and fits the env.

A comparison that would fail after hours of pixel training on a missing model, a model of
another frame size, or a model trained on another env fails here, in seconds, instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from envs import make_env
from worldvae.envspec import EnvSpec
from worldvae.vae import load_model


def model_env_id(model_dir: str | Path) -> str | None:
    """The env id a model was trained on, from its training run's ``config.json`` (or None)."""
    path = Path(model_dir)
    candidates = [path / "config.json", path.parent.parent / "config.json"]
    if (path / "checkpoints" / "best").is_dir():
        candidates.insert(0, path / "config.json")
    for c in candidates:
        try:
            d = json.loads(c.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        env_id = d.get("data", {}).get("env_id") if isinstance(d, dict) else None
        if env_id:
            return str(env_id)
        spec = d.get("env_spec") if isinstance(d, dict) else None
        if isinstance(spec, dict) and spec.get("env_id"):
            return str(spec["env_id"])
    return None


def check_env_and_model(
    env: EnvSpec,
    model_dir: str | Path | None,
    allow_env_mismatch: bool = False,
) -> tuple[int, ...]:
    """Build the env once and check the model against it; return the env's frame shape.

    Raises:
        ValueError: the env cannot be built, the model's frames differ from the env's, or the
            model was trained on another env (unless ``allow_env_mismatch``).
        CheckpointError: the model directory is missing or broken.
    """
    env_id = env.env_id
    made = make_env(env)
    try:
        shape = tuple(int(x) for x in made.observation_space.shape or ())
    finally:
        made.close()
    if model_dir is None:
        return shape
    model = load_model(model_dir, device="cpu")
    if tuple(model.config.frame_shape) != shape:
        raise ValueError(
            f"the model {model_dir} encodes frames {tuple(model.config.frame_shape)}, but "
            f"{env_id} with these options gives {shape}; collect and train the model with the "
            "same --frame-size/--crop/--grayscale, or pick the matching model"
        )
    trained_on = model_env_id(model_dir)
    if trained_on is not None and trained_on != env_id and not allow_env_mismatch:
        raise ValueError(
            f"the model {model_dir} was trained on {trained_on}, not {env_id}; pass "
            "--allow-env-mismatch to use it anyway, or train a model on this env"
        )
    return shape
