"""Worker processes that never outlive their parent.

A parent killed by the OOM killer (or ``kill -9``) runs no cleanup, so its workers must notice
on their own: on Linux the kernel sends them ``SIGTERM`` when the parent dies
(``prctl(PR_SET_PDEATHSIG)``), and elsewhere (or as a second line of defence) a worker checks
every second that its parent is still the one it was started by. A worker that outlived its
parent would keep running, keep its run folder's lock, and make a re-run refuse to start.

Every local process pool of the project is :func:`parent_bound_pool`; the collector and the
CMA-ES scorer, which run their own queues, call :func:`exit_with_parent` first thing in each
worker and start them inside :func:`children_ignore_sigint`. Ctrl-C is the parent's to handle:
the workers ignore it from their first instruction, so an early Ctrl-C prints one line, not a
traceback per worker.

Example:
    >>> with parent_bound_pool(2) as pool:  # doctest: +SKIP
    ...     squares = list(pool.map(pow, range(4), [2] * 4))
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
WORKERS_PER_CORE = 4  # workers mostly wait on envs and disks; more than this only thrashes
MIN_WORKER_CAP = 8  # a small machine may still run a few more workers than cores


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


def max_local_workers() -> int:
    """The most worker processes a command starts on this machine: 4 per core, at least 8."""
    return max(WORKERS_PER_CORE * cpu_cores(), MIN_WORKER_CAP)


def local_workers_error(n_workers: int, flag: str = "--workers") -> str | None:
    """Why ``n_workers`` local worker processes are refused (None when they are not)."""
    if n_workers < 1:
        return f"{flag} must be >= 1, got {n_workers}"
    cap = max_local_workers()
    if n_workers > cap:
        return (
            f"{flag} {n_workers} is more worker processes than this machine runs at once: at "
            f"most {cap} ({WORKERS_PER_CORE} per CPU core, {cpu_cores()} cores; each worker "
            f"holds its own env and model in memory); lower {flag}"
        )
    return None


def check_local_workers(n_workers: int, flag: str = "--workers") -> None:
    """Refuse a count of local worker processes outside 1..:func:`max_local_workers`.

    Raises:
        ValueError: naming ``flag``, the cap and how it derives from the cores.
    """
    message = local_workers_error(n_workers, flag)
    if message:
        raise ValueError(message)


def exit_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker: it exits when ``parent_pid`` dies or on ``SIGTERM``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a blocked worker must still die on TERM
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if hasattr(signal, "pthread_sigmask"):  # a Ctrl-C held back while we started: dropped
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the poll below remains
            pass
    if not parent_alive(parent_pid):  # the parent died before prctl took effect
        os._exit(1)


def parent_alive(parent_pid: int) -> bool:
    """True while this process's parent is still ``parent_pid`` (orphans are re-parented)."""
    return os.getppid() == parent_pid


def get_while_parent_lives(tasks: Any, parent_pid: int, poll_seconds: float = 1.0) -> Any:
    """``tasks.get()`` that gives up (exits the process) once the parent is gone."""
    while True:
        try:
            return tasks.get(timeout=poll_seconds)
        except queue.Empty:
            if not parent_alive(parent_pid):
                os._exit(1)


def _watch_parent(parent_pid: int, poll_seconds: float) -> None:
    """Exit the process once the parent is gone (a worker busy with a long task included)."""
    while parent_alive(parent_pid):
        time.sleep(poll_seconds)
    os._exit(1)


def bind_to_parent(parent_pid: int, poll_seconds: float = 1.0) -> None:
    """A pool worker's initializer: :func:`exit_with_parent`, and a daemon thread that ends
    the worker when its parent is gone even while a task runs (where prctl is missing)."""
    exit_with_parent(parent_pid)
    threading.Thread(
        target=_watch_parent, args=(parent_pid, poll_seconds), name="parent-watch", daemon=True
    ).start()


@contextlib.contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started inside the block ignore Ctrl-C from their first instruction.

    The disposition ``SIG_IGN`` survives ``exec``, and Python keeps an ignored SIGINT ignored,
    so a worker still importing its modules prints no ``KeyboardInterrupt`` traceback. Ctrl-C
    in the block is held back (blocked), not lost: the parent receives it when the block ends.
    Outside the main thread (where handlers cannot change) it changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    can_block = hasattr(signal, "pthread_sigmask")  # POSIX
    if can_block:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        # None: a handler not set from Python (an embedding application's); the default then
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        if can_block:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _started() -> int:
    """A task that only says a worker runs (it makes the pool start every worker at once)."""
    return os.getpid()


def stop_pool(pool: ProcessPoolExecutor, timeout: float = 10.0) -> None:
    """Terminate the workers of ``pool`` (running tasks included) and wait until they are gone."""
    # the executor's own table of its processes: there is no public handle before Python 3.14
    workers = list((getattr(pool, "_processes", None) or {}).values())
    # the executor's thread marks the tasks the workers held as failed once it sees them
    # gone; shutdown() forgets it, so it is taken first and waited for at the end: no
    # future is left pending when this returns
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in workers:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in workers:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():  # pragma: no cover - a worker that ignores SIGTERM
            p.kill()
            p.join()
    if manager is not None:
        manager.join(max(1.0, deadline - time.monotonic()))
        if manager.is_alive():  # pragma: no cover - the executor's thread is stuck
            logger.warning("the worker pool's thread did not end; some tasks may stay pending")


@contextlib.contextmanager
def parent_bound_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes that end with this one.

    Each worker ignores Ctrl-C and exits when this process dies, however it dies (see the
    module's docstring). On leaving the block normally the pool is shut down as usual (its
    tasks finish); on leaving it through an exception (Ctrl-C, SIGTERM turned into an
    exception, a failed task) the workers are terminated, running tasks included, and gone
    before the exception goes on.

    Raises:
        ValueError: ``workers`` is outside 1..:func:`max_local_workers`.
    """
    check_local_workers(workers)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=bind_to_parent,
        initargs=(os.getpid(),),
    )
    try:
        with children_ignore_sigint():  # every worker starts now, ignoring Ctrl-C
            for _ in range(workers):
                pool.submit(_started)
        yield pool
        pool.shutdown(wait=True)
    except BaseException:
        stop_pool(pool)
        raise
