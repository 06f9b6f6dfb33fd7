"""Scaling overheads: collection on local processes against Ray tasks, and the VAE's training
step in one process against data-parallel gloo ranks.

Collect: blocks of CarRacing-v3 episodes (random policy, ``--episode-steps`` steps each,
``--episodes-per-worker`` per worker) into fresh directories, alternating local W=1, Ray W=1,
local W=2, Ray W=2 for ``--rounds`` rounds; frames/s end to end, as one command runs it (a
local block spawns its worker processes, a Ray block starts and stops a local Ray of 2 CPUs).

Train: the World Models VAE (64x64, 4.35M parameters) on the same in-memory uint8 frames at
global batch ``--batch-size`` for ``--steps`` timed steps (after one warm-up step), alternating:
one process with every core's threads, one process with one thread, and ``--ranks`` processes
of one thread each under DistributedDataParallel (gloo; each rank takes ``batch / ranks``
frames and the gradients are averaged, as ``torchrun ... train-vae`` does). Process start-up
is excluded; img/s counts the global batch.

Trainer: the whole ``train-vae`` command on a dataset of such frames (``--trainer-steps``
steps, ``--data-shards`` = ranks in every arm, so all arms train on the same global batches),
alternating one process with every core's threads, one process with one thread, and
``torchrun --nproc-per-node RANKS`` with one thread per rank; img/s is what the trainer reports
(its training loop only: start-up, rendezvous and validation excluded).

    python scripts/bench_scale.py
    python scripts/bench_scale.py --skip-collect --steps 10
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp

from worldvae.distributed import DistContext, wrap_for_ranks
from worldvae.precision import machine_summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- collect ---------------------------------------------------------------------------------
def collect_block(
    cluster: str, workers: int, out: Path, args: argparse.Namespace, seed: int
) -> tuple[float, float]:
    """One collection of ``episodes_per_worker * workers`` episodes into ``out``, as one command
    would run it: (frames/s end to end, seconds of start-up: Ray's, for a Ray block)."""
    from envs import collect
    from envs.factory import resolve_spec
    from envs.policies import PolicySpec
    from envs.ray_collect import play_on_ray
    from worldvae.envspec import EnvSpec

    env = resolve_spec(
        EnvSpec("CarRacing-v3", max_episode_steps=args.episode_steps, backend=args.backend)
    )
    n = args.episodes_per_worker * workers
    if cluster == "local":
        r = collect(out, env, n_episodes=n, n_workers=workers, seed=seed,
                    progress=False, record_state=False)  # fmt: skip
        return r.frames_per_second, 0.0
    import ray

    (out / "episodes").mkdir(parents=True)
    frames: list[int] = []
    t = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - t
    try:
        play_on_ray("ray", env, PolicySpec.parse("random"), seed,
                    out / "episodes", iter(range(n)), lambda i, f: frames.append(f) is None,
                    n_workers=workers)  # fmt: skip
    finally:
        ray.shutdown()
    return sum(frames) / (time.perf_counter() - t), started


def bench_collect(args: argparse.Namespace, tmp: Path) -> None:
    arms = [("local", 1), ("ray", 1), ("local", 2), ("ray", 2)]
    rates: dict[tuple[str, int], list[float]] = {a: [] for a in arms}
    starts: list[float] = []
    for r in range(args.rounds):
        for cluster, w in arms:
            out = tmp / f"c_{cluster}_{w}_{r}"
            rate, started = collect_block(cluster, w, out, args, r)
            rates[(cluster, w)].append(rate)
            if cluster == "ray":
                starts.append(started)
            shutil.rmtree(out)
            print(f"  round {r} {cluster:5s} W={w}: {rate:6.1f} frames/s", flush=True)
    med = {a: statistics.median(v) for a, v in rates.items()}
    print(f"\ncollect CarRacing-v3 ({args.backend}, {args.episode_steps}-step episodes, "
          f"{args.episodes_per_worker} per worker), {args.rounds} rounds, medians; end to end: "
          f"local worker spawn and ray.init (median {statistics.median(starts):.1f} s) "
          "included")  # fmt: skip
    print("              frames/s  x local W=1   Ray / local")
    for cluster, w in arms:
        m = med[(cluster, w)]
        print(f"  {cluster:5s} W={w}  {m:8.1f}  {m / med[('local', 1)]:11.2f}  "
              f"{m / med[('local', w)]:11.2f}")  # fmt: skip


# ---- train -----------------------------------------------------------------------------------
def train_steps(
    rank: int, world: int, threads: int, port: int, args: argparse.Namespace, out: Any
) -> None:
    """One rank: ``args.steps`` timed VAE steps on its share of the global batch."""
    from scripts.bench_vae import make_frames
    from worldvae.vae import Autoencoder, AutoencoderConfig

    torch.set_num_threads(threads)
    ddp = world > 1
    if ddp:
        os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(64, 64, 3)))
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ctx = DistContext(rank, world, backend="gloo") if ddp else DistContext()
    step_fn = wrap_for_ranks(model, ctx, torch.device("cpu"))  # DDP as the trainer wraps it
    share = args.batch_size // world
    frames = torch.from_numpy(make_frames(share * 4, 64, seed=rank))
    for i in range(args.steps + 1):
        if i == 1:
            if ddp:
                dist.barrier()
            t = time.perf_counter()
        batch = frames[(i % 4) * share : (i % 4 + 1) * share]
        loss, _ = step_fn(batch, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if ddp:
        dist.barrier()
    seconds = time.perf_counter() - t
    if rank == 0:
        out.put(args.steps * args.batch_size / seconds)
    if ddp:
        dist.destroy_process_group()


def train_block(world: int, threads: int, args: argparse.Namespace) -> float:
    ctx = tmp_mp.get_context("spawn")
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=train_steps, args=(r, world, threads, port, args, out))
             for r in range(world)]  # fmt: skip
    for p in procs:
        p.start()
    rate = float(out.get(timeout=1800))
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a training rank exited with code {p.exitcode}")
    return rate


def thread_arms(
    args: argparse.Namespace, ranks_arm: str, block: Callable[[int, int, str], float], title: str
) -> None:
    """Alternate one process with every core's threads, one with one thread and ``--ranks``
    processes of one thread (``ranks_arm``) for ``--rounds`` rounds; print the medians.

    ``block(processes, threads, tag)`` times one block and returns its img/s.
    """
    cores = os.cpu_count() or 1
    arms = {
        f"1 process, {cores} threads": (1, cores),
        "1 process, 1 thread": (1, 1),
        ranks_arm: (args.ranks, 1),
    }
    rates: dict[str, list[float]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for i, (name, (world, threads)) in enumerate(arms.items()):
            rates[name].append(block(world, threads, f"{r}_{i}"))
            print(f"  round {r} {name:28s}: {rates[name][-1]:6.1f} img/s", flush=True)
    med = {a: statistics.median(v) for a, v in rates.items()}
    base = next(iter(med.values()))
    print(f"\n{title}")
    print("                                img/s  x first arm")
    for name in arms:
        print(f"  {name:28s} {med[name]:6.1f}  {med[name] / base:11.2f}")


def bench_train(args: argparse.Namespace) -> None:
    thread_arms(
        args,
        f"{args.ranks} gloo ranks, 1 thread each",
        lambda world, threads, _: train_block(world, threads, args),
        f"VAE train step (World Models VAE, 64x64, global batch {args.batch_size}, fp32), "
        f"{args.rounds} rounds of {args.steps} steps, medians",
    )


# ---- the train-vae command -------------------------------------------------------------------
def write_frames_dataset(root: Path, n_episodes: int = 12, length: int = 100) -> Path:
    """A dataset of ``n_episodes`` episodes of game-like 64x64 frames (see bench_vae)."""
    from scripts.bench_vae import make_frames
    from worldvae.data import Episode, Manifest, episode_filename, write_episode
    from worldvae.data.manifest import EPISODES_DIR

    Manifest(
        env_id="Frames-v0",
        env_options={},
        frame_shape=(64, 64, 3),
        policy={"name": "random", "params": {}},
        seed=0,
    ).save(root)
    for i in range(n_episodes):
        frames = make_frames(length + 1, 64, seed=i)
        write_episode(
            root / EPISODES_DIR / episode_filename(i),
            Episode(
                frames=frames,
                actions=np.zeros(length, np.int64),
                rewards=np.zeros(length, np.float32),
                terminated=np.r_[np.zeros(length - 1, bool), True],
                truncated=np.zeros(length, bool),
                seed=i,
            ),
        )
    return root


def trainer_block(
    ranks: int, threads: int, data: Path, out: Path, args: argparse.Namespace
) -> float:
    """One ``train-vae`` run; the img/s it reports."""
    cmd = [sys.executable, "-m"]
    if ranks > 1:
        cmd += ["torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), "-m"]
    cmd += ["worldvae", "train-vae", "--data", str(data), "--out", str(out), "--epochs", "1",
            "--max-steps", str(args.trainer_steps), "--batch-size", str(args.batch_size),
            "--data-shards", str(args.ranks), "--device", "cpu", "--precision", "fp32",
            "--val-fraction", "0.1", "--kind", "vae", "--warmup-steps", "1"]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = re.search(r"([0-9.]+) img/s\)", r.stdout)
    if r.returncode or not found:
        raise RuntimeError(f"train-vae failed ({r.returncode}): {r.stderr[-2000:]}")
    return float(found.group(1))


def bench_trainer(args: argparse.Namespace, tmp: Path) -> None:
    data = write_frames_dataset(tmp / "frames")
    thread_arms(
        args,
        f"torchrun {args.ranks} ranks, 1 thread",
        lambda ranks, threads, tag: trainer_block(ranks, threads, data, tmp / f"run_{tag}", args),
        f"train-vae command (World Models VAE, 64x64, global batch {args.batch_size}, fp32, "
        f"--data-shards {args.ranks}), {args.rounds} rounds of {args.trainer_steps} steps, "
        "medians",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--episode-steps", type=int, default=100)
    p.add_argument("--episodes-per-worker", type=int, default=4)
    p.add_argument("--backend", default="gymnasium", help="gymnasium | envpool")
    p.add_argument("--steps", type=int, default=8, help="timed VAE steps per block")
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--skip-collect", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-trainer", action="store_true", help="skip the train-vae command arms")
    p.add_argument("--trainer-steps", type=int, default=30, help="steps per train-vae run")
    args = p.parse_args()
    if args.batch_size % args.ranks:
        p.error(f"--batch-size {args.batch_size} must be a multiple of --ranks {args.ranks}")
    print(machine_summary())
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_collect:
            bench_collect(args, Path(d))
        if not args.skip_train:
            bench_train(args)
        if not args.skip_trainer:
            bench_trainer(args, Path(d))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
