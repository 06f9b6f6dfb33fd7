"""Progress bars in the unit of the budget: seconds of a wall-clock budget, else env steps.

A run given ``max_train_seconds`` stops on the clock, whatever its step cap, so its bar
counts seconds (tqdm's ETA then reads as time left) with the env steps beside them; a run
budgeted in steps counts steps. :class:`RunsProgress` is the one bar over the runs of a
comparison, moved by a timer thread once a second, whether the runs train in this process
or in worker processes.

Example:
    >>> bar = budget_bar("run", seconds=300.0, steps=2_000_000, progress=True)
    >>> bar.total, bar.unit
    (300, 's')
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm


def budget_bar(
    desc: str,
    *,
    seconds: float | None,
    steps: int,
    progress: bool,
    initial: float = 0,
    unit_scale: bool = False,
) -> Any:
    """A tqdm bar of ``seconds`` (unit ``"s"``) when a wall-clock budget is given, else of
    ``steps`` env steps (unit ``"step"``), starting at ``initial``; hidden unless
    ``progress``."""
    if seconds is not None:
        return tqdm(
            total=max(1, math.ceil(seconds)),
            initial=int(initial),
            unit="s",
            desc=desc,
            disable=not progress,
            dynamic_ncols=True,
        )
    return tqdm(
        total=steps,
        initial=int(initial),
        unit="step",
        unit_scale=unit_scale,
        desc=desc,
        disable=not progress,
        dynamic_ncols=True,
    )


def advance(bar: Any, value: float) -> bool:
    """Move ``bar`` forward to ``int(value)`` (capped at its total, never back); True if moved."""
    n = int(value) if bar.total is None else min(int(value), int(bar.total))
    if n <= bar.n:
        return False
    bar.update(n - bar.n)
    return True


def count(steps: int) -> str:
    """An env step count for a bar's postfix: ``"950"``, ``"12.3k"``, ``"1.20M"``."""
    if steps < 10_000:
        return str(steps)
    if steps < 1_000_000:
        return f"{steps / 1000:.1f}k"
    return f"{steps / 1_000_000:.2f}M"


class RunsProgress:
    """One bar over ``len(step_budgets)`` runs trained ``slots`` at a time.

    Without ``seconds`` it counts env steps of the runs' budgets (a finished run counts its
    whole budget). With ``seconds`` (each run's wall-clock budget) it counts seconds of the
    stage's budget, ``seconds * runs / slots``: each run is credited the time since it
    started, up to its budget, and the sum is shared among the slots, so with runs that fill
    the slots evenly the bar is the wall-clock; the env steps go beside it.

    Tell it when run ``i`` starts (:meth:`start`) and finishes (:meth:`finish`), and of its
    steps (:meth:`add_steps` or :meth:`set_steps`), from any thread; as a context manager it
    moves the bar every ``interval`` seconds from a thread of its own and closes it at the end.
    """

    def __init__(
        self,
        step_budgets: Sequence[int],
        seconds: float | None,
        slots: int,
        progress: bool,
        desc: str = "compare",
        interval: float = 1.0,
    ):
        self.step_budgets = list(step_budgets)
        self.seconds = seconds
        self.slots = max(1, min(slots, len(self.step_budgets)))
        self.interval = interval
        total = None if seconds is None else seconds * len(self.step_budgets) / self.slots
        self.bar = budget_bar(
            desc, seconds=total, steps=sum(self.step_budgets), progress=progress, unit_scale=True
        )
        self._lock = threading.Lock()
        self._started: dict[int, float] = {}
        self._finished: set[int] = set()
        self._steps: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunsProgress:
        self.refresh()
        if not self.bar.disable:
            self._thread = threading.Thread(target=self._tick, name="runs-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.refresh()
        self.bar.close()

    def start(self, i: int, at: float | None = None) -> None:
        """Run ``i`` starts now, or started at ``at`` (``time.perf_counter``'s clock)."""
        with self._lock:
            self._started[i] = time.perf_counter() if at is None else at

    def started(self, i: int) -> bool:
        """True once run ``i`` has started."""
        with self._lock:
            return i in self._started

    def finish(self, i: int, steps: int | None = None) -> None:
        """Run ``i`` is done, having reached ``steps`` env steps (if known); a run that was
        never seen to start counts as started and finished."""
        with self._lock:
            self._started.setdefault(i, time.perf_counter())
            self._finished.add(i)
            if steps is not None:
                self._steps[i] = steps

    def add_steps(self, i: int, n: int) -> None:
        """Run ``i`` took ``n`` more env steps."""
        with self._lock:
            self._steps[i] = self._steps.get(i, 0) + n

    def set_steps(self, i: int, steps: int) -> None:
        """Run ``i`` has reached ``steps`` env steps."""
        with self._lock:
            self._steps[i] = steps

    def seconds_done(self) -> float:
        """Seconds of the stage's budget used (see the class); 0 without a budget."""
        if self.seconds is None:
            return 0.0
        now = time.perf_counter()
        with self._lock:
            used = sum(
                self.seconds if i in self._finished else min(self.seconds, now - t)
                for i, t in self._started.items()
            )
        return used / self.slots

    def steps_done(self) -> tuple[int, int]:
        """``(toward the budgets, trained)``: env steps with each finished run counted as its
        whole budget and each live one capped at it, and the env steps the runs took."""
        with self._lock:
            trained = sum(self._steps.values())
            toward = sum(
                budget if i in self._finished else min(self._steps.get(i, 0), budget)
                for i, budget in enumerate(self.step_budgets)
            )
        return toward, trained

    def refresh(self) -> None:
        """Move the bar to where the runs are and show the runs finished (and the steps)."""
        toward, trained = self.steps_done()
        postfix = {"runs": f"{len(self._finished)}/{len(self.step_budgets)}"}
        if self.seconds is None:
            advance(self.bar, toward)
        else:
            advance(self.bar, self.seconds_done())
            postfix["steps"] = count(trained)
        self.bar.set_postfix(postfix, refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self.refresh()
