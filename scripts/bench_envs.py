"""Env-steps/s of gymnasium against envpool, at 1, 2 and 8 envs, measured side by side.

For each env and count ``n`` it times, in alternating blocks of ``--seconds`` each:

* gymnasium: ``n`` envs from ``gym.make`` (raw observations, no preprocessing), one in this
  process for ``n = 1``, a ``SubprocVecEnv`` of ``n`` processes otherwise;
* envpool: one ``envpool.make_gymnasium`` pool of ``n`` envs (the settings ``make_env`` uses).

Random actions; episodes reset as they end. Medians of ``--rounds`` blocks, and the ratio.
MiniGrid is compared on its symbolic 7x7 view on both sides (envpool renders no RGB frames;
the project's gymnasium path renders the full grid on top of this).

    python scripts/bench_envs.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from envs.backends import EnvpoolTask, envpool_task, make_envpool
from envs.registry import register_optional_families
from worldvae.precision import machine_summary

ENVS = ("CarRacing-v3", "ALE/Pong-v5", "MiniGrid-Empty-8x8-v0")


class GymFactory:
    """Picklable ``gym.make`` of raw ``env_id`` (for SubprocVecEnv)."""

    def __init__(self, env_id: str):
        self.env_id = env_id

    def __call__(self) -> gym.Env:
        register_optional_families()
        env = gym.make(self.env_id)
        if self.env_id.startswith("MiniGrid-"):  # the 7x7 symbolic view, as envpool gives
            from minigrid.wrappers import ImgObsWrapper

            env = ImgObsWrapper(env)
        return env


def gym_venv(env_id: str, n: int) -> VecEnv:
    fns = [GymFactory(env_id)] * n
    return SubprocVecEnv(fns, start_method="spawn") if n > 1 else DummyVecEnv(fns)


def pool_task(env_id: str) -> EnvpoolTask | None:
    if env_id.startswith("MiniGrid-"):
        return EnvpoolTask(env_id)
    return envpool_task(env_id)


def time_gym(venv: VecEnv, seconds: float) -> float:
    actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
    steps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        venv.step(actions)
        steps += venv.num_envs
    return steps / (time.perf_counter() - t)


def time_pool(pool: Any, n: int, seconds: float) -> float:
    space = pool.action_space
    actions = np.stack([space.sample() for _ in range(n)])
    ids = np.arange(n, dtype=np.int32)
    steps, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        _, _, term, trunc, info = pool.step(actions, ids)
        done = np.asarray(info["env_id"])[term | trunc]
        if len(done):
            pool.reset(done.astype(np.int32))
        steps += n
    return steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--envs", nargs="+", default=list(ENVS))
    p.add_argument("--counts", type=int, nargs="+", default=[1, 2, 8])
    p.add_argument("--seconds", type=float, default=1.5, help="length of one timed block")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(machine_summary(), flush=True)
    register_optional_families()
    rows = []
    for env_id in args.envs:
        task = pool_task(env_id)
        for n in args.counts:
            venv = gym_venv(env_id, n)
            venv.reset()
            pool = make_envpool(task, list(range(n)), None) if task else None
            if pool is not None:
                pool.reset()
            g, e = [], []
            for _ in range(args.rounds):
                g.append(time_gym(venv, args.seconds))
                if pool is not None:
                    e.append(time_pool(pool, n, args.seconds))
            venv.close()
            gm = statistics.median(g)
            em = statistics.median(e) if e else float("nan")
            rows.append((env_id, n, gm, em))
            print(f"{env_id} n={n}: gymnasium {gm:.0f}, envpool {em:.0f} env-steps/s", flush=True)
    print(f"\nenv-steps/s, medians of {args.rounds} blocks of {args.seconds} s")
    print(f"{'env':<24} {'envs':>4} {'gymnasium':>10} {'envpool':>9} {'ratio':>6}")
    for env_id, n, gm, em in rows:
        print(f"{env_id:<24} {n:4d} {gm:10.0f} {em:9.0f} {em / gm:6.2f}")


if __name__ == "__main__":
    main()
