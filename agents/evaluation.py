"""Seeded evaluation of agent bundles, with an optional video of what the agent sees."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agents.bundle import load_bundle
from agents.environments import build_vec_env, evaluate_policy_seeded
from envs.backends import warn_on_backend_mismatch
from envs.factory import resolve_spec
from envs.latent import VecLatentObservation
from worldvae.atomic import atomic_path


@dataclass
class EvalResult:
    returns: np.ndarray
    video: Path | None

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())


def write_video(path: Path, frames: list[np.ndarray], fps: int = 30, scale: int = 4) -> Path:
    """Write RGB (or one-channel) uint8 frames ``(H, W, C)`` as an MP4 file, atomically."""
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(
            str(tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, (w * scale, h * scale)
        )
        if not writer.isOpened():
            raise OSError(f"could not open a video writer for {path}")
        for f in frames:
            if f.shape[2] == 1:
                f = np.repeat(f, 3, axis=2)
            big = cv2.resize(f, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)
            writer.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
        writer.release()
    return path


def evaluate_bundle(
    path: str | Path,
    n_episodes: int = 10,
    seed: int | None = None,
    video: str | Path | None = None,
    device: str = "auto",
    deterministic: bool | None = None,
    backend: str | None = None,
    workers: int = 1,
    which: str = "final",
) -> EvalResult:
    """Returns of an agent bundle on ``n_episodes`` seeded episodes.

    ``which`` is ``"final"`` (the policy at the end of training) or ``"best"`` (the policy of
    its best periodic evaluation).

    ``deterministic`` defaults to the bundle's ``deterministic_eval`` (the policy's mode
    action; False samples actions, reproducibly seeded).

    ``seed`` defaults to the bundle's evaluation seed, so every agent of a comparison meets the
    same episodes. ``video`` writes the first episode as MP4; for latent agents each frame is
    the env's frame beside the VAE's reconstruction of it (what the agent sees).
    ``backend`` plays the episodes on another backend than the agent trained on, e.g.
    ``"gymnasium"`` to score an envpool-trained CarRacing driver on gymnasium's own tracks
    (with a warning that the frames differ a little). ``workers > 1`` splits the episodes
    over that many processes (same seeds, same returns).
    """
    if workers > 1 and n_episodes > 1 and video is None:
        return _evaluate_in_processes(
            path, n_episodes, seed, device, deterministic, backend, workers, which
        )
    bundle = load_bundle(path, device=device, which=which)
    cfg = bundle.config
    if backend is not None:
        chosen = resolve_spec(cfg.env.replace(backend=backend))
        warn_on_backend_mismatch(cfg.env.backend, chosen.backend, f"the agent {path}")
        cfg = dataclasses.replace(cfg, env=chosen)
    venv = build_vec_env(cfg, 1, 0, bundle.model, memory=bundle.memory)
    frames: list[np.ndarray] = []

    channels = bundle.config.env.channels

    def record(env: Any, obs: np.ndarray) -> None:
        if len(frames) > 5000:
            return
        if isinstance(env, VecLatentObservation):
            assert env.last_frames is not None and bundle.model is not None
            frame = env.last_frames[0]
            frames.append(np.concatenate([frame, bundle.model.reconstruct(frame)], axis=1))
        else:  # pixel (maybe frame-stacked along channels) or encoder agents: the newest frame
            frames.append(np.asarray(obs[0][..., -channels:], np.uint8))

    start = bundle.config.eval_seed if seed is None else seed
    det = bundle.config.deterministic_eval if deterministic is None else deterministic
    first = (
        evaluate_policy_seeded(bundle.agent, venv, 1, start, det, on_step=record)
        if video
        else np.zeros(0)
    )
    rest = evaluate_policy_seeded(
        bundle.agent, venv, n_episodes - len(first), start + len(first), det
    )
    venv.close()
    out = write_video(Path(video), frames) if video and frames else None
    return EvalResult(np.concatenate([first, rest]), out)


def _evaluate_slice(
    path: str,
    n_episodes: int,
    seed: int,
    device: str,
    deterministic: bool | None,
    backend: str | None,
    which: str,
) -> np.ndarray:
    import torch

    torch.set_num_threads(1)  # the processes share the cores
    return evaluate_bundle(
        path,
        n_episodes,
        seed,
        device=device,
        deterministic=deterministic,
        backend=backend,
        which=which,
    ).returns


def _evaluate_in_processes(
    path: str | Path,
    n_episodes: int,
    seed: int | None,
    device: str,
    deterministic: bool | None,
    backend: str | None,
    workers: int,
    which: str,
) -> EvalResult:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    start = load_bundle(path, device="cpu", which=which).config.eval_seed if seed is None else seed
    bounds = np.linspace(0, n_episodes, min(workers, n_episodes) + 1).astype(int)
    with ProcessPoolExecutor(len(bounds) - 1, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(
                _evaluate_slice,
                str(path),
                int(b - a),
                start + int(a),
                device,
                deterministic,
                backend,
                which,
            )
            for a, b in itertools.pairwise(bounds)
        ]
        returns = np.concatenate([f.result() for f in futures])
    return EvalResult(returns, None)
