"""Comparison runs on a Ray cluster: each (arm, seed) run is one Ray task.

A run asks Ray for its own CPUs and GPUs, trains with as many torch threads as CPUs it was
given (the local process pool gives each run one thread, so one CPU per run computes what a
local run computes), and writes its agent bundle to shared storage. Complete bundles are not
scheduled at all; a run whose worker died is retried once by Ray, and a run cut by a dead
driver continues from its last checkpoint when the command is re-run.

:func:`run_comparison_on_cluster` is where ``compare`` and ``pipeline`` choose between this
and the local process pool.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agents.bundle import is_complete
from envs.cluster import connect_ray, run_tasks, uses_ray

logger = logging.getLogger(__name__)

TASK_RETRIES = 1  # a run is minutes to hours: retry once after a lost worker, then report


class RunLike(Protocol):
    """What this module needs of a comparison run: where its bundle goes."""

    @property
    def path(self) -> Path: ...


def train_bundle(run: Any, subprocess_envs: bool = False) -> bool:
    """Train one comparison run into its bundle unless it is complete; True when skipped."""
    from agents.agent_training import train_agent

    r = train_agent(
        run.config, run.path, skip_complete=True, progress=False, subprocess_envs=subprocess_envs
    )
    return r.skipped


def _train_with_threads(train: Callable[[Any], Any], run: Any, n_threads: int) -> str:
    """The body of one Ray task: ``train(run)`` with ``n_threads`` torch threads."""
    import torch

    torch.set_num_threads(n_threads)
    train(run)
    return str(run.path)


def train_runs_on_ray(
    cluster: str,
    runs: Sequence[RunLike],
    train: Callable[[Any], Any] = train_bundle,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    on_trained: Callable[[Any], None] | None = None,
) -> list[Path]:
    """Train every incomplete run as a Ray task; return the bundles trained now.

    Args:
        cluster: ``"ray"`` or a Ray address (see :mod:`envs.cluster`).
        runs: the comparison's runs; each has a ``path`` (its bundle directory).
        train: ``train(run)`` trains one run into ``run.path`` (a picklable function; by
            default :func:`train_bundle`, which continues an unfinished bundle).
        cpus_per_run: CPUs Ray reserves for a run; also its torch thread count.
        gpus_per_run: GPUs Ray reserves for a run (fractions share one GPU).
        on_trained: called on the driver with each run as it finishes (progress).

    Raises:
        ValueError: a resource request below its minimum.
        RuntimeError: a run failed; the message names it. The other runs are cancelled.
    """
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ValueError(
            f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {cpus_per_run} and "
            f"{gpus_per_run}"
        )
    pending = [run for run in runs if not is_complete(run.path)]
    for run in runs:
        if run not in pending:
            logger.info("%s: skipped (complete)", run.path)
    if not pending:
        return []
    ray = connect_ray(cluster)
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=TASK_RETRIES)(
        _train_with_threads
    )
    n_threads = max(1, int(cpus_per_run))
    trained: list[Path] = []

    def done(run: Any, path: str) -> bool:
        trained.append(Path(path))
        logger.info("%s: trained on Ray", path)
        if on_trained is not None:
            on_trained(run)
        return True

    # Every run is in flight at once: Ray queues what the cluster cannot place yet.
    run_tasks(
        ray,
        remote,
        iter(pending),
        lambda r: (train, r, n_threads),
        len(pending),
        done,
        describe=lambda r: f"run {r.path}",
    )
    return trained


def run_comparison_on_ray(
    cfg: Any,
    out_dir: str | Path,
    cluster: str = "ray",
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    progress: bool = True,
) -> Any:
    """:func:`agents.comparison.run_comparison` with its runs trained as Ray tasks.

    The runs are planned (arms checked, control encoders built) on the driver, every
    incomplete run is trained on the cluster, then the comparison evaluates and aggregates
    the bundles from shared storage with the local comparison's own steps
    (:func:`agents.comparison.evaluate_comparison`). Re-running continues: complete runs are
    skipped, cut ones resume.

    Returns:
        the :class:`agents.comparison.ComparisonResult`.
    """
    from tqdm.auto import tqdm

    from agents.comparison import evaluate_comparison, plan_runs, write_results

    start = time.perf_counter()
    runs = plan_runs(cfg, out_dir)
    bar = tqdm(total=len(runs), unit="run", desc="compare on Ray", disable=not progress)
    bar.update(sum(is_complete(run.path) for run in runs))
    try:
        train = functools.partial(train_bundle, subprocess_envs=cfg.subprocess_envs)
        train_runs_on_ray(cluster, runs, train, cpus_per_run, gpus_per_run, lambda _: bar.update(1))
    finally:
        bar.close()
    # The training stage's time is the time on the cluster.
    result = evaluate_comparison(cfg, runs, out_dir, {"train": time.perf_counter() - start})
    write_results(result)
    return result


def run_comparison_on_cluster(
    cfg: Any,
    out_dir: str | Path,
    cluster: str = "local",
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    progress: bool = True,
) -> Any:
    """The comparison ``cfg`` into ``out_dir``, its runs trained where ``cluster`` says:
    ``"local"`` in local processes (:func:`agents.comparison.run_comparison`, ``cfg.workers``
    at once), ``"ray"`` or a Ray address as Ray tasks of ``cpus_per_run`` CPUs and
    ``gpus_per_run`` GPUs each (:func:`run_comparison_on_ray`).

    Returns:
        the :class:`agents.comparison.ComparisonResult`.
    """
    if uses_ray(cluster):
        return run_comparison_on_ray(cfg, out_dir, cluster, cpus_per_run, gpus_per_run, progress)
    from agents.comparison import run_comparison

    return run_comparison(cfg, out_dir, progress=progress)
