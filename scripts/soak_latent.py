"""Soak test of ``VecLatentObservation``: a million env steps, memory measured as it goes.

A cheap image env (random uint8 frames, episodes of random length, so resets and
``terminal_observation`` encodes happen all the time) under ``DummyVecEnv``, wrapped by
``VecLatentObservation`` with a tiny VAE, frame stacking and action history. It prints the
resident set size (current and peak, from /proc/self/status) at the start and every
``--report-every`` steps, and the growth from the first report to the last.

    python scripts/soak_latent.py --steps 1000000
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import VecLatentObservation
from worldvae.vae import Autoencoder, AutoencoderConfig


class NoiseFrames(gym.Env):
    """Random 16x16 RGB frames; an episode ends with probability 1/100 per step."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        super().reset(seed=seed)
        return self._frame(), {}

    def _frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def step(self, action: Any) -> Any:
        done = bool(self.np_random.random() < 0.01)
        return self._frame(), 1.0, done, False, {}


def memory_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1_000_000, help="env steps, all envs together")
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--report-every", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    print(f"cpu: {cpu_model()}; torch {torch.__version__}, threads {torch.get_num_threads()}")
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=8, channels=(8, 16))
    ).eval()
    venv = VecLatentObservation(
        DummyVecEnv([NoiseFrames for _ in range(args.n_envs)]),
        model,
        frame_stack=2,
        action_history=2,
        device="cpu",
    )
    venv.seed(args.seed)
    venv.reset()
    rng = np.random.default_rng(args.seed)
    rows = []
    steps, episodes, t0 = 0, 0, time.perf_counter()
    next_report = 0
    while steps <= args.steps:
        if steps >= next_report:
            rss, peak = memory_kib()
            rows.append((steps, episodes, rss, peak, time.perf_counter() - t0))
            print(
                f"steps {steps:>9,}  episodes {episodes:>7,}  rss {rss / 1024:7.1f} MiB  "
                f"peak {peak / 1024:7.1f} MiB  {time.perf_counter() - t0:6.0f} s",
                flush=True,
            )
            next_report += args.report_every
        obs, _, dones, _ = venv.step(rng.integers(0, 3, args.n_envs))
        assert obs.shape == (args.n_envs, venv.observation_space.shape[0])
        episodes += int(dones.sum())
        steps += args.n_envs
    venv.close()
    first, last = rows[1] if len(rows) > 1 else rows[0], rows[-1]
    print(
        f"rss growth from step {first[0]:,} to {last[0]:,}: "
        f"{(last[2] - first[2]) / 1024:+.1f} MiB; peak {first[3] / 1024:.1f} -> "
        f"{last[3] / 1024:.1f} MiB; {last[0] / last[4]:.0f} env-steps/s"
    )


if __name__ == "__main__":
    main()
