"""Parallel, resumable rollout collection into an episode dataset.

Each worker process builds its env once, then plays episodes whose indices the parent hands
out. Episode ``i`` is reset with ``episode_seed(seed, i)`` and written atomically as
``episodes/ep_{i:07d}.npz`` by the worker's writer thread (:class:`~worldvae.data.writer.
EpisodeWriter`: the next episode is played while the last one is compressed and written), so:

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from envs.cluster import connect_ray, uses_ray
from envs.factory import make_env, resolve_spec
from envs.policies import PolicyFactory, PolicySpec
from envs.ray_collect import play_on_ray
from envs.rollout import play_episode
from envs.state import state_names, state_reader
from worldvae.atomic import remove_stale_temporaries
from worldvae.config_fields import check_ranges, option
from worldvae.data.manifest import (
    EPISODES_DIR,
    Manifest,
    episode_index,
    episode_seed,
    list_episode_files,
)
from worldvae.data.writer import EpisodeWriter, open_dataset_dir
from worldvae.envspec import EnvSpec
from worldvae.versions import library_versions
from worldvae.workers import (
    check_local_workers,
    children_ignore_sigint,
    exit_with_parent,
    get_while_parent_lives,
)

logger = logging.getLogger(__name__)


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
    compress: bool = option(True, "zstd-compress the episode files", flag="--no-compress")
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
    startup_seconds: float | None = None  # until the first local worker had built its env

    @property
    def frames_per_second(self) -> float:
        return self.new_frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_frames_per_second(self) -> float | None:
        """Frames/s once the first worker runs: ``seconds`` less worker start-up (process
        start, imports, env creation), which a long collection pays once; None on Ray."""
        if self.startup_seconds is None or self.seconds <= self.startup_seconds:
            return None
        return self.new_frames / (self.seconds - self.startup_seconds)


def _report_steps(results: mp.Queue, index: int, n_steps: int) -> None:
    """A worker's progress message: ``n_steps`` more steps of episode ``index`` played."""
    results.put(("steps", index, n_steps))


def _exit_worker(results: mp.Queue) -> None:
    """End a worker process at once, once its messages have reached the pipe to the parent
    (its episodes are on disk already). Python's own teardown of a process that imported
    torch and envpool takes seconds (3 s measured under load, for every collect call), and
    nothing in it is needed. Called outside a child process it returns, ending nothing."""
    if mp.parent_process() is None:
        return None
    results.close()
    results.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _worker(
    env_spec: EnvSpec,
    policy: PolicyFactory,
    master_seed: int,
    dataset_dir: str,
    compress: bool,
    tasks: mp.Queue,
    results: mp.Queue,
    record_state: bool = False,
    parent_pid: int | None = None,
    torch_threads: int = 1,
    codec: str | None = None,
    background_writes: bool = True,
) -> None:
    """Play the episodes handed out on ``tasks`` until a None; report ``("ready", -1, 0)``
    once the env is built, ``("steps", i, n)`` while playing, ``("done", i, n_frames)`` once
    episode ``i`` is on disk, and ``("error", i, traceback)`` on a failure (then stop)."""
    exit_with_parent(parent_pid or os.getppid())  # never outlive the collector
    try:
        env = make_env(env_spec)
        actor = policy.build(env.action_space, env.observation_space)
        if "torch" in sys.modules:  # a policy with a network: the workers share the cores
            sys.modules["torch"].set_num_threads(torch_threads)
        state_fn = state_reader(env_spec.env_id) if record_state else None
        writer = EpisodeWriter(
            dataset_dir,
            compress=compress,
            codec=codec,
            background=background_writes,
            on_written=lambda i, n: results.put(("done", i, n)),
        )
    except Exception:
        results.put(("error", -1, traceback.format_exc()))
        return
    results.put(("ready", -1, 0))
    index = -1  # the episode last handed to this worker
    try:
        while (task := get_while_parent_lives(tasks, parent_pid or os.getppid())) is not None:
            index = task
            writer.check()  # a failed write stops the worker before it plays another episode
            episode = play_episode(
                env,
                actor,
                episode_seed(master_seed, index),
                partial(_report_steps, results, index),
                state_fn,
            )
            writer.submit(index, episode)  # blocks while the writer is behind
        writer.close()  # every episode played is on disk (and reported) before the worker ends
    except Exception:
        results.put(("error", index, traceback.format_exc()))
        return
    env.close()
    _exit_worker(results)


def collection_manifest(
    env: EnvSpec,
    policy: str | PolicyFactory,
    seed: int,
    record_state: bool | None,
) -> tuple[Manifest, PolicyFactory]:
    """Check a collection's settings and describe it: the manifest and the parsed policy.

    The env's backend is resolved, the policy is built once on
    a probe env (a bad policy fails here, not in a worker), and the true state is recorded
    where the env has a known one (``record_state=None``).
    """
    env = resolve_spec(env)
    env_id = env.env_id
    names = state_names(env_id)
    if env.backend == "envpool" and names is not None:  # read from gymnasium objects
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
    probe = make_env(env)
    frame_shape = tuple(int(x) for x in probe.observation_space.shape or ())
    spec.build(probe.action_space, probe.observation_space)
    probe.close()
    manifest = Manifest(
        **env.to_dict(),
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
    for path in list_episode_files(episodes_dir.parent):
        index = episode_index(path)
        if index > last and index not in before:
            path.unlink()
            done.pop(index, None)
    remove_stale_temporaries(episodes_dir)


def _check_settings(
    cluster: str, n_episodes: int | None, n_frames: int | None, n_workers: int, seed: int
) -> bool:
    """Refuse bad settings before anything is written; return whether the episodes run on Ray."""
    on_ray = uses_ray(cluster)
    if on_ray:  # an unreachable or malformed cluster is refused before anything is written
        connect_ray(cluster)
    else:  # more processes than the cores can run would only fill the memory
        check_local_workers(n_workers)
    CollectConfig(  # the budget, the ranges
        n_episodes=n_episodes, n_frames=n_frames, n_workers=n_workers, seed=seed
    )
    return on_ray


def _last_needed(done: dict[int, int], n_episodes: int | None, budget: int) -> int | None:
    """Highest index needed once the budget is met by a complete prefix, else None.

    ``done`` maps the finished episodes to their frames; ``budget`` counts episodes when
    ``n_episodes`` is given, else frames.
    """
    if n_episodes is not None:
        return n_episodes - 1 if all(i in done for i in range(n_episodes)) else None
    total, i = 0, 0
    while i in done:
        total += done[i]
        if total >= budget:
            return i
        i += 1
    return None


def _progress_bar(env_id: str, n_frames: int | None, done: dict[int, int], progress: bool) -> Any:
    """A frames bar (from the frames already there under a frame budget, else from 0)."""
    return tqdm(
        total=n_frames,
        initial=sum(done.values()) if n_frames is not None else 0,
        unit="frame",
        unit_scale=True,
        desc=f"collect {env_id}",
        disable=not progress,
        dynamic_ncols=True,
    )


def _recorder(
    done: dict[int, int], bar: Any, enough: Callable[[], int | None], count_frames: bool
) -> Callable[[int, int], bool]:
    """``on_done(index, n_frames)``: record a finished episode in ``done`` and on ``bar``, and
    return True while the budget is unmet. ``count_frames`` adds its frames to the bar (for
    players that send no step counts of their own)."""

    def on_done(index: int, n: int) -> bool:
        done[index] = n
        if count_frames:
            bar.update(n)
        bar.set_postfix(episodes=len(done), refresh=False)
        return enough() is None

    return on_done


@dataclass
class _WorkerPool:
    """Local worker processes (:func:`_worker`), their queues, and the episodes handed out."""

    tasks: mp.Queue
    results: mp.Queue
    workers: list[Any] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)
    ready_at: float | None = None  # when the first worker had built its env (perf_counter)

    def hand_out(self, todo: Iterator[int], n: int) -> None:
        """Put up to ``n`` more episode indices from ``todo`` on the task queue."""
        for _ in range(n):
            index = next(todo, None)
            if index is not None:
                self.tasks.put(index)
                self.in_flight.add(index)

    def check_alive(self) -> None:
        """Raise a RuntimeError when a worker died, or when no episode is in flight."""
        dead = [w.exitcode for w in self.workers if w.exitcode not in (None, 0)]
        if dead or not self.in_flight:
            raise RuntimeError(
                f"collector worker died (exit codes {dead}); see its output above"
            ) from None

    def serve(
        self,
        todo: Iterator[int],
        on_done: Callable[[int, int], bool],
        on_steps: Callable[[int], Any],
    ) -> None:
        """Read the workers' messages, handing out one more episode per finished one, until
        ``on_done`` says the budget is met.

        Raises:
            WorkerError: a worker failed; the message ends with its error line.
            RuntimeError: a worker died, or no episode is left in flight.
        """
        while True:
            try:
                kind, index, payload = self.results.get(timeout=5.0)
            except queue.Empty:
                self.check_alive()
                continue
            if kind == "error":
                raise WorkerError(f"collector worker failed on episode {index}", payload)
            if kind == "steps":
                on_steps(payload)
                continue
            if kind == "ready":
                self.ready_at = self.ready_at or time.perf_counter()
                continue
            self.in_flight.discard(index)
            if not on_done(index, payload):
                return
            self.hand_out(todo, 1)

    def stop(self) -> None:
        """Tell every worker to stop and wait for it (briefly when episodes are still in
        flight); terminate the ones still running."""
        for _ in self.workers:
            self.tasks.put(None)
        for w in self.workers:
            w.join(timeout=0.5 if self.in_flight else 30)
            if w.is_alive():
                w.terminate()
                w.join()


def _play_locally(
    env_spec: EnvSpec,
    spec: PolicyFactory,
    seed: int,
    out: Path,
    todo: Iterator[int],
    on_done: Callable[[int, int], bool],
    n_workers: int,
    compress: bool,
    record_state: bool,
    on_steps: Callable[[int], Any],
    codec: str | None = None,
    background_writes: bool = True,
) -> float | None:
    """Play the episodes ``todo`` hands out in ``n_workers`` local processes until ``on_done``
    returns False; the workers report steps to ``on_steps``. The local counterpart of
    :func:`envs.ray_collect.play_on_ray`; every worker has stopped when this returns.

    Returns:
        When the first worker had built its env (``time.perf_counter()``), None if none did.
    """
    ctx = mp.get_context("spawn")
    pool = _WorkerPool(ctx.Queue(), ctx.Queue())
    try:
        pool.workers = [
            ctx.Process(
                target=_worker,
                args=(
                    env_spec,
                    spec,
                    seed,
                    str(out),
                    compress,
                    pool.tasks,
                    pool.results,
                    bool(record_state),
                    os.getpid(),
                    max(1, (os.cpu_count() or 1) // n_workers),
                    codec,
                    background_writes,
                ),
                daemon=True,
            )
            for _ in range(n_workers)
        ]
        with children_ignore_sigint():  # Ctrl-C is the collector's: one line, no tracebacks
            for w in pool.workers:
                w.start()
        pool.hand_out(todo, 2 * n_workers)
        pool.serve(todo, on_done, on_steps)
    finally:
        pool.stop()
    return pool.ready_at


def _collect_result(
    out: Path,
    done: dict[int, int],
    before: dict[int, int],
    start: float,
    ready_at: float | None = None,
) -> CollectResult:
    """What the collection did: ``before`` held the episodes found, ``done`` holds them all;
    the first local worker was ready at ``ready_at``."""
    new = {i: n for i, n in done.items() if i not in before}
    return CollectResult(
        out_dir=out,
        new_episodes=len(new),
        new_frames=sum(new.values()),
        total_episodes=len(done),
        total_frames=sum(done.values()),
        seconds=time.perf_counter() - start,
        startup_seconds=None if ready_at is None else ready_at - start,
    )


def collect(
    out_dir: str | Path,
    env: str | EnvSpec,
    *,
    n_episodes: int | None = CollectConfig.n_episodes,
    n_frames: int | None = CollectConfig.n_frames,
    n_workers: int = CollectConfig.n_workers,
    policy: str | PolicyFactory = CollectConfig.policy,
    seed: int = CollectConfig.seed,
    compress: bool = CollectConfig.compress,
    overwrite: bool = False,
    progress: bool = True,
    record_state: bool | None = CollectConfig.record_state,
    cluster: str = "local",
    codec: str | None = None,
    background_writes: bool = True,
) -> CollectResult:
    """Collect ``n_episodes`` episodes or at least ``n_frames`` frames into ``out_dir``.

    The settings after ``env`` are those of :class:`CollectConfig` (defaults, ranges).

    Args:
        out_dir: dataset directory; re-running into the same directory resumes.
        env: the env's spec, or a gymnasium id (its default spec: ``EnvSpec(env)``); an
            ``"auto"`` backend is resolved here and recorded resolved.
        n_episodes: number of episodes (exclusive with ``n_frames``).
        n_frames: number of stored frames to reach (each episode of T steps stores T + 1).
        n_workers: worker processes.
        policy: ``"random"``, ``"brownian"``, ``"sb3:ALGO:PATH"``, a :class:`PolicySpec`, or
            another policy factory (``agents.collection.AgentPolicySpec``: a trained agent).
        seed: master seed; episode seeds derive from it.
        compress: compress episode files (game frames shrink several-fold).
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
        codec: how to compress (:mod:`worldvae.data.codecs`); None: as the dataset's format.
        background_writes: local workers write on a thread, playing on (False: the same files).
    """
    on_ray = _check_settings(cluster, n_episodes, n_frames, n_workers, seed)
    budget = n_episodes or n_frames or 0  # exactly one of them is given, and >= 1
    manifest, spec = collection_manifest(
        env if isinstance(env, EnvSpec) else EnvSpec(env), policy, seed, record_state
    )
    env_spec, record_state = manifest.env_spec, manifest.state_names is not None
    out = Path(out_dir)
    done = open_dataset_dir(out, manifest, overwrite)
    enough = partial(_last_needed, done, n_episodes, budget)
    todo = (i for i in range(10**9 if n_episodes is None else n_episodes) if i not in done)
    start, before = time.perf_counter(), dict(done)
    bar = _progress_bar(env_spec.env_id, n_frames, done, progress)
    on_done = _recorder(done, bar, enough, count_frames=on_ray and n_frames is not None)
    ready_at = None
    try:
        already_met = enough() is not None  # the dataset already holds the budget
        if on_ray and not already_met:
            play_on_ray(
                cluster, env_spec, spec, seed, out, todo, on_done,
                n_workers, compress, bool(record_state),
            )  # fmt: skip
        elif not already_met:
            ready_at = _play_locally(
                env_spec, spec, seed, out, todo, on_done, n_workers, compress,
                bool(record_state), bar.update, codec, background_writes,
            )  # fmt: skip
    finally:
        bar.close()
    last = enough()
    if last is None:  # only reachable when the play above stopped early
        raise RuntimeError("collection stopped before its budget was met")
    drop_beyond_prefix(out / EPISODES_DIR, last, before, done)
    return _collect_result(out, done, before, start, ready_at)
