"""Which library steps an env: gymnasium (the reference) or envpool (C++, batched, faster).

``resolve_backend`` turns ``"auto"`` into ``"envpool"`` where envpool is installed, has the
env (with the options asked for) and measured faster one env at a time (CarRacing-v3: 8x),
``"gymnasium"`` otherwise (Atari: gymnasium's ALE steps one env 2.9x faster than envpool's,
which max-pools every frame pair; see docs/benchmarks.md). envpool's frames look like
gymnasium's but are not bit-identical (CarRacing's tracks differ per seed, Atari frames are
max-pooled over the last two emulator frames), so datasets and models record which backend
made their frames and :func:`warn_on_backend_mismatch` says so when they are mixed.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# Where "auto" picks envpool: the envs it steps faster than gymnasium with one env (a collector
# worker's case), measured by scripts/bench_envs.py.
AUTO_ENVPOOL = frozenset({"CarRacing-v3"})
ENVPOOL_HINT = "pip install 'worldvae[fast]' (envpool needs Python >= 3.11)"

# gymnasium's ALE v5 settings, spelled in envpool's terms: raw RGB frames, sticky actions,
# frame skip 4, no life-loss episodes or reward clipping, 108k emulator frames at most.
_ATARI_V5 = {
    "img_height": 210,
    "img_width": 160,
    "gray_scale": False,
    "stack_num": 1,
    "episodic_life": False,
    "reward_clip": False,
    "use_fire_reset": False,
    "repeat_action_probability": 0.25,
    "noop_max": 1,
    "max_episode_steps": 27_000,
}


class BackendMismatchWarning(UserWarning):
    """A model trained on one backend's frames is used with the other backend's env."""


@dataclass(frozen=True)
class EnvpoolTask:
    """How to make a gymnasium id with envpool.

    Attributes:
        task_id: envpool's id.
        kwargs: ``envpool.make_gymnasium`` options that reproduce the gymnasium env.
        channels_first: envpool gives ``(C, H, W)`` frames (Atari); they are transposed.
    """

    task_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    channels_first: bool = False


def envpool_installed() -> bool:
    return importlib.util.find_spec("envpool") is not None


@lru_cache(maxsize=1)
def _envpool_ids() -> frozenset[str]:
    import envpool

    return frozenset(envpool.list_all_envs())


def envpool_task(env_id: str) -> EnvpoolTask | None:
    """The envpool equivalent of ``env_id``, or None when envpool lacks it (or is absent).

    CarRacing-v3 and Atari ``ALE/*-v5`` are supported. MiniGrid is not: envpool gives the 7x7
    symbolic view, not the full-grid RGB frames the gymnasium path renders.
    """
    if not envpool_installed():
        return None
    if env_id == "CarRacing-v3":
        task = EnvpoolTask("CarRacing-v3")
    elif env_id.startswith("ALE/") and env_id.endswith("-v5"):
        task = EnvpoolTask(env_id.removeprefix("ALE/"), dict(_ATARI_V5), channels_first=True)
    else:
        return None
    return task if task.task_id in _envpool_ids() else None


@dataclass(frozen=True)
class EnvBackend:
    """A library that steps envs, with its hooks.

    The hooks are named ``"module:function"`` (as entry points are) and their modules are
    imported on first use, so that each hook loads only what it needs: the single env a
    collector's worker makes needs no stable-baselines3 (nor torch through it).

    Attributes:
        name: what ``--backend`` and the env spec call it.
        make_env: ``(spec) -> gym.Env``: one env, frames preprocessed.
        make_vec_env: ``(spec, n_envs, seed, subprocess) -> VecEnv``.
        unable: ``(env_id, env_kwargs) -> str | None``: why it cannot make the env (None: it can).
        preferred: ``(env_id) -> bool``: ``"auto"`` picks it for this env (when able).
    """

    name: str
    make_env: str
    make_vec_env: str
    unable: Callable[[str, Mapping[str, Any] | None], str | None]
    preferred: Callable[[str], bool]

    def hook(self, name: str) -> Callable[..., Any]:
        """The hook ``name`` (``"make_env"`` or ``"make_vec_env"``), imported on first use."""
        module, function = getattr(self, name).split(":")
        return getattr(importlib.import_module(module), function)


def _envpool_unable(env_id: str, env_kwargs: Mapping[str, Any] | None) -> str | None:
    if not envpool_installed():
        return f"backend 'envpool' needs the envpool package: {ENVPOOL_HINT}"
    if envpool_task(env_id) is None:
        return (
            f"envpool has no equivalent of {env_id!r} (supported: CarRacing-v3, ALE/*-v5); "
            "use --backend gymnasium"
        )
    if env_kwargs:
        return (
            f"envpool's {env_id} takes none of the gymnasium options {sorted(env_kwargs)}; "
            "use --backend gymnasium for them"
        )
    return None


# The backends, in the order "auto" considers them; gymnasium, the reference, serves every env.
# A new backend is one entry here and its module.
ENV_BACKENDS: dict[str, EnvBackend] = {
    "envpool": EnvBackend(
        "envpool",
        "envs.envpool_single:make_envpool_env",
        "envs.envpool_env:make_envpool_vec_env",
        _envpool_unable,
        lambda env_id: env_id in AUTO_ENVPOOL,
    ),
    "gymnasium": EnvBackend(
        "gymnasium",
        "envs.gymnasium_env:make_gymnasium_env",
        "envs.gymnasium_env:make_gymnasium_vec_env",
        lambda env_id, env_kwargs: None,
        lambda env_id: True,
    ),
}
BACKENDS = ("auto", *ENV_BACKENDS)


def resolve_backend(
    env_id: str, backend: str = "auto", env_kwargs: Mapping[str, Any] | None = None
) -> str:
    """The backend that will run ``env_id``: a name in :data:`ENV_BACKENDS`, never ``"auto"``.

    Args:
        env_id: a gymnasium id.
        backend: ``"auto"`` (the first backend that prefers the env and can make it: envpool
            for :data:`AUTO_ENVPOOL` where installed, gymnasium otherwise), or a name.
        env_kwargs: gymnasium ``make`` options; envpool has none of them (e.g. no
            ``domain_randomize``), so ``"auto"`` picks gymnasium when any are given.

    Raises:
        ValueError: an unknown backend, or a backend asked for where it cannot serve.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        for entry in ENV_BACKENDS.values():
            if entry.preferred(env_id) and entry.unable(env_id, env_kwargs) is None:
                return entry.name
        return "gymnasium"
    reason = ENV_BACKENDS[backend].unable(env_id, env_kwargs)
    if reason is not None:
        raise ValueError(reason)
    return backend


def make_envpool(
    task: EnvpoolTask,
    seeds: list[int],
    max_episode_steps: int | None,
    batch_size: int | None = None,
    num_threads: int = 0,
) -> Any:
    """An envpool gymnasium pool of ``len(seeds)`` envs, env ``i`` seeded with ``seeds[i]``.

    Seeds are taken modulo ``2**31`` (envpool's int32 range). ``batch_size`` below the number
    of envs makes an async pool (``recv`` returns the first ``batch_size`` envs to finish);
    ``num_threads`` is envpool's worker threads (0: its default, one per core).
    """
    import envpool

    kwargs = dict(task.kwargs)
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = int(max_episode_steps)
    if num_threads:
        kwargs["num_threads"] = int(num_threads)
    n = len(seeds)
    # envpool takes int32 seeds; SB3 and the collector use the uint32 range.
    seeds = [int(s) % 2**31 for s in seeds]
    with warnings.catch_warnings():  # envpool's float64 action bounds, cast by gymnasium
        warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
        return envpool.make_gymnasium(
            task.task_id, num_envs=n, batch_size=batch_size or n, seed=seeds, **kwargs
        )


def envpool_spaces(pool: Any) -> tuple[Any, Any]:
    """A pool's (observation, action) spaces, without gymnasium's float64-bounds warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
        return pool.observation_space, pool.action_space


def warn_on_backend_mismatch(trained: str, env_backend: str, what: str) -> bool:
    """Warn (and return True) when a model's frames came from another backend than the env's
    (``trained``: the backend of the model's recorded env spec)."""
    if trained == env_backend:
        return False
    warnings.warn(
        f"{what} was trained on frames from the {trained} backend but the env runs on "
        f"{env_backend}; the frames differ a little (tracks, colours), so latents may shift. "
        f"Pass --backend {trained} to match, or retrain the VAE on {env_backend} frames",
        BackendMismatchWarning,
        stacklevel=2,
    )
    return True
