"""Parallel, resumable rollout collection into an episode dataset.

Each worker process builds its env once, then plays episodes whose indices the parent hands
out. Episode ``i`` is reset with ``episode_seed(seed, i)`` and written atomically as
``episodes/ep_{i:07d}.npz`` by the worker, so:

* the same command gives the same episodes, whatever the number of workers;
* a killed run leaves only whole episodes, and re-running the same command skips them.

With a frame budget, the dataset is the shortest prefix of episodes ``0..k`` whose frames
reach the budget; episodes past ``k`` that finished early are discarded, so the result does
not depend on which worker was fastest.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from envs.cluster import connect_ray, uses_ray
from envs.factory import env_options as default_env_options
from envs.factory import make_env_from_options, resolve_env_options
from envs.policies import PolicyFactory, PolicySpec
from envs.registry import check_env_id
from envs.state import state_names, state_reader
from worldvae.atomic import remove_stale_temporaries
from worldvae.config_fields import check_ranges, option
from worldvae.data.episodes import Episode
from worldvae.data.manifest import (
    EPISODES_DIR,
    Manifest,
    episode_index,
    episode_seed,
)
from worldvae.data.writer import open_dataset_dir, write_dataset_episode
from worldvae.versions import library_versions
from worldvae.workers import exit_with_parent, get_while_parent_lives

logger = logging.getLogger(__name__)
_PROGRESS_EVERY = 64  # steps between progress messages from a worker


class WorkerError(RuntimeError):
    """A worker process failed; the message ends with the worker's own error line.

    ``details`` holds the worker's whole traceback (shown by ``worldvae --debug``).
    """

    def __init__(self, what: str, worker_traceback: str):
        lines = [line for line in worker_traceback.strip().splitlines() if line.strip()]
        super().__init__(f"{what}: {lines[-1] if lines else 'no message'}")
        self.details = worker_traceback


@dataclass(frozen=True)
class CollectConfig:
    """The settings of a collection, as :func:`collect` takes them (``worldvae collect``'s
    flags are made from these fields). Exactly one of the two budgets is given."""

    n_episodes: int | None = option(None, "number of episodes", 1, 10**8, flag="--episodes")
    n_frames: int | None = option(None, "number of frames to reach", 1, 10**11, flag="--frames")
    n_workers: int = option(1, "worker processes", 1, 256, flag="--workers")
    policy: str = option(
        "random",
        "random | brownian | sb3:ALGO:PATH | agent:RUN (a trained agent, in its own env) | "
        "best-agent:RUN (its best evaluated policy)",
    )
    seed: int = option(0, "master seed", 0, 2**32 - 1)
    compress: bool = option(True, "zlib-compress the episode files", flag="--no-compress")
    record_state: bool | None = option(
        None,
        "store the env's true state per frame (default: on for classic control, MiniGrid and "
        "CarRacing, off for other envs)",
    )

    def __post_init__(self) -> None:
        if (self.n_episodes is None) == (self.n_frames is None):
            raise ValueError("give exactly one of n_episodes or n_frames")
        check_ranges(self)


@dataclass(frozen=True)
class CollectResult:
    """What a collect call did."""

    out_dir: Path
    new_episodes: int
    new_frames: int
    total_episodes: int
    total_frames: int
    seconds: float

    @property
    def frames_per_second(self) -> float:
        return self.new_frames / self.seconds if self.seconds > 0 else 0.0


def play_episode(
    env: Any,
    policy: Any,
    seed: int,
    progress: Any = None,
    state_fn: Callable[[Any], np.ndarray] | None = None,
) -> Episode:
    """Play one episode of ``env`` with ``policy`` from ``reset(seed=seed)``.

    ``state_fn(env)`` (see :func:`envs.state.state_reader`) records the env's true state
    beside each frame as the episode's ``states`` ``(T + 1, S)``.
    """
    policy.reset(seed)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, terminated, truncated = [obs], [], [], [], []
    states = [state_fn(env)] if state_fn is not None else []
    while True:
        action = policy.act(obs)
        obs, reward, term, trunc, _ = env.step(action)
        if state_fn is not None:
            states.append(state_fn(env))
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        if progress is not None and len(rewards) % _PROGRESS_EVERY == 0:
            progress(_PROGRESS_EVERY)
        if term or trunc:
            break
    if progress is not None:
        progress(len(rewards) % _PROGRESS_EVERY + 1)
    return Episode(
        frames=np.stack(frames),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        seed=seed,
        states=np.stack(states).astype(np.float32) if state_fn is not None else None,
    )


def _worker(
    env_id: str,
    options: dict[str, Any],
    policy: PolicyFactory,
    master_seed: int,
    dataset_dir: str,
    compress: bool,
    tasks: mp.Queue,
    results: mp.Queue,
    record_state: bool = False,
    parent_pid: int | None = None,
    torch_threads: int = 1,
) -> None:
    exit_with_parent(parent_pid or os.getppid())  # never outlive the collector
    try:
        env = make_env_from_options(env_id, options)
        actor = policy.build(env.action_space, env.observation_space)
        if "torch" in sys.modules:  # a policy with a network: the workers share the cores
            sys.modules["torch"].set_num_threads(torch_threads)
        state_fn = state_reader(env_id) if record_state else None
    except Exception:
        results.put(("error", -1, traceback.format_exc()))
        return
    while (index := get_while_parent_lives(tasks, parent_pid or os.getppid())) is not None:
        try:
            episode = play_episode(
                env,
                actor,
                episode_seed(master_seed, index),
                lambda n: results.put(("steps", index, n)),
                state_fn,
            )
            n_frames = write_dataset_episode(dataset_dir, index, episode, compress)
            results.put(("done", index, n_frames))
        except Exception:
            results.put(("error", index, traceback.format_exc()))
            return
    env.close()


def collection_manifest(
    env_id: str,
    env_options: dict[str, Any] | None,
    policy: str | PolicyFactory,
    seed: int,
    record_state: bool | None,
) -> tuple[Manifest, PolicyFactory]:
    """Check a collection's settings and describe it: the manifest and the parsed policy.

    The env options are resolved (recommended options filled in), the policy is built once on
    a probe env (a bad policy fails here, not in a worker), and the true state is recorded
    where the env has a known one (``record_state=None``).
    """
    check_env_id(env_id)
    options = resolve_env_options(env_id, default_env_options(**dict(env_options or {})))
    names = state_names(env_id)
    if options["backend"] == "envpool" and names is not None:  # read from gymnasium objects
        if record_state:
            raise ValueError(
                f"the true state of {env_id} is read from gymnasium's env objects, which "
                "envpool's C++ envs do not expose; collect with --backend gymnasium"
            )
        names = None
    if record_state is None:
        record_state = names is not None
    elif record_state and names is None:
        state_reader(env_id)  # raises, naming the envs whose state is known
    spec = PolicySpec.parse(policy) if isinstance(policy, str) else policy
    probe = make_env_from_options(env_id, options)
    frame_shape = tuple(int(x) for x in probe.observation_space.shape or ())
    spec.build(probe.action_space, probe.observation_space)
    probe.close()
    manifest = Manifest(
        env_id=env_id,
        env_options=options,
        frame_shape=frame_shape,  # type: ignore[arg-type]
        policy=spec.to_dict(),
        seed=seed,
        versions=library_versions(),
        state_names=list(names) if record_state and names is not None else None,
    )
    return manifest, spec


def drop_beyond_prefix(
    episodes_dir: Path, last: int, before: dict[int, int], done: dict[int, int]
) -> None:
    """Delete the episodes this run finished past index ``last`` (some while the workers were
    stopping): they are not part of the dataset. Episodes there before the run are kept."""
    for path in episodes_dir.glob("ep_*.npz"):
        index = episode_index(path)
        if index > last and index not in before:
            path.unlink()
            done.pop(index, None)
    remove_stale_temporaries(episodes_dir)


def collect(
    out_dir: str | Path,
    env_id: str,
    *,
    n_episodes: int | None = CollectConfig.n_episodes,
    n_frames: int | None = CollectConfig.n_frames,
    n_workers: int = CollectConfig.n_workers,
    policy: str | PolicyFactory = CollectConfig.policy,
    seed: int = CollectConfig.seed,
    env_options: dict[str, Any] | None = None,
    compress: bool = CollectConfig.compress,
    overwrite: bool = False,
    progress: bool = True,
    record_state: bool | None = CollectConfig.record_state,
    cluster: str = "local",
) -> CollectResult:
    """Collect ``n_episodes`` episodes or at least ``n_frames`` frames into ``out_dir``.

    The settings after ``env_id`` are those of :class:`CollectConfig` (defaults, ranges).

    Args:
        out_dir: dataset directory; re-running into the same directory resumes.
        env_id: gymnasium id (see :func:`envs.make_env`).
        n_episodes: number of episodes (exclusive with ``n_frames``).
        n_frames: number of stored frames to reach (each episode of T steps stores T + 1).
        n_workers: worker processes.
        policy: ``"random"``, ``"brownian"``, ``"sb3:ALGO:PATH"``, a :class:`PolicySpec`, or
            another policy factory (``agents.collection.AgentPolicySpec``: a trained agent).
        seed: master seed; episode seeds derive from it.
        env_options: ``make_env`` keyword arguments, as made by :func:`envs.factory.env_options`.
        compress: zlib-compress episode files (game frames shrink several-fold).
        overwrite: delete what ``out_dir`` holds and start afresh.
        progress: show a progress bar with frames/s.
        record_state: store the env's true state per frame (``states`` in each episode, names
            in the manifest; see :mod:`envs.state`). None: on for envs with a known state
            (classic control, MiniGrid, CarRacing), off otherwise. True on an env without a
            known state is an error.
        cluster: ``"local"`` (worker processes), or ``"ray"`` / a Ray address: each episode is
            a Ray task (one CPU; ``n_workers`` at once) writing the same file as a local worker
            would, so a Ray collection equals a local one for the same seed and resumes the
            same way (see :mod:`envs.ray_collect`).
    """
    on_ray = uses_ray(cluster)
    if on_ray:  # an unreachable or malformed cluster is refused before anything is written
        connect_ray(cluster)
    CollectConfig(  # the budget, the ranges
        n_episodes=n_episodes, n_frames=n_frames, n_workers=n_workers, seed=seed
    )
    budget = n_episodes or n_frames or 0  # exactly one of them is given, and >= 1
    manifest, spec = collection_manifest(env_id, env_options, policy, seed, record_state)
    options, record_state = manifest.env_options, manifest.state_names is not None
    out = Path(out_dir)
    done = open_dataset_dir(out, manifest, overwrite)
    episodes_dir = out / EPISODES_DIR

    def enough() -> int | None:
        """Highest index needed once the budget is met by a complete prefix, else None."""
        if n_episodes is not None:
            return n_episodes - 1 if all(i in done for i in range(n_episodes)) else None
        total, i = 0, 0
        while i in done:
            total += done[i]
            if total >= budget:
                return i
            i += 1
        return None

    todo = (i for i in range(10**9 if n_episodes is None else n_episodes) if i not in done)
    ctx = mp.get_context("spawn")
    tasks: mp.Queue = ctx.Queue()
    results: mp.Queue = ctx.Queue()
    start = time.perf_counter()
    before = dict(done)
    bar = tqdm(
        total=n_frames,
        initial=sum(done.values()) if n_frames is not None else 0,
        unit="frame",
        unit_scale=True,
        desc=f"collect {env_id}",
        disable=not progress,
        dynamic_ncols=True,
    )
    workers = []
    in_flight: set[int] = set()
    try:
        if on_ray:
            if enough() is None:
                from envs.ray_collect import play_on_ray

                def on_done(index: int, n: int) -> bool:
                    done[index] = n
                    if n_frames is not None:
                        bar.update(n)
                    bar.set_postfix(episodes=len(done), refresh=False)
                    return enough() is None

                play_on_ray(
                    cluster, env_id, options, spec, seed, out, todo, on_done,
                    n_workers, compress, bool(record_state),
                )  # fmt: skip
        else:
            if enough() is None:
                workers = [
                    ctx.Process(
                        target=_worker,
                        args=(
                            env_id,
                            options,
                            spec,
                            seed,
                            str(out),
                            compress,
                            tasks,
                            results,
                            bool(record_state),
                            os.getpid(),
                            max(1, (os.cpu_count() or 1) // n_workers),
                        ),
                        daemon=True,
                    )
                    for _ in range(n_workers)
                ]
                for w in workers:
                    w.start()
                for _ in range(2 * n_workers):
                    index = next(todo, None)
                    if index is not None:
                        tasks.put(index)
                        in_flight.add(index)
            while enough() is None:
                try:
                    kind, index, payload = results.get(timeout=5.0)
                except queue.Empty:
                    dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                    if dead or not in_flight:
                        raise RuntimeError(
                            f"collector worker died (exit codes {dead}); see its output above"
                        ) from None
                    continue
                if kind == "error":
                    raise WorkerError(f"collector worker failed on episode {index}", payload)
                if kind == "steps":
                    bar.update(payload)
                    continue
                done[index] = payload
                in_flight.discard(index)
                bar.set_postfix(episodes=len(done), refresh=False)
                if enough() is None and (nxt := next(todo, None)) is not None:
                    tasks.put(nxt)
                    in_flight.add(nxt)
    finally:
        for _ in workers:
            tasks.put(None)
        for w in workers:
            w.join(timeout=0.5 if in_flight else 30)
            if w.is_alive():
                w.terminate()
                w.join()
        bar.close()
    last = enough()
    if last is None:  # only reachable when the loop above raised
        raise RuntimeError("collection stopped before its budget was met")
    drop_beyond_prefix(episodes_dir, last, before, done)
    new = {i: n for i, n in done.items() if i not in before}
    return CollectResult(
        out_dir=out,
        new_episodes=len(new),
        new_frames=sum(new.values()),
        total_episodes=len(done),
        total_frames=sum(done.values()),
        seconds=time.perf_counter() - start,
    )
