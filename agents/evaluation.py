"""Seeded evaluation of agent bundles, and videos of an agent playing (MP4 or GIF)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from agents.agent_config import AgentConfig
from agents.bundle import Bundle, load_bundle, read_agent_info
from agents.environments import build_vec_env, evaluate_policy_seeded
from envs.backends import BackendMismatchWarning, warn_on_backend_mismatch
from envs.factory import resolve_spec
from worldvae.envspec import EnvSpec
from worldvae.vae.inference import runtime_available
from worldvae.video import as_rgb, check_video_path, fit_width, gif_writer, put_label, write_video
from worldvae.workers import check_local_workers, parent_bound_pool

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class VideoOptions:
    """How an episode is filmed: ``width`` pixels wide (None: the env's own rendering size),
    one frame in ``every``, at most ``max_frames`` frames, played at ``fps / every`` frames a
    second (so that one frame in two plays at the same speed)."""

    width: int | None = None
    every: int = 1
    max_frames: int | None = 5000
    fps: float = 30.0

    def __post_init__(self) -> None:
        if self.width is not None and self.width < 16:
            raise ValueError(f"VideoOptions.width must be >= 16 pixels, got {self.width}")
        if self.every < 1:
            raise ValueError(f"VideoOptions.every must be >= 1, got {self.every}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"VideoOptions.max_frames must be >= 1, got {self.max_frames}")


@dataclass(frozen=True)
class EpisodeVideo:
    """A filmed episode: the file, its return, and its frames' count and ``(width, height)``."""

    path: Path
    episode_return: float
    n_frames: int
    size: tuple[int, int]


class _Filmstrip:
    """The env's rendered frames (``rgb_array``, not the agent's observation) before each action,
    with the return so far of each."""

    def __init__(self, options: VideoOptions):
        self.options = options
        self.frames: list[np.ndarray] = []
        self.so_far: list[float] = []
        self.steps = 0

    def __call__(self, venv: VecEnv, return_so_far: float) -> None:
        t, self.steps = self.steps, self.steps + 1
        cap = self.options.max_frames
        if t % self.options.every or (cap is not None and len(self.frames) >= cap):
            return
        image = venv.get_images()[0]
        if image is None:
            raise ValueError(
                "the env renders no rgb_array frames, so there is no video of it; evaluate "
                "without --video"
            )
        self.frames.append(fit_width(as_rgb(image), self.options.width))
        self.so_far.append(return_so_far)

    def write(self, path: Path, episode_return: float) -> EpisodeVideo:
        """Write the frames, each labelled with the return so far and the episode's."""
        frames = [
            put_label(f, f"return {r:.1f} of {episode_return:.1f}")
            for f, r in zip(self.frames, self.so_far, strict=True)
        ]
        write_video(path, frames, fps=self.options.fps / self.options.every)
        h, w = frames[0].shape[:2]
        return EpisodeVideo(path, episode_return, len(frames), (w, h))


def film_episode(
    agent: Any,
    venv: VecEnv,
    path: str | Path,
    seed: int,
    deterministic: bool = True,
    options: VideoOptions | None = None,
) -> EpisodeVideo:
    """Play one episode of ``venv`` (one env) from ``seed`` and write it to ``path`` (``.mp4``
    or ``.gif``): the env as it renders, labelled with the return.

    Raises:
        ValueError: another extension, or an env that renders no ``rgb_array`` frames.
        ImportError: a GIF without Pillow or imageio.
    """
    path = check_video_path(path)
    if path.suffix.lower() == ".gif":
        gif_writer()  # refuse before the episode is played
    strip = _Filmstrip(options or VideoOptions())
    returns = evaluate_policy_seeded(agent, venv, 1, seed, deterministic, before_action=strip)
    return strip.write(path, float(returns[0]))


def playable_runtime(bundle: Bundle) -> str:
    """The runtime the bundle's agent plays with here: the one it trained with, or ``"auto"``
    where that cannot run (not installed, or the model on CUDA). The runtimes give the same
    latents within float tolerance (``worldvae.vae.inference.TOLERANCE``)."""
    runtime = bundle.config.runtime
    if runtime in ("auto", "torch"):
        return runtime
    device = getattr(bundle.model, "device", None)
    if getattr(device, "type", "cpu") == "cpu" and runtime_available(runtime):
        return runtime
    logger.warning("the agent trained on the %s runtime, absent here: encoding on auto", runtime)
    return "auto"


def _bundle_env(
    path: str | Path, device: str, which: str, backend: str | None
) -> tuple[Bundle, VecEnv]:
    """The bundle's ``which`` policy and one env of its observations, on ``backend`` if given
    (with a warning when the frames differ from those it trained on)."""
    bundle = load_bundle(path, device=device, which=which)
    cfg = dataclasses.replace(bundle.config, runtime=playable_runtime(bundle))
    cfg = dataclasses.replace(cfg, env=_env_on(cfg, backend, path))
    return bundle, build_vec_env(cfg, 1, 0, bundle.model, memory=bundle.memory)


def _env_on(cfg: AgentConfig, backend: str | None, path: str | Path) -> EnvSpec:
    """The agent's env spec on ``backend`` (its own when None), with a warning when its frames
    differ from those the agent trained on."""
    if backend is None:
        return cfg.env
    chosen = resolve_spec(cfg.env.replace(backend=backend))
    warn_on_backend_mismatch(cfg.env.backend, chosen.backend, f"the agent {path}")
    return chosen


def record_episode_video(
    bundle_dir: str | Path,
    path: str | Path,
    seed: int | None = None,
    *,
    which: str = "final",
    backend: str | None = None,
    deterministic: bool | None = None,
    device: str = "cpu",
    options: VideoOptions | None = None,
) -> EpisodeVideo:
    """Film the agent of ``bundle_dir`` playing one episode from ``seed`` (default its
    evaluation seed) into ``path``, an MP4 or a GIF by extension (see :func:`film_episode`).

    ``which``, ``backend`` and ``deterministic`` are :func:`evaluate_bundle`'s; ``options``
    sizes the video (a small GIF for a report: ``VideoOptions(width=200, every=2,
    max_frames=300)``).

    Example:
        >>> clip = record_episode_video("runs/agents/a", "drive.gif", backend="gymnasium",
        ...                             options=VideoOptions(width=200, every=2))  # doctest: +SKIP
        >>> clip.episode_return, clip.n_frames  # doctest: +SKIP
        (812.4, 250)
    """
    check_video_path(path)
    bundle, venv = _bundle_env(bundle_dir, device, which, backend)
    try:
        start = bundle.config.eval_seed if seed is None else seed
        det = bundle.config.deterministic_eval if deterministic is None else deterministic
        return film_episode(bundle.agent, venv, path, start, det, options)
    finally:
        venv.close()


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
    same episodes. ``video`` writes the first episode as an MP4 or a GIF, by its extension:
    the env's own rendered frames (not the agent's smaller observation), with the return
    written on them (:func:`film_episode`).
    ``backend`` plays the episodes on another backend than the agent trained on, e.g.
    ``"gymnasium"`` to score an envpool-trained CarRacing driver on gymnasium's own tracks
    (with a warning that the frames differ a little). ``workers > 1`` splits the episodes
    over that many processes (same seeds, same returns).
    """
    check_local_workers(workers)
    if video is not None:
        check_video_path(video)
    if workers > 1 and n_episodes > 1 and video is None:
        return _evaluate_in_processes(
            path, n_episodes, seed, device, deterministic, backend, workers, which
        )
    bundle, venv = _bundle_env(path, device, which, backend)
    start = bundle.config.eval_seed if seed is None else seed
    det = bundle.config.deterministic_eval if deterministic is None else deterministic
    first: list[float] = []
    clip = None
    if video:
        clip = film_episode(bundle.agent, venv, video, start, det)
        first = [clip.episode_return]
    rest = evaluate_policy_seeded(
        bundle.agent, venv, n_episodes - len(first), start + len(first), det
    )
    venv.close()
    return EvalResult(np.concatenate([first, rest]), clip.path if clip else None)


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
    with warnings.catch_warnings():  # the parent warned once for all its processes
        warnings.simplefilter("ignore", BackendMismatchWarning)
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
    cfg = AgentConfig.from_dict(read_agent_info(Path(path))["agent"])
    _env_on(cfg, backend, path)  # warns here once, not once per process
    start = cfg.eval_seed if seed is None else seed
    bounds = np.linspace(0, n_episodes, min(workers, n_episodes) + 1).astype(int)
    with parent_bound_pool(len(bounds) - 1) as pool:
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
