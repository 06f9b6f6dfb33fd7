"""Collector frames/s against the raw env's, for each way of writing episodes; codecs compared.

Arms (``--arms``), each a full ``collect`` call of ``--episodes x min(W, cores)`` random-policy
episodes into a fresh folder, for each worker count ``W`` in ``--workers``:

    old          each episode written in turn by the worker, zlib (format 1: the code before
                 format 2 and the writer thread)
    thread-zlib  written on the worker's writer thread, zlib
    inline-zstd  written in turn, zstd (format 2)
    new          written on the writer thread, zstd (the default)

"raw" plays the same episodes (same env, preprocessing, seeds and random policy) in one fresh
process without writing anything: what one env can do alone. Blocks alternate (raw, then every
arm and W, then raw again, ...) in one process for ``--rounds`` rounds and medians are
reported, so machine noise hits every arm alike. Two rates per arm:

* end to end: new frames / the collect call's seconds, worker start-up (process spawn, imports,
  env creation) included; a short block pays it in full, a long collection once.
* steady: the same with the start-up taken out (``CollectResult.startup_seconds``, until the
  first worker had built its env): stepping, compressing, writing, the last write's wait.

Worker CPU is the CPU time of the block's child processes (the collector's workers, or the
raw arm's process; imports included) per frame: unlike the wall-clock rates it hardly moves
with the machine's load, so the arms' differences in it are what writing costs. Bytes/frame is
the episode files' size over their frames. Then every codec compresses and decompresses whole
episodes of the frames the raw arm plays, timed in CPU time (microseconds per frame, and as a
fraction of one env step's CPU time in the raw arm).

    python scripts/bench_collector.py                      # envpool CarRacing-v3, W=1, 4 arms
    python scripts/bench_collector.py --backend gymnasium --workers 1 2 4 --arms new
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from envs import EnvSpec, PolicySpec, collect, make_env, play_episode
from worldvae.data import episode_seed
from worldvae.data.codecs import npy_bytes, zstandard_module
from worldvae.precision import machine_summary

ARMS = {  # name: (codec, writer thread)
    "old": ("zlib", False),
    "thread-zlib": ("zlib", True),
    "inline-zstd": ("zstd", False),
    "new": ("zstd", True),
}


def _play(env_id: str, n_episodes: int, max_steps: int, backend: str) -> list[np.ndarray]:
    env = make_env(EnvSpec(env_id, max_episode_steps=max_steps, backend=backend))
    policy = PolicySpec("random").build(env.action_space)
    frames = [play_episode(env, policy, episode_seed(0, i)).frames for i in range(n_episodes)]
    env.close()
    return frames


def _children_cpu() -> float:
    """CPU seconds of this process's finished (waited-for) child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _raw_play(
    env_id: str, n_episodes: int, max_steps: int, backend: str
) -> tuple[float, float, int]:
    env = make_env(EnvSpec(env_id, max_episode_steps=max_steps, backend=backend))
    policy = PolicySpec("random").build(env.action_space)
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    for i in range(n_episodes):
        n += play_episode(env, policy, episode_seed(0, i)).frames.shape[0]
    rate, step_cpu = n / (time.perf_counter() - start), (time.process_time() - cpu) / n
    env.close()
    return rate, step_cpu, n


def raw_block(
    env_id: str, n_episodes: int, max_steps: int, backend: str
) -> tuple[float, float, float]:
    """One env playing the collector's first episodes (same seeds), no writing: (frames/s,
    the process's CPU seconds per frame (imports included), CPU seconds per step alone).

    Runs in a fresh process, like a collector worker, so both start from the same state.
    """
    cpu = _children_cpu()
    with mp.get_context("spawn").Pool(1) as pool:
        rate, step_cpu, n_frames = pool.apply(_raw_play, (env_id, n_episodes, max_steps, backend))
    return rate, (_children_cpu() - cpu) / n_frames, step_cpu


def collector_block(
    env_id: str, workers: int, episodes: int, max_steps: int, backend: str, arm: str
) -> tuple[float, float, float, float]:
    """One collection: (end-to-end frames/s, steady frames/s, the workers' CPU seconds per
    frame, bytes per frame on disk)."""
    codec, background = ARMS[arm]
    cpu = _children_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        r = collect(
            tmp,
            EnvSpec(env_id, max_episode_steps=max_steps, backend=backend),
            n_episodes=episodes,
            n_workers=workers,
            progress=False,
            codec=codec,
            background_writes=background,
        )
        size = sum(p.stat().st_size for p in (Path(tmp) / "episodes").glob("ep_*.npz"))
    steady = r.steady_frames_per_second or float("nan")
    worker_cpu = (_children_cpu() - cpu) / r.new_frames
    return r.frames_per_second, steady, worker_cpu, size / r.new_frames


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    """Codec name: (compress, decompress) of a whole ``.npy`` byte string."""
    zstd = zstandard_module()
    out: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        "zlib 6 (old)": (lambda b: zlib.compress(b, 6), zlib.decompress),
        "zlib 1": (lambda b: zlib.compress(b, 1), zlib.decompress),
    }
    for level in (1, 2, 3):
        c = zstd.ZstdCompressor(level=level, write_checksum=True)
        out[f"zstd {level}" + (" (new)" if level == 3 else "")] = (
            c.compress,
            zstd.ZstdDecompressor().decompress,
        )
    try:
        import lz4.frame  # not a dependency: measured where it is installed

        out["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    except ModuleNotFoundError:
        print("lz4 not installed: pip install lz4 to measure it too")
    out["none"] = (bytes, bytes)
    return out


def codec_table(episodes: list[np.ndarray], rounds: int, step_cpu: float) -> None:
    """Compress and decompress every episode's frames with each codec, alternating codecs
    within each round, timed in this thread's CPU time; print medians, per frame and against
    ``step_cpu``, the CPU seconds of one env step."""
    blobs = [npy_bytes(f) for f in episodes]
    n_frames = sum(len(f) for f in episodes)
    codecs = _codecs()
    cost: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in codecs}
    size: dict[str, int] = {}
    for _ in range(rounds):
        for name, (compress, decompress) in codecs.items():
            start = time.thread_time()
            packed = [compress(b) for b in blobs]
            middle = time.thread_time()
            for b in packed:
                decompress(b)
            cost[name][0].append((middle - start) / n_frames)
            cost[name][1].append((time.thread_time() - middle) / n_frames)
            size[name] = sum(map(len, packed))
    raw = len(blobs[0]) / len(episodes[0])
    print(
        f"\ncodecs on {n_frames} frames of {episodes[0].shape[1:]}, CPU time, medians; "
        f"one env step: {step_cpu * 1e6:.0f} us CPU"
    )
    print(f"{'':>14} {'compress':>9} {'x step':>7} {'decompress':>11} {'bytes':>7} {'ratio':>6}")
    print(f"{'':>14} {'us/frame':>9} {'':>7} {'us/frame':>11} {'/frame':>7}")
    for name in codecs:
        c, d = (statistics.median(x) for x in cost[name])
        per_frame = size[name] / n_frames
        print(
            f"{name:>14} {c * 1e6:9.1f} {c / step_cpu:7.3f} {d * 1e6:11.1f} "
            f"{per_frame:7.0f} {raw / per_frame:6.1f}"
        )


def report(
    args: argparse.Namespace,
    raw: list[tuple[float, float, float]],
    runs: dict[tuple[str, int], list[tuple[float, float, float, float]]],
    cores: int,
) -> None:
    """The table of medians: each arm's rates against the raw env's, CPU and bytes per frame."""
    raw_rate, raw_cpu, _ = (statistics.median(x) for x in zip(*raw, strict=True))
    print(
        f"\n{args.env} on {args.backend}, {cores} cores, {args.episodes} episodes of "
        f"{args.max_episode_steps} steps per block and worker, {args.rounds} rounds, medians; "
        "x raw: against min(W, cores) x the raw rate"
    )
    print(
        f"{'':>17} {'end to end':>18} {'steady (no start-up)':>22} {'worker CPU':>11} {'bytes':>7}"
    )
    print(
        f"{'':>17} {'frames/s':>9} {'x raw':>8} {'frames/s':>13} {'x raw':>8} "
        f"{'ms/frame':>11} {'/frame':>7}"
    )
    print(f"{'raw 1 env':>17} {raw_rate:9.0f} {1.0:8.2f} {'':>13} {'':>8} {raw_cpu * 1e3:11.3f}")
    for (arm, w), results in runs.items():
        e2e, steady, cpu, per_frame = (statistics.median(x) for x in zip(*results, strict=True))
        linear = min(w, cores) * raw_rate
        print(
            f"{f'{arm} W={w}':>17} {e2e:9.0f} {e2e / linear:8.2f} {steady:13.0f} "
            f"{steady / linear:8.2f} {cpu * 1e3:11.3f} {per_frame:7.0f}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--env", default="CarRacing-v3")
    p.add_argument("--backend", default="envpool", choices=["gymnasium", "envpool"])
    p.add_argument("--episodes", type=int, default=12, help="episodes per block and worker")
    p.add_argument("--max-episode-steps", type=int, default=200)
    p.add_argument("--workers", type=int, nargs="+", default=[1])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    print(machine_summary(), flush=True)
    cores = len(os.sched_getaffinity(0))
    env_args = (args.max_episode_steps, args.backend)
    blocks = [(arm, w) for w in args.workers for arm in args.arms]
    raw: list[tuple[float, float, float]] = []
    runs: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {b: [] for b in blocks}
    for r in range(args.rounds):
        raw.append(raw_block(args.env, args.episodes, *env_args))
        for arm, w in blocks if r % 2 == 0 else blocks[::-1]:  # no arm always runs first
            n = args.episodes * min(w, cores)
            runs[arm, w].append(collector_block(args.env, w, n, *env_args, arm))
        print(
            f"round {r + 1} (end to end / steady frames/s): raw {raw[-1][0]:.0f}, "
            + ", ".join(
                f"{a} W={w} {runs[a, w][-1][0]:.0f}/{runs[a, w][-1][1]:.0f}" for a, w in blocks
            ),
            flush=True,
        )
    report(args, raw, runs, cores)
    step_cpu = statistics.median(x[2] for x in raw)
    codec_table(_play(args.env, 4, *env_args), args.rounds, step_cpu)


if __name__ == "__main__":
    main()
