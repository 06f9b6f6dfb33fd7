"""CMA-ES generations scored in M's dream: per-env worker processes against one batched VecEnv.

In alternating blocks of one generation each (``--popsize`` candidates drawn around zero with
``--sigma``, ``--rollouts`` dreams each, every dream to its end), it times:

* ``per-env W``: :class:`agents.controller.cmaes.CandidateScorer` with ``W`` worker processes
  (``--workers``), each stepping one :class:`envs.dream_env.DreamVecEnv` of one env: one M
  step per dream step, what ``batched: false`` does;
* ``batched K``: :class:`agents.controller.cmaes.BatchedScorer` in this process on one
  ``DreamVecEnv`` of at most ``K`` envs (``--batch-envs``, several values allowed): one M
  step for all the generation's dreams, what ``batched: true`` does.

Dream steps per second, medians of ``--rounds`` rounds, and each arm's ratio to the first
per-env arm are printed with the CPU model and flags. The dream is the one a ``dream-cmaes``
controller of the ``worldmodels`` recipe trains in: M's time limit in agent steps
(``--max-steps``), tau ``--temperature``, M's start latents.

    python scripts/bench_dream_cmaes.py --memory RUN/rnn --temperature 1.3 --batch-envs 32 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

from agents.controller.cmaes import BatchedScorer, CandidateScorer, Controller
from envs.dream_env import DreamVecEnv
from worldvae.memory import load_memory
from worldvae.precision import machine_summary

CAR_ACTIONS = gym.spaces.Box(
    np.array([-1.0, 0.0, 0.0], np.float32), np.array([1.0, 1.0, 1.0], np.float32)
)


def dream_env(
    memory_dir: str, latents: str, temperature: float, max_steps: int, spec: dict[str, Any]
) -> VecEnv:
    """``spec["n_envs"]`` dreams of the M in ``memory_dir`` from the first frames of
    ``latents`` (a scorer's ``make_env``)."""
    memory = load_memory(memory_dir, device="cpu")[0]
    return VecMonitor(
        DreamVecEnv(
            memory,
            latents,
            CAR_ACTIONS,
            int(spec.get("n_envs", 1)),
            temperature,
            max_episode_steps=max_steps,
        )
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--memory", required=True, help="M's run directory (train-rnn) on CarRacing")
    p.add_argument("--latents", help="latent dataset of the starts (default: M's own)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, default=500, help="dream time limit (agent steps)")
    p.add_argument("--popsize", type=int, default=16)
    p.add_argument("--rollouts", type=int, default=2)
    p.add_argument("--sigma", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=2, help="per-env scorer's processes")
    p.add_argument("--batch-envs", type=int, nargs="+", default=[32])
    p.add_argument("--threads", type=int, default=2, help="torch threads of the batched arm")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    memory, extra = load_memory(args.memory, device="cpu")
    latents = args.latents or extra.get("latent_data")
    if not latents:
        p.error(f"{args.memory} names no latent dataset; pass --latents")
    obs_dim = memory.config.latent_dim + memory.config.hidden_size
    spec = {
        "obs_dim": obs_dim,
        "rollouts": args.rollouts,
        "hidden": 0,
        "make_env": partial(dream_env, args.memory, latents, args.temperature, args.max_steps),
    }
    n_params = Controller(obs_dim, CAR_ACTIONS).n_params
    per_env = f"per-env {args.workers}"
    scorers: dict[str, Any] = {per_env: CandidateScorer(spec, args.workers)}
    for k in args.batch_envs:
        scorers[f"batched {k}"] = BatchedScorer(spec, args.popsize, k)
    rates: dict[str, list[float]] = {name: [] for name in scorers}
    try:
        for r in range(args.rounds):
            rng = np.random.default_rng(r)
            candidates = list(rng.normal(0.0, args.sigma, (args.popsize, n_params)))
            names = list(scorers)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                t = time.perf_counter()
                _, steps = scorers[name].score(candidates, seed=r)
                rates[name].append(steps / (time.perf_counter() - t))
    finally:
        for s in scorers.values():
            s.close()
    print(machine_summary())
    print(
        f"M hidden {memory.config.hidden_size}, K {memory.config.n_gaussians}, "
        f"D {memory.config.latent_dim}; popsize {args.popsize} x {args.rollouts} rollouts, "
        f"tau {args.temperature}, {args.rounds} rounds"
    )
    base = statistics.median(rates[per_env])
    print(f"{'scorer':<14} {'median dream steps/s':>21} {'min':>8} {'max':>8} {'/ per-env':>10}")
    for name, values in rates.items():
        med = statistics.median(values)
        print(
            f"{name:<14} {med:>21.0f} {min(values):>8.0f} {max(values):>8.0f} {med / base:>9.2f}x"
        )


if __name__ == "__main__":
    main()
