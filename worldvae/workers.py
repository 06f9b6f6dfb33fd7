"""Worker processes that never outlive their parent.

A parent killed by the OOM killer (or ``kill -9``) runs no cleanup, so its workers must notice
on their own: on Linux the kernel sends them ``SIGTERM`` when the parent dies
(``prctl(PR_SET_PDEATHSIG)``), and elsewhere (or as a second line of defence) a worker waiting
for work checks every second that its parent is still the one it was started by.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int) -> None:
    """Call first thing in a worker: it exits when ``parent_pid`` dies or on ``SIGTERM``."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a blocked worker must still die on TERM
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
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
