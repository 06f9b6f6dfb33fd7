"""Worker processes end with their parent; Ctrl-C and SIGTERM stop a command in one line; the
number of local workers is capped by the cores."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.cli.main import main
from worldvae.rundir import LOCK_NAME, RunDirLock
from worldvae.workers import (
    check_local_workers,
    cpu_cores,
    max_local_workers,
    parent_bound_pool,
)

LINUX = sys.platform.startswith("linux")
ENV = os.environ | {"PYTHONPATH": os.getcwd()}


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (workers, the multiprocessing resource tracker, ...)."""
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        kids = {
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _parent_of(int(p.name)) in frontier
        }
        frontier = kids - found
        found |= kids
    return {k for k in found if _alive(k)}


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _wait_for(what, seconds: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the command ended early: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("timed out")


# the parent: a pool of 2 workers, both busy with a long task, then it waits to be killed
POOL_PARENT = """
import time
from worldvae.workers import parent_bound_pool
with parent_bound_pool(2) as pool:
    list(pool.map(time.sleep, [0.2, 0.2]))
    futures = [pool.submit(time.sleep, 600) for _ in range(2)]
    print("busy", flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_pool_workers_and_resource_tracker_die_with_their_parent(sig):
    parent = subprocess.Popen(
        [sys.executable, "-c", POOL_PARENT], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert parent.stdout.readline().strip() == "busy"
        below = _descendants(parent.pid)
        assert len(below) >= 2  # the two workers (and the resource tracker)
        parent.send_signal(sig)  # kill -9 (as the OOM killer does), or a plain kill
        parent.wait(timeout=30)
        assert not _wait_gone(below, 10), "processes outlived their parent"
    finally:
        parent.kill()
        parent.wait()


def test_pool_runs_tasks_and_refuses_more_workers_than_the_cap():
    with parent_bound_pool(2) as pool:
        assert list(pool.map(pow, [2, 3], [2, 2])) == [4, 9]
    too_many = parent_bound_pool(max_local_workers() + 1)
    with pytest.raises(ValueError, match=rf"at most {max_local_workers()}"), too_many:
        pass


def test_a_failing_block_stops_busy_workers_at_once():
    """Leaving the block through an exception (Ctrl-C, SIGTERM) does not wait for the tasks."""
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), parent_bound_pool(2) as pool:
        list(pool.map(time.sleep, [0.1, 0.1]))
        workers = set(pool._processes)
        futures = [pool.submit(time.sleep, 300) for _ in range(2)]
        raise KeyboardInterrupt
    assert time.monotonic() - start < 60
    assert not _wait_gone(workers, 5)
    assert all(f.done() for f in futures)


def test_the_worker_cap_follows_the_cores():
    assert max_local_workers() == max(4 * cpu_cores(), 8)
    check_local_workers(max_local_workers())
    for bad in (0, max_local_workers() + 1):
        with pytest.raises(ValueError, match="--workers"):
            check_local_workers(bad)


def _usage_line(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("worldvae: error: "), err
    return err[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["collect", "--env", "CartPole-v1", "--episodes", "1"],
        ["compare", "--env", "CartPole-v1", "--obs", "pixel"],
        ["evaluate", "{d}/agent"],
        ["sweep"],
        ["pipeline", "--preset", "smoke"],
    ],
)
def test_more_workers_than_the_cap_are_refused_before_anything_runs(argv, tmp_path, capsys):
    too_many = str(max_local_workers() + 1)
    argv = [a.format(d=tmp_path) for a in argv] + ["--workers", too_many]
    if argv[0] != "evaluate":
        argv += ["--out", str(tmp_path / "out")]
    line = _usage_line(capsys, argv)
    assert f"--workers {too_many}" in line and f"at most {max_local_workers()}" in line
    assert f"{cpu_cores()} cores" in line
    assert not (tmp_path / "out").exists()


def test_the_pipeline_caps_workers_given_by_set_too(tmp_path, capsys):
    too_many = max_local_workers() + 1
    for setting in (f"compare.workers={too_many}", f"collect.n_workers={too_many}"):
        line = _usage_line(
            capsys,
            ["pipeline", "--preset", "smoke", "--set", setting, "--out", str(tmp_path / "out")],
        )
        assert f"at most {max_local_workers()}" in line
    line = _usage_line(
        capsys,
        ["pipeline", "--preset", "smoke", "--eval-workers", str(too_many), "--out",
         str(tmp_path / "out")],
    )  # fmt: skip
    assert "--eval-workers" in line
    assert not (tmp_path / "out").exists()


def test_a_ray_cluster_is_not_capped_by_this_machines_cores():
    from agents.cli.common import check_worker_counts
    from agents.cli.main import build_parser

    argv = ["collect", "--env", "CartPole-v1", "--episodes", "1", "--out", "o", "--workers",
            str(max_local_workers() + 1)]  # fmt: skip
    check_worker_counts(build_parser().parse_args([*argv, "--cluster", "ray"]))


def test_evaluate_refuses_zero_workers(tmp_path, capsys):
    line = _usage_line(capsys, ["evaluate", str(tmp_path / "agent"), "--workers", "0"])
    assert "--workers" in line and ">= 1" in line


def _spawned_children(pid: int) -> list[int]:
    return [
        k
        for k in _descendants(pid)
        if "spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")
    ]


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_an_early_ctrl_c_of_collect_prints_one_line_and_no_worker_traceback(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldvae", "collect", "--env", "CartPole-v1", "--frame-size",
         "16", "--workers", "2", "--episodes", "1000", "--out", str(tmp_path / "ds")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        start_new_session=True,
    )  # fmt: skip
    try:
        workers = _wait_for(lambda: len(_spawned_children(proc.pid)) >= 2, 120, proc)
        assert workers
        time.sleep(0.3)  # the workers are still importing their modules
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "worldvae: interrupted" in err


def _compare(out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "worldvae", "compare", "--env", "CartPole-v1", "--obs", "pixel",
         "--seeds", "2", "--steps", "1000000", "--workers", "2", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_compare_leaves_no_worker_and_no_held_lock(sig, tmp_path):
    out = tmp_path / "cmp"
    proc = _compare(out)
    try:
        _wait_for(lambda: len(list(out.glob(f"runs/*/{LOCK_NAME}"))) >= 2, 300, proc)
        below = _descendants(proc.pid)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        assert not _wait_gone(below, 15), "workers outlived compare"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:  # a clean stop: one line, the usual exit status
        assert proc.returncode == 128 + signal.SIGTERM
        assert "worldvae: terminated" in err and "Traceback" not in err, err
    for folder in [out, *sorted(out.glob("runs/*"))]:  # a re-run is not refused
        with RunDirLock(folder, "test"):
            pass
