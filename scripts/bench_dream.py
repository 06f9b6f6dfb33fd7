"""Dream steps/s against real env steps/s, measured side by side in one process.

In alternating blocks of ``--steps`` steps (random actions, one env each), it times:

* dream: :class:`envs.dream_env.DreamEnv` (one M step and one mixture sample per step);
* real+V+M: the real env with :class:`envs.latent_memory.LatentMemoryObservation` (render, resize,
  encode with V, step M): what an agent trained on ``[z, h]`` pays per step in the real env;
* real: the rendered, resized frame env alone;
* dream xN (``--vec-envs N``): N ``DreamEnv`` copies in a DummyVecEnv (N M steps per VecEnv
  step), and dream xN batched: :class:`envs.dream_env.DreamVecEnv` (one M step for all N), in
  env-steps/s.

Medians of ``--rounds`` rounds and the ratios to the dream are printed, with the CPU model and
flags and what torch reports.

    python scripts/bench_dream.py --model runs/vae/cp32 --memory runs/rnn/cp32b \
        --env CartPole-v1 --frame-size 32 --crop 160,70,0,0
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import make_env
from envs.dream_env import DreamEnv, DreamVecEnv
from envs.latent_memory import LatentMemoryObservation
from worldvae.data.latents import LatentDataset
from worldvae.memory import load_memory
from worldvae.precision import machine_summary
from worldvae.vae import load_model


def time_block(env: gym.Env, n_steps: int, seed: int) -> float:
    """Steps per second over ``n_steps`` random-action steps (resets included)."""
    env.action_space.seed(seed)
    env.reset(seed=seed)
    t = time.perf_counter()
    for _ in range(n_steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    return n_steps / (time.perf_counter() - t)


def time_vec_block(venv: Any, n_steps: int, seed: int) -> float:
    """Env-steps per second over ``n_steps`` VecEnv steps of random actions (auto-reset)."""
    venv.seed(seed)
    venv.reset()
    venv.action_space.seed(seed)
    t = time.perf_counter()
    for _ in range(n_steps):
        venv.step(np.array([venv.action_space.sample() for _ in range(venv.num_envs)]))
    return n_steps * venv.num_envs / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="VAE model or run directory")
    p.add_argument("--memory", required=True, help="M's run directory (train-rnn)")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--frame-size", type=int, default=32)
    p.add_argument("--crop", default="160,70,0,0")
    p.add_argument("--steps", type=int, default=300, help="steps per block")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--vec-envs", type=int, default=8, help="dreams per VecEnv (0: skip)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    crop = tuple(int(c) for c in args.crop.split(",")) if args.crop else None

    vae = load_model(args.model, device="cpu")
    memory, extra = load_memory(args.memory, device="cpu")
    starts = LatentDataset(extra["latent_data"], val_fraction=0.0).start_latents()[0]

    def frames() -> Any:
        return make_env(args.env, frame_size=args.frame_size, crop=crop)  # type: ignore[arg-type]

    envs: dict[str, gym.Env] = {
        "dream": DreamEnv(memory, starts, frames().action_space, vae=vae),
        "real+V+M": LatentMemoryObservation(frames(), vae, memory),
        "real": frames(),
    }
    n = args.vec_envs
    space = frames().action_space
    vecs: dict[str, Any] = {}
    if n:
        vecs[f"dream x{n}"] = DummyVecEnv(
            [lambda: DreamEnv(memory, starts, space) for _ in range(n)]
        )
        vecs[f"dream x{n} batched"] = DreamVecEnv(memory, starts, space, n)
    rates: dict[str, list[float]] = {k: [] for k in [*envs, *vecs]}
    for r in range(args.rounds):
        for name, env in envs.items():
            rates[name].append(time_block(env, args.steps, seed=r))
        for name, venv in vecs.items():
            rates[name].append(time_vec_block(venv, max(1, args.steps // n), seed=r))
    print(machine_summary())
    print(
        f"M hidden {memory.config.hidden_size}, K {memory.config.n_gaussians}, "
        f"D {memory.config.latent_dim}"
    )
    dream = statistics.median(rates["dream"])
    print(f"{'env':<18} {'median steps/s':>15} {'min':>8} {'max':>8} {'dream / this':>13}")
    for name, values in rates.items():
        med = statistics.median(values)
        print(
            f"{name:<18} {med:>15.0f} {min(values):>8.0f} {max(values):>8.0f} {dream / med:>12.2f}x"
        )


if __name__ == "__main__":
    main()
