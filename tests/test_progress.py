"""Progress bars in the budget's unit: seconds of a wall-clock budget, env steps otherwise."""

import re
import time

import pytest
from stable_baselines3.common.callbacks import BaseCallback

from agents import resolve_config, train_agent
from agents.comparison import CompareConfig, plan_runs, train_runs
from agents.progress import RunsProgress, budget_bar

FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
NEVER = 10**7  # a step budget (and evaluation interval) the wall-clock budget ends first


class ShownWhileTraining(BaseCallback):
    """Keeps the bar states written to stderr while training runs (tqdm writes each state
    after a carriage return), read every 20 calls."""

    def __init__(self, capsys):
        super().__init__()
        self.capsys = capsys
        self.states: list[str] = []

    def _on_step(self) -> bool:
        if self.n_calls % 20 == 0:
            self.states += self.capsys.readouterr().err.split("\r")
        return True


def _positions(states, pattern):
    """``(n, total)`` of every bar state matching ``pattern`` (a regex of the description)."""
    found = (re.search(pattern + r".*?\|\s*(\d+)/(\d+) \[", s) for s in states)
    return [(int(m[1]), int(m[2])) for m in found if m]


def test_budget_bar_counts_seconds_of_a_wall_clock_budget_and_steps_otherwise():
    bar = budget_bar("run", seconds=299.5, steps=2_000_000, progress=True)
    assert (bar.total, bar.unit) == (300, "s")
    bar.close()
    bar = budget_bar("run", seconds=None, steps=2_000_000, progress=True, initial=64)
    assert (bar.total, bar.unit, bar.n) == (2_000_000, "step", 64)
    bar.close()


def test_train_agent_under_a_time_budget_shows_seconds_while_it_trains(capsys, tmp_path):
    cfg = resolve_config(
        "CartPole-v1", "pixel", "ppo", None, NEVER, seed=0, overrides=FAST,
        env_given={"frame_size": 40}, n_envs=2, eval_freq=NEVER, eval_episodes=1,
        max_train_seconds=3.0,
    )  # fmt: skip
    probe = ShownWhileTraining(capsys)
    train_agent(cfg, tmp_path / "agent", callbacks=[probe])
    during = _positions(probe.states, re.escape(cfg.run_name))
    assert during and all(total == 3 for _, total in during)
    assert any(n >= 1 for n, _ in during), probe.states[-3:]  # moved before the run ended
    assert any("steps=" in s for s in probe.states)
    final = _positions(capsys.readouterr().err.split("\r"), re.escape(cfg.run_name))
    assert final[-1] == (3, 3)


@pytest.mark.slow
def test_compare_under_a_time_budget_shows_seconds_of_the_stage(capsys, tmp_path):
    cfg = CompareConfig(
        env_id="CartPole-v1", obs_kinds=("pixel",), seeds=(0, 1), total_timesteps=NEVER,
        eval_freq=NEVER, eval_episodes=1, final_eval_episodes=1, env_given={"frame_size": 40},
        overrides=FAST, n_envs=2, probe=False, max_train_seconds=2.0,
    )  # fmt: skip
    runs = plan_runs(cfg, tmp_path / "cmp")
    probe = ShownWhileTraining(capsys)
    train_runs(runs, workers=1, subprocess_envs=False, progress=True, callbacks=[probe])
    during = [s for s in probe.states if "runs=0/2" in s]
    moved = _positions(during, "compare")
    assert moved and all(total == 4 for _, total in moved)  # 2 runs x 2 s, one at a time
    assert any(n >= 1 for n, _ in moved)  # before the first run ended
    final = capsys.readouterr().err.split("\r")
    assert _positions(final, "compare")[-1] == (4, 4)
    assert any("runs=2/2" in s for s in final)


def test_runs_progress_credits_each_run_its_time_shared_among_the_slots():
    meter = RunsProgress([100, 100, 100], seconds=10.0, slots=2, progress=True)
    assert meter.bar.total == 15  # 3 runs x 10 s, 2 at a time
    meter.start(0)
    meter.start(1)
    time.sleep(0.2)
    assert 0.15 < meter.seconds_done() < 1.0
    meter.finish(0, steps=80)
    meter.start(2)
    assert 5.0 < meter.seconds_done() < 6.0  # run 0's whole budget, run 1's time so far
    meter.set_steps(1, 150)
    assert meter.steps_done() == (200, 230)  # finished: its budget; live: capped at it
    meter.refresh()
    assert meter.bar.n == 5 and meter.bar.unit == "s"
    meter.bar.close()
