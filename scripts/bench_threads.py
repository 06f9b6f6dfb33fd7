"""Where the latent wrapper's time goes: CPU per VecEnv step by thread, raw envpool against the
wrapper over it.

    python scripts/bench_threads.py MODEL_DIR [--runtime openvino] [--rounds 3] [--steps 300]

One process builds a raw ``EnvpoolVecEnv`` (8 CarRacing-v3 envs, 64x64, frame skip 2) and a
``VecLatentObservation`` over another one, encoding with ``MODEL_DIR``'s V on ``--runtime``,
and steps each in turn, ``--steps`` steps a block. Each thread's CPU time is read from
``/proc/self/task`` before and after a block and summed by group: ``main`` (the stepping
thread: the wrapper's preprocessing, the encode when the runtime runs on the caller, SB3's
bookkeeping), ``raw-env`` (the threads the raw env started) and ``wrapper`` (the threads the
wrapper's env and its runtime started). Linux only (``/proc``); the clock tick is 10 ms, so
blocks of a few hundred steps are needed.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

OPTIONS: dict[str, Any] = {"frame_size": (64, 64), "crop": (0, 12, 0, 0), "frame_skip": 2}
N_ENVS = 8


def thread_cpu() -> dict[int, int]:
    """Each thread of this process -> its CPU time so far, in clock ticks."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended between the listing and the read
            continue
        ticks[int(tid)] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a V (model or train-vae run directory)")
    parser.add_argument("--runtime", default="openvino", help="the encode's runtime (openvino)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated rounds (default 3)")
    parser.add_argument("--steps", type=int, default=300, help="VecEnv steps a block (300)")
    args = parser.parse_args()

    from envs import VecLatentObservation
    from envs.envpool_env import EnvpoolVecEnv
    from worldvae.precision import machine_summary
    from worldvae.vae import load_model

    print(machine_summary())
    model = load_model(args.model_dir, device="cpu")
    before = set(thread_cpu())
    raw = EnvpoolVecEnv("CarRacing-v3", N_ENVS, seed=0, **OPTIONS)
    raw_threads = set(thread_cpu()) - before
    wrapped = VecLatentObservation(
        EnvpoolVecEnv("CarRacing-v3", N_ENVS, seed=0, **OPTIONS),
        model,
        precision="auto",
        runtime=args.runtime,
    )
    wrapper_threads = set(thread_cpu()) - before - raw_threads
    print(
        f"runtime {wrapped.runtime}; threads: raw env {len(raw_threads)}, wrapper {len(wrapper_threads)}"
    )
    actions = np.random.default_rng(0).uniform(-1, 1, (N_ENVS, 3)).astype(np.float32)
    for venv in (raw, wrapped):
        venv.reset()
        venv.step(actions)
    main_tid, tick = os.getpid(), os.sysconf("SC_CLK_TCK")

    def group(tid: int) -> str:
        if tid == main_tid:
            return "main"
        return "raw-env" if tid in raw_threads else "wrapper" if tid in wrapper_threads else "other"

    print(f"\nCPU ms per VecEnv step of {N_ENVS} envs, by thread group")
    for rnd in range(args.rounds):
        for name, venv in (("raw", raw), ("wrapper", wrapped)):
            start, wall = thread_cpu(), time.perf_counter()
            for _ in range(args.steps):
                venv.step(actions)
            wall, end = time.perf_counter() - wall, thread_cpu()
            groups: dict[str, float] = {}
            for tid, ticks in end.items():
                used = 1e3 * (ticks - start.get(tid, 0)) / tick / args.steps
                if used:
                    groups[group(tid)] = groups.get(group(tid), 0.0) + used
            shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(groups.items()))
            print(
                f"round {rnd} {name:<8} {args.steps * N_ENVS / wall:6.0f} env-steps/s, "
                f"wall {1e3 * wall / args.steps:5.2f} ms/step; CPU {shown}"
            )
    raw.close()
    wrapped.close()


if __name__ == "__main__":
    main()
