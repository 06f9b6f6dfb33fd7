"""Collector scaling: frames/s with 1, 2 and 4 workers against the raw single-env step rate.

Blocks alternate (raw, W=1, W=2, W=4, raw, ...) in one process for ``--rounds`` rounds and
medians are reported, so machine noise hits every arm alike. The raw rate plays the same
episodes (same env, preprocessing, seeds and random policy) in one fresh process without
writing anything: what one env can do alone.
Scaling ratio = collector frames/s / (min(W, cores) x raw frames/s); 1.0 is linear.
A block with W workers collects ``--episodes x min(W, cores)`` episodes, so every block runs
about as long and worker start-up (process spawn, imports, env creation; about a second) weighs
the same in each. Collector rates are end to end: start-up, compression and writing included.

    python scripts/bench_collector.py --env CarRacing-v3 --episodes 12 --max-episode-steps 200
    python scripts/bench_collector.py --backend envpool --workers 1 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time

from envs import EnvSpec, PolicySpec, collect, make_env, play_episode
from worldvae.data import episode_seed
from worldvae.precision import machine_summary


def _raw_frames_per_second(env_id: str, n_episodes: int, max_steps: int, backend: str) -> float:
    env = make_env(env_id, max_episode_steps=max_steps, backend=backend)
    policy = PolicySpec("random").build(env.action_space)
    n, start = 0, time.perf_counter()
    for i in range(n_episodes):
        n += play_episode(env, policy, episode_seed(0, i)).frames.shape[0]
    rate = n / (time.perf_counter() - start)
    env.close()
    return rate


def raw_rate(env_id: str, n_episodes: int, max_steps: int, backend: str) -> float:
    """Frames/s of one env playing the collector's first episodes (same seeds), no writing.

    Runs in a fresh process, like a collector worker, so both start from the same state.
    """
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_raw_frames_per_second, (env_id, n_episodes, max_steps, backend))


def collector_rate(env_id: str, workers: int, episodes: int, max_steps: int, backend: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        r = collect(
            tmp,
            EnvSpec(env_id, max_episode_steps=max_steps, backend=backend),
            n_episodes=episodes,
            n_workers=workers,
            progress=False,
        )
    return r.new_frames / r.seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="CarRacing-v3")
    p.add_argument("--episodes", type=int, default=12, help="episodes per collector block")
    p.add_argument("--max-episode-steps", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backend", default="gymnasium", choices=["gymnasium", "envpool"])
    args = p.parse_args()
    print(machine_summary(), flush=True)
    cores = len(os.sched_getaffinity(0))
    raw: list[float] = []
    coll: dict[int, list[float]] = {w: [] for w in args.workers}
    for r in range(args.rounds):
        raw.append(raw_rate(args.env, args.episodes, args.max_episode_steps, args.backend))
        for w in args.workers:
            n_episodes = args.episodes * min(w, cores)
            coll[w].append(
                collector_rate(args.env, w, n_episodes, args.max_episode_steps, args.backend)
            )
        print(
            f"round {r + 1}: raw {raw[-1]:.0f}, "
            + ", ".join(f"W={w} {coll[w][-1]:.0f}" for w in args.workers),
            flush=True,
        )
    raw_med = statistics.median(raw)
    print(
        f"\n{args.env} on {args.backend}, {cores} cores, {args.rounds} rounds, medians (frames/s)"
    )
    print(f"{'':>12} {'frames/s':>9} {'x raw':>7} {'ratio to linear':>16}")
    print(f"{'raw 1 env':>12} {raw_med:9.0f} {1.0:7.2f} {'':>16}")
    for w in args.workers:
        m = statistics.median(coll[w])
        linear = min(w, cores) * raw_med
        print(f"{f'W={w}':>12} {m:9.0f} {m / raw_med:7.2f} {m / linear:16.2f}")


if __name__ == "__main__":
    main()
