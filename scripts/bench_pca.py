"""PCA codes side by side: two worker processes, as ``compare --workers 2`` runs them.

    python scripts/bench_pca.py [--rounds 4] [--steps 300]

Each worker keeps to one torch thread (as a comparison's workers do) and steps a
``VecLatentObservation`` over 8 envpool CarRacing-v3 envs whose codes come from a PCA of the
same size as the World Models V (32 components of 64x64 RGB frames). Arms, alternated in
blocks, both workers on the same arm at once:

* ``numpy``: the projection through numpy's ``@`` (OpenBLAS, its own thread pool);
* ``torch``: :meth:`worldvae.pca.PCAEncoder.encode`, the projection on torch's threads;
* ``raw``: the env alone (no codes), the ceiling.

The PCA is fitted on 2,000 frames of random actions. Prints the CPU, then the medians over
rounds of each worker's env-steps/s and their ratios to ``raw``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np

ENV_ID = "CarRacing-v3"
OPTIONS: dict[str, Any] = {"frame_size": (64, 64), "crop": (0, 12, 0, 0), "frame_skip": 2}
N_ENVS = 8
ARMS = ("raw", "numpy", "torch")


def numpy_codes(pca: Any) -> Any:
    """A PCA whose codes are computed by numpy's BLAS (the projection before this change)."""
    from worldvae.pca import PCAEncoder

    class NumpyPCA(PCAEncoder):
        def encode(self, frames: np.ndarray, sample: bool = False) -> np.ndarray:
            x, single = self._flat(frames)
            z = ((x - self.mean) @ self.components.T) / self.scale
            return z[0] if single else z

    return NumpyPCA(pca.config, pca.mean, pca.components, pca.scale)


def fitted_pca() -> Any:
    from envs.envpool_env import EnvpoolVecEnv
    from worldvae.pca import fit_pca

    venv = EnvpoolVecEnv(ENV_ID, N_ENVS, seed=1, **OPTIONS)
    rng = np.random.default_rng(0)
    frames = [venv.reset()]
    for _ in range(249):
        frames.append(venv.step(rng.uniform(-1, 1, (N_ENVS, 3)).astype(np.float32))[0])
    venv.close()
    return fit_pca(np.concatenate(frames), 32)


def worker(pca: Any, jobs: Any, results: Any) -> None:
    import torch

    from envs import VecLatentObservation
    from envs.envpool_env import EnvpoolVecEnv

    torch.set_num_threads(1)  # as a comparison's worker
    arms = {
        "raw": EnvpoolVecEnv(ENV_ID, N_ENVS, seed=0, **OPTIONS),
        "numpy": VecLatentObservation(
            EnvpoolVecEnv(ENV_ID, N_ENVS, seed=0, **OPTIONS), numpy_codes(pca)
        ),
        "torch": VecLatentObservation(EnvpoolVecEnv(ENV_ID, N_ENVS, seed=0, **OPTIONS), pca),
    }
    actions = np.random.default_rng(0).uniform(-1, 1, (N_ENVS, 3)).astype(np.float32)
    for venv in arms.values():
        venv.reset()
        venv.step(actions)
    results.put("ready")
    while (job := jobs.get()) is not None:
        name, n_steps = job
        venv = arms[name]
        t = time.perf_counter()
        for _ in range(n_steps):
            venv.step(actions)
        results.put(n_steps * N_ENVS / (time.perf_counter() - t))
    for venv in arms.values():
        venv.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4, help="alternated rounds (default 4)")
    parser.add_argument("--steps", type=int, default=300, help="VecEnv steps a block (300)")
    args = parser.parse_args()

    from worldvae.precision import machine_summary

    print(machine_summary())
    pca = fitted_pca()
    ctx = mp.get_context("spawn")
    pipes = [(ctx.Queue(), ctx.Queue()) for _ in range(2)]
    procs = [ctx.Process(target=worker, args=(pca, j, r)) for j, r in pipes]
    for p in procs:
        p.start()
    for _, r in pipes:
        r.get()
    rates: dict[str, list[float]] = {a: [] for a in ARMS}
    for rnd in range(args.rounds):
        for name in ARMS[rnd % 3 :] + ARMS[: rnd % 3]:
            for j, _ in pipes:
                j.put((name, args.steps))
            rates[name] += [r.get() for _, r in pipes]
    for j, _ in pipes:
        j.put(None)
    for p in procs:
        p.join()
    print(
        f"\n2 workers side by side, one torch thread each, {N_ENVS} envpool envs each; "
        f"{args.rounds} rounds of {args.steps} steps; median env-steps/s per worker"
    )
    raw = statistics.median(rates["raw"])
    for name in ARMS:
        rate = statistics.median(rates[name])
        print(f"{name:>6} {rate:8.0f}  x raw {rate / raw:5.2f}")


if __name__ == "__main__":
    main()
