"""Resumable SB3 training: checkpoints of everything a run needs to continue, never pickled.

A checkpoint is a folder ``AGENT_DIR/checkpoints/last/`` written whole (a temporary folder,
then renamed; see :func:`worldvae.atomic.atomic_dir`)::

    params.pt          state dicts of the policy and its optimisers, the torch variables SB3
                       keeps beside them (SAC's entropy coefficient) and the torch RNG state;
                       loaded with ``weights_only=True``
    state.json         step counters, the numpy / Python / action-space RNG states, the
                       running return statistics of a reward-normalising env and the
                       callbacks' state
    replay_buffer.npz  off-policy algorithms: the filled part of the replay buffer
                       (read with ``allow_pickle=False``)

What SB3 does not allow: the live state of the envs (positions mid-episode, their RNGs) cannot
be saved. Training therefore starts fresh episodes at every checkpoint boundary, whether or not
the run is interrupted there, from seeds derived from the run's seed and the boundary. With that,
a run killed and resumed gives the same weights on the CPU as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldvae.atomic import atomic_dir, recover_dir, torch_save

CHECKPOINT_DIR = "checkpoints"
PARAMS, STATE, BUFFER = "params.pt", "state.json", "replay_buffer.npz"
_COUNTERS = ("num_timesteps", "_n_updates", "_n_calls", "_episode_num")
_FLOATS = ("exploration_rate", "_current_progress_remaining")  # DQN acts with the last value
_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def boundary_seed(seed: int, boundary: int) -> int:
    """Seed of the fresh episodes that start at checkpoint boundary ``boundary`` (0: ``seed``)."""
    if boundary == 0:
        return seed
    return int(np.random.SeedSequence([seed, boundary]).generate_state(1, dtype=np.uint32)[0])


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": [int(k) for k in keys],
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }


def _set_numpy_rng_state(s: dict[str, Any]) -> None:
    np.random.set_state(
        (
            s["name"],
            np.array(s["keys"], dtype=np.uint32),
            s["pos"],
            s["has_gauss"],
            s["cached_gaussian"],
        )
    )


def save_checkpoint(agent: Any, bundle: Path, callback_state: dict[str, Any]) -> Path:
    """Write ``agent``'s full training state to ``bundle/checkpoints/last`` atomically."""
    state_dicts, variables = agent._get_torch_save_params()
    params = {
        "state_dicts": {name: _get(agent, name).state_dict() for name in state_dicts},
        "variables": {name: _get(agent, name).detach().cpu() for name in variables},
        "rng_torch": torch.get_rng_state(),
    }
    version, py_state, gauss = random.getstate()
    state = {
        "counters": {k: int(getattr(agent, k)) for k in _COUNTERS if hasattr(agent, k)},
        "floats": {k: float(getattr(agent, k)) for k in _FLOATS if hasattr(agent, k)},
        "rng_numpy": _numpy_rng_state(),
        "rng_python": [version, list(py_state), gauss],
        "rng_action_space": agent.action_space.np_random.bit_generator.state,
        "callback": callback_state,
    }
    norm = _reward_normalizer(agent)
    if norm is not None:
        rms = norm.ret_rms
        state["reward_norm"] = {
            "mean": float(rms.mean),
            "var": float(rms.var),
            "count": float(rms.count),
        }
    target = bundle / CHECKPOINT_DIR / "last"
    with atomic_dir(target) as tmp:
        torch_save(params, tmp / PARAMS)
        buffer = getattr(agent, "replay_buffer", None)
        if buffer is not None:
            n = buffer.buffer_size if buffer.full else buffer.pos
            arrays = {
                k: getattr(buffer, k)[:n]
                for k in _BUFFER_ARRAYS
                if getattr(buffer, k, None) is not None
            }
            arrays["meta"] = np.array([buffer.pos, int(buffer.full)], dtype=np.int64)
            with open(tmp / BUFFER, "wb") as f:
                np.savez(f, **arrays)
        (tmp / STATE).write_text(json.dumps(state))
    return target


def checkpoint_step(bundle: Path) -> int | None:
    """Env steps of the last checkpoint in ``bundle``, recovering an interrupted write first."""
    target = bundle / CHECKPOINT_DIR / "last"
    if recover_dir(target):
        import logging

        logging.getLogger(__name__).warning(
            "%s: the last checkpoint write was interrupted; continuing from the one before it",
            bundle,
        )
    try:
        return int(json.loads((target / STATE).read_text())["counters"]["num_timesteps"])
    except (OSError, json.JSONDecodeError, KeyError, ValueError):
        return None


def load_checkpoint(agent: Any, bundle: Path) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into a freshly built ``agent``.

    Returns:
        The callbacks' state stored with it.
    """
    target = bundle / CHECKPOINT_DIR / "last"
    try:
        params = torch.load(target / PARAMS, map_location="cpu", weights_only=True)
        state = json.loads((target / STATE).read_text())
    except (OSError, RuntimeError, json.JSONDecodeError) as e:
        raise ValueError(
            f"the checkpoint in {target} is unreadable ({e}); delete {target} to restart the run "
            "from step 0, or --overwrite"
        ) from e
    agent.set_parameters(params["state_dicts"], exact_match=True, device=agent.device)
    with torch.no_grad():
        for name, value in params["variables"].items():
            _get(agent, name).copy_(value.to(agent.device))
    for k, v in (state["counters"] | state["floats"]).items():
        setattr(agent, k, v)
    buffer = getattr(agent, "replay_buffer", None)
    if buffer is not None:
        with np.load(target / BUFFER, allow_pickle=False) as data:
            for k in _BUFFER_ARRAYS:
                if k in data.files:
                    arr = data[k]
                    getattr(buffer, k)[: len(arr)] = arr
            buffer.pos, full = (int(x) for x in data["meta"])
            buffer.full = bool(full)
    torch.set_rng_state(params["rng_torch"])
    _set_numpy_rng_state(state["rng_numpy"])
    version, py_state, gauss = state["rng_python"]
    random.setstate((version, tuple(py_state), gauss))
    agent.action_space.np_random.bit_generator.state = state["rng_action_space"]
    norm = _reward_normalizer(agent)
    if norm is not None and "reward_norm" in state:
        rms = norm.ret_rms
        rms.mean = np.array(state["reward_norm"]["mean"], np.float64)
        rms.var = np.array(state["reward_norm"]["var"], np.float64)
        rms.count = state["reward_norm"]["count"]
    return dict(state["callback"])


def _reward_normalizer(agent: Any) -> Any:
    """The agent's ``VecNormalize`` env (rewards scaled while training), or None."""
    from stable_baselines3.common.vec_env import VecNormalize

    env = agent.get_env()
    return env if isinstance(env, VecNormalize) else None
