"""Latent env and PPO throughput on CarRacing-v3, measured side by side in one run.

For 1, 4 and 8 envs (SubprocVecEnv for more than one) it times, in alternating blocks:

* raw: the pixel VecEnv alone (random actions);
* batched: ``VecLatentObservation`` over the same VecEnv (one encode call for all envs);
* per-env: a VecEnv of ``LatentObservation`` envs (each env encodes its own frame, in its
  own process).

Then PPO env-steps/s (collection and updates, ``--ppo-steps`` per block) for a pixel agent
(CnnPolicy, 2 stacked frames) and a latent agent (MlpPolicy on the batched wrapper), same
hyperparameters otherwise. Medians of ``--rounds`` rounds.

``--backend envpool`` steps the pixel envs with one envpool pool (``EnvpoolVecEnv``, batched
preprocessing) instead of gymnasium processes; the per-env arm then runs envpool envs in
processes.

    python scripts/bench_latent.py --model runs/vae/carracing
    python scripts/bench_latent.py --backend envpool --envs 8 --ppo-envs 8
    python scripts/bench_latent.py --device cuda     # batched encode and PPO on the GPU

``--device`` places the batched wrapper's model and both PPO agents; the per-env arm always
encodes on the CPU of its own process (one CUDA context per env process would cost more than
it saves).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecFrameStack

from envs import LatentObservation, VecLatentObservation, make_env
from envs.envpool_env import EnvpoolVecEnv
from worldvae.precision import machine_summary
from worldvae.vae import Autoencoder, AutoencoderConfig, load_model

ENV_ID = "CarRacing-v3"
OPTIONS: dict[str, Any] = {"frame_size": 64, "crop": (0, 12, 0, 0), "frame_skip": 2}


class PixelEnvFactory:
    """Picklable ``make_env`` on one backend (for SubprocVecEnv)."""

    def __init__(self, backend: str):
        self.backend = backend

    def __call__(self) -> Any:
        return make_env(ENV_ID, **OPTIONS, backend=self.backend)


class LatentEnvFactory:
    """Picklable factory of single-env latent wrappers (for SubprocVecEnv)."""

    def __init__(self, model_dir: str, backend: str, precision: str):
        self.model_dir, self.backend, self.precision = model_dir, backend, precision

    def __call__(self) -> Any:
        torch.set_num_threads(1)
        env = PixelEnvFactory(self.backend)()
        return LatentObservation(env, self.model_dir, device="cpu", precision=self.precision)


def vec(fns: list[Callable[[], Any]]) -> VecEnv:
    return SubprocVecEnv(fns, start_method="spawn") if len(fns) > 1 else DummyVecEnv(fns)


def pixel_vec(backend: str, n: int) -> VecEnv:
    if backend == "envpool":
        return EnvpoolVecEnv(ENV_ID, n, seed=0, **OPTIONS)
    return vec([PixelEnvFactory(backend)] * n)


def steps_per_second(venv: VecEnv, n_steps: int) -> float:
    actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
    t = time.perf_counter()
    for _ in range(n_steps):
        venv.step(actions)
    return n_steps * venv.num_envs / (time.perf_counter() - t)


def ppo_rate(venv: VecEnv, policy: str, n_steps: int, device: str = "cpu") -> float:
    agent = PPO(
        policy, venv, n_steps=64, batch_size=256, n_epochs=4, seed=0, device=device, verbose=0
    )
    agent.learn(n_steps // 4)  # warm-up: first rollout and update
    t = time.perf_counter()
    agent.learn(n_steps, reset_num_timesteps=False)
    return n_steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model dir (default: an untrained V of the same shape)",
    )
    p.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--vec-steps", type=int, default=40, help="VecEnv steps per block")
    p.add_argument("--ppo-steps", type=int, default=2048)
    p.add_argument("--ppo-envs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads in this process (default: torch's)"
    )
    p.add_argument("--skip-ppo", action="store_true")
    p.add_argument("--backend", default="gymnasium", choices=["gymnasium", "envpool"])
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"], help="encode")
    p.add_argument("--device", default="cpu", help="batched encode and PPO: cpu | cuda[:N]")
    args = p.parse_args()
    print(machine_summary())
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        args.model = Path("runs/bench/untrained-v")
        from worldvae.vae import save_model

        save_model(Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(64, 64, 3))), args.model)
    model = load_model(args.model, device=args.device)
    print(
        f"{ENV_ID} {OPTIONS} on {args.backend}, model {args.model} on {args.device}, "
        f"encode {args.precision}, "
        f"torch threads {torch.get_num_threads()}"
    )

    results: dict[tuple[int, str], list[float]] = {}
    for n in args.envs:
        raw = pixel_vec(args.backend, n)
        raw.reset()
        batched = VecLatentObservation(raw, model, precision=args.precision)
        batched.reset()
        per_env = vec([LatentEnvFactory(str(args.model), args.backend, args.precision)] * n)
        per_env.reset()
        for _ in range(args.rounds):
            for name, venv in (("raw", raw), ("batched", batched), ("per-env", per_env)):
                results.setdefault((n, name), []).append(steps_per_second(venv, args.vec_steps))
        print(
            f"{n} envs: "
            + ", ".join(
                f"{k} {statistics.median(results[(n, k)]):.0f}"
                for k in ("raw", "batched", "per-env")
            ),
            flush=True,
        )
        raw.close()
        per_env.close()

    ppo: dict[str, list[float]] = {"pixel": [], "latent": []}
    for r in range(0 if args.skip_ppo else max(1, args.rounds - 1)):
        pix = VecFrameStack(pixel_vec(args.backend, args.ppo_envs), 2, channels_order="last")
        ppo["pixel"].append(ppo_rate(pix, "CnnPolicy", args.ppo_steps, args.device))
        pix.close()
        lat = VecLatentObservation(
            pixel_vec(args.backend, args.ppo_envs), model, frame_stack=2, precision=args.precision
        )
        ppo["latent"].append(ppo_rate(lat, "MlpPolicy", args.ppo_steps, args.device))
        lat.close()
        print(
            f"PPO round {r + 1}: pixel {ppo['pixel'][-1]:.0f}, latent {ppo['latent'][-1]:.0f} env-steps/s",
            flush=True,
        )

    print("\nVecEnv env-steps/s (medians)")
    print(f"{'envs':>5} {'raw':>7} {'batched':>8} {'x raw':>6} {'per-env':>8} {'x raw':>6}")
    for n in args.envs:
        raw_m = statistics.median(results[(n, "raw")])
        b_m = statistics.median(results[(n, "batched")])
        p_m = statistics.median(results[(n, "per-env")])
        print(f"{n:5d} {raw_m:7.0f} {b_m:8.0f} {b_m / raw_m:6.2f} {p_m:8.0f} {p_m / raw_m:6.2f}")
    if args.skip_ppo:
        return
    pix_m, lat_m = statistics.median(ppo["pixel"]), statistics.median(ppo["latent"])
    print(
        f"\nPPO env-steps/s, {args.ppo_envs} envs: pixel {pix_m:.0f}, latent {lat_m:.0f}, ratio {lat_m / pix_m:.2f}x"
    )


if __name__ == "__main__":
    main()
