"""Collector faults: a flipped bit is caught and re-collected; workers die with their parent."""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from envs import collect
from worldvae.data.episodes import CorruptEpisodeError, read_episode, verify_episode
from worldvae.envspec import EnvSpec
from worldvae.rundir import RunDirLock


def _flip_a_frame_bit(path: Path) -> None:
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("frames.npy")
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.mark.slow
def test_a_flipped_frame_bit_is_found_and_recollected(tmp_path):
    out = tmp_path / "ds"
    spec, kw = EnvSpec("CartPole-v1", frame_size=16), {"n_episodes": 3, "progress": False}
    collect(out, spec, **kw)
    victim = out / "episodes" / "ep_0000001.npz"
    before = read_episode(victim)["frames"]
    _flip_a_frame_bit(victim)
    read_episode(victim, keys=("rewards",))  # the old resume check saw nothing wrong
    with pytest.raises(CorruptEpisodeError, match=r"frames\.npy"):
        verify_episode(victim)
    r = collect(out, spec, **kw)
    assert r.new_episodes == 1 and r.total_episodes == 3
    verify_episode(victim)
    np.testing.assert_array_equal(read_episode(victim)["frames"], before)


def _children(pid: int) -> list[int]:
    kids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    kids.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_collector_is_killed(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldvae", "collect", "--env", "CartPole-v1", "--frame-size",
         "16", "--workers", "2", "--episodes", "100000", "--out", str(tmp_path / "ds")],
        env=os.environ | {"PYTHONPATH": os.getcwd()},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "ds" / "episodes").glob("*.npz")):
        time.sleep(0.2)
    workers = [k for k in _children(proc.pid) if "spawn" in Path(f"/proc/{k}/cmdline").read_text()]
    assert workers
    os.kill(proc.pid, signal.SIGKILL)  # the parent alone, as the OOM killer does
    proc.wait()
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(w) for w in workers):
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
    with RunDirLock(tmp_path / "ds", "test"):  # and the lock died with it
        pass
