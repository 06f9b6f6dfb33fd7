"""A shortlist for SB3 agents: the policies of a run's best evaluations, played again on other
tracks, and the best of them kept as the run's best policy.

A choice made on a few evaluation episodes is a draw: of twenty evaluations on 4 tracks, the
best is often the luckiest. With ``shortlist: K`` in the algorithm's hyperparameters, a run
keeps the policy of every evaluation (``evaluated/STEP.zip``); once training ends, the
policies of its K best evaluations each play ``shortlist_episodes`` more episodes, seeded from
the evaluation seed + :data:`~agents.controller.cmaes.CHOICE_SEED_OFFSET` (neither the tracks
they were chosen on nor the canonical ones), all on one VecEnv (:func:`play_policies`), and
the best there becomes ``best_agent.zip``. ``choice.csv`` lists them. CMA-ES controllers have
the same shortlist (:class:`agents.controller.cmaes.CMAESConfig`).
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv

from agents.agent_config import AgentConfig
from agents.bundle import BEST_AGENT_FILE, policy_kwargs, policy_name
from agents.controller.cmaes import CHOICE_CSV, CHOICE_SEED_OFFSET, EVALUATED_DIR, seed_each
from agents.environments import ExplorationNoise, is_recurrent
from envs.sb3_io import load_sb3
from worldvae.atomic import atomic_open, atomic_path

logger = logging.getLogger(__name__)

MAX_ENVS = 64  # envs of the shortlist's VecEnv: its episodes run in waves of at most these


def evaluated_policy_path(bundle: Path, steps: int) -> Path:
    """Where the policy evaluated at ``steps`` is kept (with ``shortlist`` set)."""
    return bundle / EVALUATED_DIR / f"{steps:012d}.zip"


def shortlist_size(cfg: AgentConfig) -> tuple[int, int]:
    """``(K, episodes)`` of ``cfg``'s shortlist; K is 0 without one."""
    kwargs = cfg.algo_kwargs
    return int(kwargs.get("shortlist", 0)), int(kwargs.get("shortlist_episodes", 20))


def shortlisted(
    bundle: Path, rows: Sequence[dict[str, float]], size: int
) -> list[tuple[dict[str, float], Path]]:
    """The ``size`` best evaluation rows whose policy was kept, best first (stable among
    equals), each with its policy's file. The best row of a run that evaluated it before
    policies were kept takes ``best_agent.zip``, which holds it until a shortlist has run."""
    if not rows:
        return []
    best = max(rows, key=lambda r: r["mean_return"])  # the first of equals
    picked = []
    for row in sorted(rows, key=lambda r: -r["mean_return"]):
        path = evaluated_policy_path(bundle, int(row["steps"]))
        if not path.is_file() and row is best:
            path = bundle / BEST_AGENT_FILE
        if path.is_file():
            picked.append((row, path))
        if len(picked) == size:
            break
    return picked


def restore_best_policy(bundle: Path, steps: int) -> None:
    """Make ``best_agent.zip`` the policy evaluated at ``steps`` where it was kept: a run
    finished without a shortlist after one had replaced that file (killed during it, then
    resumed with ``shortlist: 0``) keeps the best evaluation's policy, as it records."""
    kept = evaluated_policy_path(bundle, steps)
    best = bundle / BEST_AGENT_FILE
    if kept.is_file() and (not best.is_file() or best.read_bytes() != kept.read_bytes()):
        with atomic_path(best) as tmp:
            shutil.copyfile(kept, tmp)


def _keep_best_row(bundle: Path, picked: list[tuple[dict[str, float], Path]]) -> None:
    """Copy a row's policy taken from ``best_agent.zip`` to its own ``evaluated/`` file
    before the shortlist replaces that file, so a run killed after it chooses the same."""
    for i, (row, path) in enumerate(picked):
        if path.name == BEST_AGENT_FILE:
            kept = evaluated_policy_path(bundle, int(row["steps"]))
            kept.parent.mkdir(exist_ok=True)
            with atomic_path(kept) as tmp:
                shutil.copyfile(path, tmp)
            picked[i] = (row, kept)


def _take(obs: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of a VecEnv observation (an array, or a dict of arrays)."""
    if isinstance(obs, dict):
        return {k: v[idx] for k, v in obs.items()}
    return obs[idx]


def _wave(
    policies: Sequence[Any],
    venv: VecEnv,
    owner: np.ndarray,
    seeds: list[int],
    live: int,
    deterministic: bool,
) -> np.ndarray:
    """Play one episode in every env of ``venv``, env ``i`` by ``policies[owner[i]]`` from
    seed ``seeds[i]``; return the returns ``(live,)`` of envs ``0 .. live - 1``."""
    n = venv.num_envs
    groups = [(c, np.flatnonzero(owner == c)) for c in np.unique(owner)]
    noises = {c: ExplorationNoise(policies[c], deterministic, len(idx)) for c, idx in groups}
    states: dict[int, Any] = {c: None for c, _ in groups}
    seed_each(venv, seeds)
    obs = venv.reset()
    running = np.arange(n) < live
    returns = np.zeros(n)
    t = 0
    while running.any():
        acted = []
        for c, idx in groups:
            noises[c].before_step(t)
            policy = policies[c]
            if is_recurrent(policy):
                starts = np.full(len(idx), t == 0)
                a, states[c] = policy.predict(
                    _take(obs, idx), state=states[c], episode_start=starts,
                    deterministic=deterministic,
                )  # fmt: skip
            else:
                a, _ = policy.predict(_take(obs, idx), deterministic=deterministic)
            acted.append((idx, np.asarray(a)))
        actions = np.empty((n, *acted[0][1].shape[1:]), acted[0][1].dtype)
        for idx, a in acted:
            actions[idx] = a
        obs, reward, dones, _ = venv.step(actions)
        returns[running] += np.asarray(reward, np.float64)[running]
        running &= ~np.asarray(dones, bool)
        t += 1
    return returns[:live]


def play_policies(
    policies: Sequence[Any],
    venv: VecEnv,
    episodes: int,
    seed: int,
    deterministic: bool = True,
) -> np.ndarray:
    """The returns ``(len(policies), episodes)`` of each policy's episodes ``e`` seeded
    ``seed + e`` (an evaluation's seeds), all played on ``venv``'s envs at once.

    The (policy, episode) jobs run in waves of ``venv.num_envs``: a wave seeds every env, resets
    them together and steps them until each env's episode has ended, each policy predicting
    for its own envs' rows. An env whose episode has ended is still stepped with the others,
    its rewards not counted; the envs of the last wave without a job replay the first job. With
    mode actions the returns equal :func:`agents.environments.evaluate_policy_seeded`'s
    wherever a batched predict gives the same actions as one row at a time; sampled actions
    (gSDE's noise drawn for each env, resampled as in training) are seeded once per wave
    (``seed`` + the wave's first job), so they differ from it.
    """
    jobs = [(c, e) for c in range(len(policies)) for e in range(episodes)]
    n = venv.num_envs
    out = np.zeros((len(policies), episodes))
    for start in range(0, len(jobs), n):
        wave = jobs[start : start + n]
        padded = wave + [jobs[0]] * (n - len(wave))
        if not deterministic:
            torch.manual_seed(seed + start)
        returns = _wave(
            policies,
            venv,
            np.array([c for c, _ in padded]),
            [seed + e for _, e in padded],
            len(wave),
            deterministic,
        )
        for (c, e), r in zip(wave, returns, strict=True):
            out[c, e] = r
    return out


def run_shortlist(
    agent: Any,
    cfg: AgentConfig,
    out: Path,
    rows: Sequence[dict[str, float]],
    make_env: Callable[[int], VecEnv],
) -> dict[str, Any] | None:
    """Choose the run's best policy by ``cfg``'s shortlist; return the record of the choice
    (the ``steps`` of the evaluation chosen, ``shortlist``, ``episodes``, their first
    ``seed``, and the chosen policy's ``mean_return`` / ``std_return`` on them), or None where
    no evaluation kept its policy (``best_agent.zip`` left as it is, with a warning).

    ``agent`` is the trained agent (its class and device load the kept policies), ``rows`` its
    evaluations, ``make_env(n)`` a VecEnv of ``n`` of its evaluation envs. Each policy plays
    its mode action, as the periodic evaluations do. The best by mean return on the
    shortlist's episodes wins (of equals, the better evaluated); its file is
    copied to ``best_agent.zip``. A run killed during it resumes from its last checkpoint and
    chooses again among the same policies (a best row's policy taken from ``best_agent.zip``
    is first copied to its own file, which the next choice reads).
    """
    size, episodes = shortlist_size(cfg)
    picked = shortlisted(out, rows, size)
    if not picked:
        logger.warning(
            "%s: no evaluation kept its policy (%s/): the best evaluation's is kept, without "
            "a shortlist",
            out,
            EVALUATED_DIR,
        )
        return None
    t = time.perf_counter()
    _keep_best_row(out, picked)
    space_env = make_env(1)
    obs_space, act_space = space_env.observation_space, space_env.action_space
    space_env.close()
    name, kwargs, device = policy_name(cfg), policy_kwargs(cfg, out), str(agent.device)
    policies = [
        load_sb3(type(agent), path, obs_space, act_space, name, kwargs, device=device)
        for _, path in picked
    ]
    jobs = len(picked) * episodes
    venv = make_env(-(-jobs // -(-jobs // MAX_ENVS)))  # the fewest waves, jobs spread evenly
    seed = cfg.eval_seed + CHOICE_SEED_OFFSET
    try:
        returns = play_policies(policies, venv, episodes, seed)  # the mode, as evaluations
    finally:
        venv.close()
    scored = [
        dict(row) | {"choice_mean_return": float(r.mean()), "choice_std_return": float(r.std())}
        for (row, _), r in zip(picked, returns, strict=True)
    ]
    at = max(range(len(scored)), key=lambda i: scored[i]["choice_mean_return"])
    with atomic_path(out / BEST_AGENT_FILE) as tmp:
        shutil.copyfile(picked[at][1], tmp)
    fields = ["steps", "mean_return", "std_return", "choice_mean_return", "choice_std_return"]
    with atomic_open(out / CHOICE_CSV) as f:
        w = csv.DictWriter(f, fieldnames=[*fields, "chosen"], extrasaction="ignore")
        w.writeheader()
        w.writerows(r | {"chosen": i == at} for i, r in enumerate(scored))
    logger.info(
        "%s: shortlist of %d x %d episodes from %d played in %.0f s; kept step %d (%.1f there)",
        out,
        len(picked),
        episodes,
        seed,
        time.perf_counter() - t,
        int(scored[at]["steps"]),
        scored[at]["choice_mean_return"],
    )
    return {
        "steps": int(scored[at]["steps"]),
        "shortlist": size,
        "episodes": episodes,
        "seed": seed,
        "mean_return": scored[at]["choice_mean_return"],
        "std_return": scored[at]["choice_std_return"],
    }
