"""Checks made before any agent trains: the env builds, the model loads and fits the env, the
algorithm fits the env and the arm, and its hyperparameters are ones it can train with.

A comparison that would fail after hours of pixel training on a missing model, a model of
another frame size, or a model trained on another env fails here, in seconds, instead; and a
``train-agent`` refused here has written nothing, so the corrected command runs.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym

from agents.agent_config import AgentConfig, validate_hyperparams
from agents.algo_kwargs import SCHEDULED_KEYS, parse_schedule
from agents.algorithms import ALGORITHMS, get_algorithm
from agents.arms import get_arm
from envs import make_env
from worldvae.encoders import load_encoder
from worldvae.envspec import EnvSpec

# SB3's NatureCNN (the pixel arm's features extractor): convolutions of kernel 8 stride 4,
# kernel 4 stride 2 and kernel 3 stride 1 leave nothing of a side under 36 pixels
# (36 -> 8 -> 3 -> 1); torch then fails with "Kernel size can't be greater than actual input".
NATURE_CNN_MIN_SIDE = 36

# Ranges of the SB3 constructor arguments a typo or a sign slip most often breaks:
# name -> (low, high, low excluded); None: unbounded.
ALGO_RANGES: dict[str, tuple[float, float | None, bool]] = {
    "learning_rate": (0.0, None, True),
    "clip_range": (0.0, None, True),
    "gamma": (0.0, 1.0, False),
    "gae_lambda": (0.0, 1.0, False),
    "vf_coef": (0.0, None, False),
    "max_grad_norm": (0.0, None, True),
    "n_epochs": (1.0, None, False),
    "tau": (0.0, 1.0, True),
    "learning_starts": (0.0, None, False),
    "target_update_interval": (1.0, None, False),
    "exploration_fraction": (0.0, 1.0, False),
    "exploration_initial_eps": (0.0, 1.0, False),
    "exploration_final_eps": (0.0, 1.0, False),
    "ent_coef": (0.0, None, False),  # SAC's "auto" passes: only numbers are checked
}
# Where an agent's hyperparameters come from, for messages.
HYPERPARAMETERS = "the hyperparameters (agents/hyperparams, then --hyperparams)"
# policy_kwargs entries that count units or layers.
POLICY_SIZES = ("features_dim", "lstm_hidden_size", "n_lstm_layers")


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


def env_spaces(env: EnvSpec) -> tuple[tuple[int, ...], gym.Space]:
    """Build the env once: its frame shape and its action space.

    Raises:
        ValueError, gymnasium errors: the env cannot be built (unknown id, bad options).
    """
    made = make_env(env)
    try:
        return tuple(int(x) for x in made.observation_space.shape or ()), made.action_space
    finally:
        made.close()


def check_trained_on(model_dir: str | Path, env_id: str, allow_env_mismatch: bool) -> None:
    """Refuse a model trained on another env than ``env_id`` unless ``allow_env_mismatch``.

    Raises:
        ValueError: naming both envs and the flag that accepts the model anyway.
    """
    trained_on = model_env_id(model_dir)
    if trained_on is not None and trained_on != env_id and not allow_env_mismatch:
        raise ValueError(
            f"the model {model_dir} was trained on {trained_on}, not {env_id}; pass "
            "--allow-env-mismatch to use it anyway, or train a model on this env"
        )


def check_model_fits(model_dir: str | Path, shape: tuple[int, ...], env_id: str) -> None:
    """Load the model (a VAE, or a control arm's encoder) and check it encodes ``shape``.

    Raises:
        CheckpointError: the model directory is missing or broken, or its weights are not
            finite.
        ValueError: the model's frames differ from the env's.
    """
    model = load_encoder(model_dir, device="cpu")
    if tuple(model.config.frame_shape) != shape:
        raise ValueError(
            f"the model {model_dir} encodes frames {tuple(model.config.frame_shape)}, but "
            f"{env_id} with these options gives {shape}; collect and train the model with the "
            "same --frame-size/--crop/--grayscale, or pick the matching model"
        )


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
    shape, _ = env_spaces(env)
    if model_dir is not None:
        check_model_fits(model_dir, shape, env.env_id)
        check_trained_on(model_dir, env.env_id, allow_env_mismatch)
    return shape


def check_algorithm(algo: str, obs: str, action_space: gym.Space, env_id: str) -> None:
    """Refuse an algorithm that cannot train the arm ``obs`` or act in ``action_space``.

    Raises:
        ValueError: naming the algorithm, what it needs, and the algorithms that fit.
    """
    algorithm = get_algorithm(algo)
    if algorithm.obs_kinds and obs not in algorithm.obs_kinds:
        needs = ", ".join(algorithm.obs_kinds)
        memory = any(get_arm(o).needs_memory for o in algorithm.obs_kinds)
        raise ValueError(
            f"--algo {algo} (the {algorithm.title}) trains on --obs {needs} only, got --obs "
            f"{obs}; use --obs {needs}{' (with --model and --memory)' if memory else ''}, or "
            "another --algo"
        )
    if not isinstance(action_space, algorithm.action_spaces):
        fits = [
            name
            for name, a in ALGORITHMS.items()
            if isinstance(action_space, a.action_spaces) and (not a.obs_kinds or obs in a.obs_kinds)
        ]
        kinds = ", ".join(s.__name__ for s in algorithm.action_spaces)
        raise ValueError(
            f"--algo {algo} acts in {kinds} action spaces only, but {env_id} has "
            f"{action_space} actions; "
            + (f"choose --algo from {', '.join(fits)}" if fits else "choose another env")
        )


def uses_nature_cnn(obs: str) -> bool:
    """True for an arm whose policy reads frames through SB3's NatureCNN (the pixel arm; the
    encoder arm's extractor is the VAE's own encoder)."""
    arm = get_arm(obs)
    return arm.policy == "CnnPolicy" and arm.model is None


def check_cnn_frames(obs: str, shape: tuple[int, ...], fix: str) -> None:
    """Refuse frames too small for the arm's CNN; ``fix`` says how to get larger ones.

    Raises:
        ValueError: naming the frame size, the 36-pixel minimum and ``fix``.
    """
    if not uses_nature_cnn(obs) or len(shape) != 3:
        return
    height, width = shape[0], shape[1]
    if min(height, width) < NATURE_CNN_MIN_SIDE:
        raise ValueError(
            f"the {obs} arm's CNN (SB3's NatureCNN) needs frames of at least "
            f"{NATURE_CNN_MIN_SIDE}x{NATURE_CNN_MIN_SIDE} pixels, got {height}x{width}; {fix}"
        )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(key: str, value: Any, where: str) -> None:
    """``value`` (a number or a schedule's ends) is finite and within ``ALGO_RANGES[key]``."""
    ends = parse_schedule(value, f"{where}.{key}") if key in SCHEDULED_KEYS else None
    for v in ends or ([value] if _number(value) else []):
        if not math.isfinite(v):
            raise ValueError(f"{where}.{key} must be a finite number, got {value!r}")
        if key not in ALGO_RANGES:
            continue
        low, high, low_open = ALGO_RANGES[key]
        if key in ("learning_rate", "clip_range") and ends is not None and v != ends[0]:
            low_open = False  # a schedule may decay to 0; it must start above it
        if (v <= low if low_open else v < low) or (high is not None and v > high):
            bounds = f"{'>' if low_open else '>='} {low:g}" + (
                f" and <= {high:g}" if high is not None else ""
            )
            raise ValueError(f"{where}.{key} must be {bounds}, got {value!r}")


def _check_sizes(name: str, value: Any, where: str) -> None:
    """A layer list (``[64, 64]``, or ``{pi: [...], vf: [...]}``) or a size: positive ints."""
    items = value.values() if isinstance(value, Mapping) else [value]
    for item in items:
        sizes = item if isinstance(item, list) else [item]
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
            raise ValueError(
                f"{where}.policy_kwargs.{name} must hold layer sizes >= 1 (e.g. [64, 64] or "
                f"{{pi: [64], vf: [64]}}), got {value!r}"
            )


def _check_batches(algo: str, kwargs: Mapping[str, Any], n_envs: int, where: str) -> None:
    """PPO's advantage normalisation needs a minibatch and a rollout of two steps or more."""
    params = inspect.signature(get_algorithm(algo).sb3_class().__init__).parameters
    if "normalize_advantage" not in params:
        return
    if not kwargs.get("normalize_advantage", params["normalize_advantage"].default):
        return
    batch = kwargs.get("batch_size", params["batch_size"].default) if "batch_size" in params else 2
    n_steps = kwargs.get("n_steps", params["n_steps"].default)
    if isinstance(batch, int) and batch < 2:
        raise ValueError(
            f"{where}: {algo}.batch_size must be >= 2 (its advantages are normalised over "
            f"each minibatch), got {batch}"
        )
    if isinstance(n_steps, int) and n_steps * n_envs < 2:
        raise ValueError(
            f"{where}: {algo} collects n_steps x n_envs = {n_steps} x {n_envs} steps per "
            "rollout; it needs 2 or more (raise n_steps or --n-envs)"
        )


def check_algo_kwargs(
    algo: str, algo_kwargs: Mapping[str, Any], n_envs: int, where: str = HYPERPARAMETERS
) -> None:
    """Refuse hyperparameters the algorithm cannot train with: unknown keys, wrong types,
    non-finite or out-of-range numbers, layer sizes under 1, rollouts too short.

    Raises:
        ValueError: one line naming ``where.key``, the value and what it must be.
    """
    algorithm = get_algorithm(algo)
    kwargs = dict(algo_kwargs)
    validate_hyperparams({algo: kwargs}, where)
    if not algorithm.is_sb3:
        from agents.controller.cmaes import CMAESConfig

        CMAESConfig.from_dict(kwargs)
        return
    for key, value in kwargs.items():
        if key != "policy_kwargs":
            _check_range(key, value, f"{where}: {algo}")
    policy = kwargs.get("policy_kwargs") or {}
    if "net_arch" in policy:
        _check_sizes("net_arch", policy["net_arch"], f"{where}: {algo}")
    for name in POLICY_SIZES:
        if name in policy:
            _check_sizes(name, policy[name], f"{where}: {algo}")
    if "log_std_init" in policy:
        _check_range("log_std_init", policy["log_std_init"], f"{where}: {algo}.policy_kwargs")
    _check_batches(algo, kwargs, n_envs, where)


def check_agent_run(cfg: AgentConfig, frames_fix: str = "pass --frame-size 36 or more") -> None:
    """Everything an agent run can check before it writes anything: the env builds, the
    algorithm fits the arm and the env's actions, its hyperparameters, the pixel arm's frame
    size (``frames_fix`` says how to get larger frames), and the model loads (finite weights)
    and encodes the env's frames.

    Raises:
        ValueError, CheckpointError: one line naming the problem and the fix.
    """
    shape, action_space = env_spaces(cfg.env)
    check_algorithm(cfg.algo, cfg.obs, action_space, cfg.env_id)
    check_algo_kwargs(cfg.algo, cfg.algo_kwargs, cfg.n_envs)
    check_cnn_frames(cfg.obs, shape, frames_fix)
    if cfg.model_dir:
        check_model_fits(cfg.model_dir, shape, cfg.env_id)


def check_arms_fit(
    pixel: AgentConfig,
    obs_kinds: tuple[str, ...],
    shifted_env_kwargs: Mapping[str, Any] | None,
    frames_fix: str,
    where: str = HYPERPARAMETERS,
) -> None:
    """A comparison's checks that need no model: ``pixel`` (its pixel arm's config: the env,
    algorithm and hyperparameters every arm shares) against each arm of ``obs_kinds``, the
    pixel arm's frame size (``frames_fix``: how to get larger frames), and the shifted env of
    the zero-shot evaluation.

    Raises:
        ValueError: one line naming the problem and the fix.
    """
    shape, action_space = env_spaces(pixel.env)
    check_algo_kwargs(pixel.algo, pixel.algo_kwargs, pixel.n_envs, where)
    for obs in obs_kinds:
        check_algorithm(pixel.algo, obs, action_space, pixel.env_id)
        check_cnn_frames(obs, shape, frames_fix)
    if shifted_env_kwargs:
        shifted = pixel.env.replace(
            env_kwargs={**pixel.env.env_kwargs, **shifted_env_kwargs}, backend="gymnasium"
        )
        try:
            env_spaces(shifted)
        except Exception as e:  # whatever the env raises on options it does not take
            raise ValueError(
                f"the shifted evaluation's env ({pixel.env_id} with "
                f"{dict(shifted_env_kwargs)}) cannot be made: {e}; leave out the shifted "
                "evaluation (--shifted, compare.shifted_env_kwargs) for this env"
            ) from e
