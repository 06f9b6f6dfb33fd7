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

``--overlap`` runs only the envpool comparison of the latent wrapper's two paths (about two
minutes; ``--envs`` defaults to 8 there), in alternating blocks of ``--vec-steps`` steps with
the first arm rotating per round, medians of ``--rounds`` rounds:

* ``raw sync``: ``EnvpoolVecEnv`` as one batch per frame-skip step (envpool's threads: one
  per core): the raw VecEnv the ratios divide by;
* ``old``: ``VecLatentObservation`` over it as before the overlap: one encode after the step,
  on torch's own thread count, with the model's weights in NCHW;
* ``sync, fixed``: the same with the encode on one torch thread and channels_last weights
  (the wrapper's defaults now), still after the step;
* ``raw async E``: ``EnvpoolVecEnv(async_step=True, num_threads=E)``, the new path's env alone;
* ``new E:T:K``: ``VecLatentObservation`` over that, the frames encoded on ``T`` torch
  threads in chunks of ``K`` envs as they finish, while the others still step (``K`` left
  out: all envs, one encode after the last env, the wrapper's default).

* ``new E:T:K openvino``, ``new E:T:K onnxruntime`` (``--runtime``; by default both, each
  where installed): the first budget's arm with the wrapper's encode on that runtime
  (``VecLatentObservation(..., runtime=...)``, :func:`worldvae.vae.inference.encoder_runtime`
  on ``T`` threads);
* ``sync openvino``, ``sync onnxruntime``: the wrapper over ``raw sync`` (one batch per step,
  no overlap) with the encode on that runtime, on the wrapper's default encode threads.

* ``sync onnxruntime int8`` (``--int8``): the ``sync`` wrapper with its encode on the V's
  mean encoder exported to ONNX and quantized to int8 by ONNX Runtime's ``quantize_static``
  (calibrated on 256 frames of the env; ``scripts/bench_encoder.py``'s int8 arm), on the
  wrapper's encode threads: what int8 would give the wrapper, measured before it is offered;
  ``new E:T:K onnxruntime int8`` the first budget's overlapped arm with that encode.

The other ``new`` arms and ``sync torch`` encode with PyTorch; ``sync, fixed`` takes the
wrapper's default runtime (``"auto"``: ONNX Runtime on the CPU where installed).

``--budgets E:T[:K] ...`` lists the thread budgets to compare (envpool threads : encode
threads : chunk size); by default the wrapper's own (one envpool thread per core, one encode
thread, all envs at once), the same encoding each half of the envs while the other half
steps, and one envpool thread with that overlap (the second core left to the encode).

    python scripts/bench_latent.py --overlap
    python scripts/bench_latent.py --overlap --precision auto --budgets 2:1 2:2
"""

from __future__ import annotations

import argparse
import copy
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
from envs.envpool_env import EnvpoolVecEnv, available_cores
from envs.latent import ENCODE_THREADS
from worldvae.precision import machine_summary, resolve_precision
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


def time_block(venv: VecEnv, actions: np.ndarray, n_steps: int) -> tuple[float, float]:
    """env-steps/s and process CPU milliseconds per step over ``n_steps`` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n_steps):
        venv.step(actions)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return n_steps * venv.num_envs / wall, 1e3 * cpu / n_steps


def envpool_vec(n: int, async_threads: int | None = None) -> EnvpoolVecEnv:
    """``n`` envpool envs: one batch per step (None), or stepped async on ``async_threads``."""
    if async_threads is None:
        return EnvpoolVecEnv(ENV_ID, n, seed=0, **OPTIONS)
    return EnvpoolVecEnv(ENV_ID, n, seed=0, async_step=True, num_threads=async_threads, **OPTIONS)


def runtime_arm(model: Any, n: int, budget: str, runtime: str, precision: str) -> VecEnv | None:
    """The ``new <budget> <runtime>`` arm: ``VecLatentObservation`` encoding on ``runtime``
    with the budget's threads, or None (with the reason printed) where it cannot run here."""
    from worldvae.vae.inference import resolve_runtime

    env_threads, encode_threads, *chunk = (int(x) for x in budget.split(":"))
    try:
        resolve_runtime(runtime, model, precision)
        return VecLatentObservation(
            envpool_vec(n, env_threads),
            model,
            precision=precision,
            encode_threads=encode_threads,
            chunk_size=chunk[0] if chunk else None,
            runtime=runtime,
        )
    except (ImportError, ValueError) as e:
        print(f"new {budget} {runtime}: skipped ({e})")
        return None


def int8_arms(model: Any, n: int, budget: str) -> dict[str, VecEnv]:
    """The ``sync onnxruntime int8`` and ``new <budget> onnxruntime int8`` arms (see the
    module docstring), both encoding with one int8 session; none (with the reason printed)
    where ONNX Runtime or onnx is not installed."""
    import tempfile

    from bench_encoder import export_onnx, onnxruntime_arm, quantized_onnx, real_frames

    from worldvae.vae.inference import runtime_available

    if not (runtime_available("onnxruntime") and runtime_available("onnx")):
        print("onnxruntime int8 arms: skipped (onnxruntime or onnx is not installed)")
        return {}
    frames = real_frames(256)
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(model, frames[:8], Path(folder) / "fp32.onnx")
        int8 = quantized_onnx(fp32, frames, Path(folder) / "int8.onnx")
        sync_encode = onnxruntime_arm(int8, ENCODE_THREADS)  # the session holds the graph
        budget_encode = onnxruntime_arm(int8, int(budget.split(":")[1]))
    env_threads, encode_threads, *chunk = (int(x) for x in budget.split(":"))
    arms = {
        "sync onnxruntime int8": VecLatentObservation(
            envpool_vec(n), model, precision="fp32", runtime="onnxruntime"
        ),
        f"new {budget} onnxruntime int8": VecLatentObservation(
            envpool_vec(n, env_threads),
            model,
            precision="fp32",
            encode_threads=encode_threads,
            chunk_size=chunk[0] if chunk else None,
            runtime="onnxruntime",
        ),
    }
    for arm, encode in zip(arms.values(), (sync_encode, budget_encode), strict=True):
        arm.encoder = encode  # the wrapper calls it as it calls a FrameEncoder
        arm.runtime = "onnxruntime int8"
    return arms


def overlap_arms(model: Any, n: int, precision: str, budgets: list[str]) -> dict[str, VecEnv]:
    """The arms of ``--overlap`` by name (see the module docstring)."""
    old = VecLatentObservation(
        envpool_vec(n),
        copy.deepcopy(model),
        precision=precision,
        encode_threads=None,
        runtime="torch",
    )
    old.model.to(memory_format=torch.contiguous_format)
    arms: dict[str, VecEnv] = {
        "raw sync": envpool_vec(n),
        "old": old,
        "sync torch": VecLatentObservation(
            envpool_vec(n), model, precision=precision, runtime="torch"
        ),
        # the default: runtime="auto" (ONNX Runtime on the CPU where installed)
        "sync, fixed": VecLatentObservation(envpool_vec(n), model, precision=precision),
    }
    for budget in budgets:
        env_threads, encode_threads, *chunk = (int(x) for x in budget.split(":"))
        if f"raw async E{env_threads}" not in arms:
            arms[f"raw async E{env_threads}"] = envpool_vec(n, env_threads)
        arms[f"new {budget}"] = VecLatentObservation(
            envpool_vec(n, env_threads),
            model,
            precision=precision,
            encode_threads=encode_threads,
            chunk_size=chunk[0] if chunk else None,
            runtime="torch",
        )
    return arms


def median_ratio(rates: list[float], reference: list[float]) -> float:
    """Median of the per-round ratios ``rates[r] / reference[r]``."""
    return statistics.median(a / b for a, b in zip(rates, reference, strict=True))


def run_overlap(args: argparse.Namespace, model: Any) -> None:
    """Alternate the ``--overlap`` arms in blocks; print medians and ratios to the raw arms."""
    n = args.envs[0] if args.envs != [1, 4, 8] else 8
    arms = overlap_arms(model, n, args.precision, args.budgets)
    for runtime in args.runtime:
        arm = runtime_arm(model, n, args.budgets[0], runtime, args.precision)
        if arm is not None:
            arms[f"new {args.budgets[0]} {runtime}"] = arm
            arms[f"sync {runtime}"] = VecLatentObservation(
                envpool_vec(n), model, precision=args.precision, runtime=runtime
            )
    if args.int8:
        arms |= int8_arms(model, n, args.budgets[0])
    actions = np.random.default_rng(0).uniform(-1, 1, (n, 3)).astype(np.float32)
    names = list(arms)
    for venv in arms.values():
        venv.reset()
    rate: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            arms[name].step(actions)  # one untimed step: caches, thread wake-up
            steps_per_s, ms = time_block(arms[name], actions, args.vec_steps)
            rate[name].append(steps_per_s)
            cpu[name].append(ms)
    print(
        f"\n{n} envs, {args.rounds} rounds of {args.vec_steps} steps, medians; x raw: median of "
        "the per-round ratios to raw sync and to the arm's own env alone (raw async E for new "
        "E:T:K); CPU: process CPU time per VecEnv step"
    )
    print(
        f"{'arm':<24} {'env-steps/s':>11} {'x raw sync':>10} {'x own raw':>9} {'CPU ms/step':>11}"
    )
    for name in names:
        own = f"raw async E{name.split()[1].split(':')[0]}" if name.startswith("new") else None
        own_ratio = median_ratio(rate[name], rate[own]) if own else float("nan")
        print(
            f"{name:<24} {statistics.median(rate[name]):11.0f} "
            f"{median_ratio(rate[name], rate['raw sync']):10.2f} {own_ratio:9.2f} "
            f"{statistics.median(cpu[name]):11.2f}"
        )
    for name in names:
        venv = arms[name]
        budget = getattr(venv, "thread_budget", {"env_threads": getattr(venv, "num_threads", 0)})
        print(f"  {name}: {budget}, runtime {getattr(venv, 'runtime', '-')}")
    for venv in arms.values():
        venv.close()


def ppo_rate(venv: VecEnv, policy: str, n_steps: int, device: str = "cpu") -> float:
    agent = PPO(
        policy, venv, n_steps=64, batch_size=256, n_epochs=4, seed=0, device=device, verbose=0
    )
    agent.learn(n_steps // 4)  # warm-up: first rollout and update
    t = time.perf_counter()
    agent.learn(n_steps, reset_num_timesteps=False)
    return n_steps / (time.perf_counter() - t)


def run_vec_arms(args: argparse.Namespace, model: Any) -> dict[tuple[int, str], list[float]]:
    """raw, batched and per-env VecEnv env-steps/s per block, by (envs, arm)."""
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
    return results


def run_ppo(args: argparse.Namespace, model: Any) -> dict[str, list[float]]:
    """PPO env-steps/s per round, pixel and latent agents."""
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
    return ppo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model dir (default: an untrained V of the same shape)",
    )
    p.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument(
        "--vec-steps", type=int, default=None, help="VecEnv steps per block (40; --overlap: 20)"
    )
    p.add_argument("--ppo-steps", type=int, default=2048)
    p.add_argument("--ppo-envs", type=int, default=8)
    p.add_argument("--rounds", type=int, default=None, help="3; --overlap: 15")
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads in this process (default: torch's)"
    )
    p.add_argument("--skip-ppo", action="store_true")
    p.add_argument("--backend", default="gymnasium", choices=["gymnasium", "envpool"])
    p.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"], help="encode")
    p.add_argument("--device", default="cpu", help="batched encode and PPO: cpu | cuda[:N]")
    p.add_argument("--overlap", action="store_true", help="only the envpool old/new comparison")
    p.add_argument(
        "--budgets",
        nargs="+",
        default=None,
        help="--overlap: envpool threads : encode threads [: chunk size], one new arm each "
        "(default: the wrapper's own, then halves overlapped on E = cores and on E = 1)",
    )
    p.add_argument(
        "--runtime",
        nargs="+",
        default=["openvino", "onnxruntime"],
        choices=["openvino", "onnxruntime"],
        help="--overlap: one arm per CPU runtime, the first budget's with the encode on it "
        "(those not installed are skipped)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="--overlap: add the sync arm with an int8 encode (ONNX Runtime quantize_static)",
    )
    args = p.parse_args()
    args.vec_steps = args.vec_steps or (20 if args.overlap else 40)
    args.rounds = args.rounds or (15 if args.overlap else 3)
    cores, n = available_cores(), args.envs[0] if args.envs != [1, 4, 8] else 8
    half = max(1, n // 2)
    default_budgets = [f"{cores}:{ENCODE_THREADS}", f"{cores}:1:{half}", f"1:1:{half}"]
    args.budgets = args.budgets or list(dict.fromkeys(default_budgets))
    print(machine_summary())
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is None:
        args.model = Path("runs/bench/untrained-v")
        from worldvae.vae import save_model

        save_model(Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(64, 64, 3))), args.model)
    model = load_model(args.model, device=args.device)
    print(
        f"{ENV_ID} {OPTIONS} on {'envpool' if args.overlap else args.backend}, "
        f"model {args.model} on {args.device}, "
        f"encode {resolve_precision(args.precision, args.device)}, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    if args.overlap:
        run_overlap(args, model)
        return

    results = run_vec_arms(args, model)
    ppo = run_ppo(args, model)
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
