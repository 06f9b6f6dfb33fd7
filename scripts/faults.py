"""The fault catalogue, run for real: kills, concurrent writers, a bit flip, a full disk, bad input.

Every case runs the ``worldvae`` command in subprocesses on tiny budgets (CartPole frames of
16x16, one collector worker) and checks three things:

* the exit status (non-zero for a refusal or a failure, zero for a success);
* that a failure printed exactly one ``worldvae: error:`` line and no traceback;
* that nothing was lost: after a ``kill -9`` and a re-run, the dataset, the VAE, M or agent
  weights equal those of an uninterrupted reference run, bit for bit; a refused writer
  changed nothing; no worker process outlived its parent;
* that a refusal left nothing behind that would block the corrected command (its ``--out``,
  temporaries beside it): the "leftovers" column.

Besides kills and concurrent writers it runs the folder rules of ``data merge``, ``collect``,
``inspect`` and ``data info``; SIGKILL and SIGTERM of a ``compare`` with a worker pool; the
refusals before any work (``train-agent``, ``compare``, ``pipeline --set``, ``sweep``, worker
caps, memory estimates, an unreachable ``--cluster``); data and models that read back intact
but cannot be used; records read from another working folder; and Ctrl-C.

It prints a Markdown table (one row per case). The full-disk cases need ``mount -t tmpfs``
(root); where mounting is not allowed they are reported as skipped.

    python scripts/faults.py --trials 1 --out runs/faults
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from worldvae.data.episodes import EPISODE_KEYS, read_episode  # noqa: E402
from worldvae.data.manifest import EPISODES_DIR, MANIFEST_NAME  # noqa: E402
from worldvae.rundir import LOCK_NAME, RunDirLock  # noqa: E402

ENV = os.environ | {
    "PYTHONPATH": str(ROOT),
    "SDL_VIDEODRIVER": "dummy",
    "SDL_AUDIODRIVER": "dummy",
    "PYTHONWARNINGS": "ignore",
}
COLLECT = ["collect", "--env", "CartPole-v1", "--frame-size", "16", "--workers", "1",
           "--seed", "0"]  # fmt: skip
VAE = ["--epochs", "3", "--batch-size", "32", "--channels", "8,16", "--latent-dim", "4",
       "--checkpoint-every", "20", "--seed", "0", "--device", "cpu"]  # fmt: skip
KILLS = (signal.SIGKILL, signal.SIGTERM)
HYPERPARAMS = "ppo:\n  n_steps: 64\n  batch_size: 64\n  n_epochs: 1\n"


@dataclass
class Row:
    case: str
    trials: int = 0
    exits: list[int] = field(default_factory=list)
    one_line: bool | None = None
    lost: int = 0
    orphans: int = 0
    leftovers: int = 0
    note: str = ""

    def add(self, code: int, one: bool | None = None, lost: bool = False) -> None:
        self.trials += 1
        self.exits.append(code)
        if one is not None:
            self.one_line = one if self.one_line is None else (self.one_line and one)
        self.lost += int(lost)


def worldvae(argv: list[str], cwd: Path | None = None, timeout: float = 900) -> tuple[int, str]:
    r = subprocess.run(
        [sys.executable, "-m", "worldvae", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
    )
    return r.returncode, r.stderr


def spawn(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "worldvae", *argv], stdout=f, stderr=subprocess.STDOUT, env=ENV
        )


def is_one_line(stderr: str) -> bool:
    errors = [line for line in stderr.splitlines() if line.startswith("worldvae: error:")]
    return len(errors) == 1 and "Traceback" not in stderr


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parents[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [pid]
    while frontier:
        cur = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == cur]
        out += kids
        frontier += kids
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill9_at(proc: subprocess.Popen, delay: float) -> tuple[bool, int]:
    """SIGKILL ``proc`` (alone, as the OOM killer does) after ``delay`` seconds.

    Returns (killed before it finished, orphans still alive 10 s later).
    """
    t = time.time()
    while time.time() - t < delay and proc.poll() is None:
        time.sleep(0.05)
    if proc.poll() is not None:
        return False, 0
    kids = descendants(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(k) for k in kids):
        time.sleep(0.2)
    return True, sum(alive(k) for k in kids)


def dataset_arrays(root: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for path in sorted((root / EPISODES_DIR).glob("ep_*.npz")):
        out[path.name] = read_episode(path, EPISODE_KEYS)
    return out


def same_dataset(a: Path, b: Path) -> bool:
    x, y = dataset_arrays(a), dataset_arrays(b)
    return x.keys() == y.keys() and all(
        x[k].keys() == y[k].keys() and all(np.array_equal(x[k][m], y[k][m]) for m in x[k])
        for k in x
    )


def same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def agent_weights(bundle: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(bundle / "agent.zip") as z:
        blob = z.read("policy.pth")
    import io

    import torch

    state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in state.items()}


def same_agent(a: Path, b: Path) -> bool:
    try:
        x, y = agent_weights(a), agent_weights(b)
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


# ---- the cases ------------------------------------------------------------------------------
def kill_time(rng: random.Random, duration: float) -> float:
    """A moment inside a run that takes ``duration`` seconds undisturbed (10-90% of it)."""
    return rng.uniform(0.1, 0.9) * duration


def killed_note(row: Row, n_killed: int, duration: float) -> None:
    row.note = (
        f"killed before the end in {n_killed} of {row.trials} trials "
        f"(undisturbed run {duration:.0f} s)"
    )


def kill_collect(work: Path, ref: Path, duration: float, trials: int, rng: random.Random) -> Row:
    row = Row("kill -9 during collect, then re-run")
    n_killed = 0
    for i in range(trials):
        out = work / f"collect_{i}"
        proc = spawn([*COLLECT, "--episodes", "150", "--out", str(out)], work / f"c{i}.log")
        killed, orphans = kill9_at(proc, kill_time(rng, duration))
        row.orphans += orphans
        code, err = worldvae([*COLLECT, "--episodes", "150", "--out", str(out)])
        row.add(code, None if code == 0 else is_one_line(err), not same_dataset(out, ref))
        n_killed += killed
    killed_note(row, n_killed, duration)
    return row


def kill_train_vae(
    work: Path, data: Path, ref: Path, duration: float, trials: int, rng: random.Random
) -> Row:
    row = Row("kill -9 during train-vae, then --resume")
    n_killed = 0
    for i in range(trials):
        out = work / f"vae_{i}"
        argv = ["train-vae", "--data", str(data), "--out", str(out), *VAE]
        proc = spawn(argv, work / f"v{i}.log")
        n_killed += kill9_at(proc, kill_time(rng, duration))[0]
        code, err = worldvae([*argv, "--resume"] if out.exists() else argv)
        lost = not same_file(
            out / "checkpoints" / "last" / "model.safetensors",
            ref / "checkpoints" / "last" / "model.safetensors",
        )
        row.add(code, None if code == 0 else is_one_line(err), lost)
    killed_note(row, n_killed, duration)
    return row


def agent_argv(model: Path, out: Path, hp: Path) -> list[str]:
    return ["train-agent", "--env", "CartPole-v1", "--obs", "latent", "--model", str(model),
            "--steps", "1536", "--checkpoint-freq", "256", "--eval-freq", "512",
            "--eval-episodes", "2", "--n-envs", "2", "--hyperparams", str(hp), "--seed", "0",
            "--device", "cpu", "--out", str(out)]  # fmt: skip


def kill_train_agent(
    work: Path, model: Path, ref: Path, hp: Path, duration: float, trials: int, rng: random.Random
) -> Row:
    """A re-run of a finished agent is refused by design, so a kill that came after the end
    is followed by no re-run; the bundle is compared with the reference either way."""
    row = Row("kill -9 during train-agent, then re-run")
    n_killed = 0
    for i in range(trials):
        out = work / f"agent_{i}"
        proc = spawn(agent_argv(model, out, hp), work / f"a{i}.log")
        killed = kill9_at(proc, kill_time(rng, duration))[0]
        n_killed += killed
        code, err = worldvae(agent_argv(model, out, hp)) if killed else (proc.returncode, "")
        row.add(code, None if code == 0 else is_one_line(err), not same_agent(out, ref))
    killed_note(row, n_killed, duration)
    return row


def kill_pipeline(work: Path, trials: int, rng: random.Random) -> Row:
    row = Row("kill -9 during pipeline --preset smoke, then re-run")
    ref = work / "pipeline_ref"
    t0 = time.time()
    code, _ = worldvae(["pipeline", "--preset", "smoke", "--out", str(ref)])
    duration = time.time() - t0
    want = json.loads((ref / "compare" / "results.json").read_text())["runs"] if code == 0 else []
    n_killed = 0
    for i in range(trials):
        out = work / f"pipeline_{i}"
        proc = spawn(["pipeline", "--preset", "smoke", "--out", str(out)], work / f"p{i}.log")
        killed, orphans = kill9_at(proc, kill_time(rng, duration))
        n_killed += killed
        row.orphans += orphans
        code, err = worldvae(["pipeline", "--preset", "smoke", "--out", str(out)])
        got = []
        if code == 0:
            got = json.loads((out / "compare" / "results.json").read_text())["runs"]
        keys = ("run", "final_return_mean", "auc")
        lost = [{k: r[k] for k in keys} for r in got] != [{k: r[k] for k in keys} for r in want]
        row.add(code, None if code == 0 else is_one_line(err), lost)
    killed_note(row, n_killed, duration)
    return row


def orphaned_workers(work: Path) -> Row:
    row = Row("collector parent killed alone (as by the OOM killer): workers exit")
    out = work / "orphans"
    proc = spawn(
        ["collect", "--env", "CartPole-v1", "--frame-size", "16", "--workers", "2",
         "--episodes", "2000", "--out", str(out)],
        work / "orphans.log",
    )  # fmt: skip
    t = time.time()
    while time.time() - t < 60 and len(descendants(proc.pid)) < 2:
        time.sleep(0.2)
    time.sleep(3.0)
    killed, orphans = kill9_at(proc, 0.0)
    row.add(137 if killed else proc.returncode)
    row.orphans += orphans
    row.note = f"{orphans} worker(s) alive 10 s after the parent's death"
    return row


def concurrent_writers(work: Path, data: Path, model: Path, hp: Path) -> list[Row]:
    rows = []
    row = Row("two collects into one folder, 1 s apart")
    out = work / "two_collects"
    first = spawn([*COLLECT, "--frames", "6000", "--out", str(out)], work / "two1.log")
    time.sleep(1.0)
    while not (out / ".worldvae.lock").exists() and first.poll() is None:
        time.sleep(0.1)
    code, err = worldvae([*COLLECT, "--frames", "3000", "--out", str(out)])
    row.add(code, is_one_line(err))
    first.wait()
    text = (work / "two1.log").read_text()
    claimed = int(text.rsplit("now holds ", 1)[1].split()[0]) if "now holds" in text else -1
    on_disk = len(list((out / "episodes").glob("ep_*.npz")))
    row.add(first.returncode, None, claimed != on_disk or first.returncode != 0)
    row.note = f"second refused: {'PID' in err}; first reports {claimed} episodes, disk {on_disk}"
    rows.append(row)

    row = Row("two train-agent into one folder")
    out = work / "two_agents"
    first = spawn(agent_argv(model, out, hp), work / "ta1.log")
    while not (out / ".worldvae.lock").exists() and first.poll() is None:
        time.sleep(0.1)
    code, err = worldvae(agent_argv(model, out, hp))
    row.add(code, is_one_line(err))
    first.wait()
    row.add(first.returncode, None, first.returncode != 0)
    row.note = f"second refused naming the PID: {'PID' in err}"
    rows.append(row)

    row = Row("two train-vae --resume into one run")
    out = work / "two_vaes"
    argv = ["train-vae", "--data", str(data), "--out", str(out), *VAE, "--resume"]
    first = spawn(argv, work / "tv1.log")
    while not (out / ".worldvae.lock").exists() and first.poll() is None:
        time.sleep(0.1)
    code, err = worldvae(argv)
    row.add(code, is_one_line(err))
    first.wait()
    row.add(first.returncode, None, first.returncode != 0)
    row.note = f"second refused naming the PID: {'PID' in err}"
    rows.append(row)
    return rows


def world_model_dirs(work: Path, data: Path, vae: Path) -> list[Row]:
    """encode-data and train-rnn keep the folder rules: one writer, nothing foreign deleted."""
    rows = []
    lat = work / "latents"
    code, err = worldvae(
        ["encode-data", "--data", str(data), "--model", str(vae), "--out", str(lat)]
    )
    assert code == 0, err
    row = Row("encode-data --overwrite into a latent dataset holding a foreign file")
    (lat / "notes.txt").write_text("mine")
    n_before = len(list((lat / "episodes").iterdir()))
    code, err = worldvae(
        ["encode-data", "--data", str(data), "--model", str(vae), "--out", str(lat), "--overwrite"]
    )
    kept = (lat / "notes.txt").is_file() and len(list((lat / "episodes").iterdir())) == n_before
    row.add(code, is_one_line(err), not kept)
    row.note = f"refused, notes and episodes kept: {code != 0 and kept}"
    (lat / "notes.txt").unlink()
    rows.append(row)

    row = Row("two train-rnn into one run")
    run = work / "rnn"
    argv = ["train-rnn", "--data", str(lat), "--out", str(run), "--epochs", "30",
            "--hidden-size", "16", "--n-gaussians", "2", "--device", "cpu"]  # fmt: skip
    first = spawn(argv, work / "rnn1.log")
    deadline = time.time() + 60
    while time.time() < deadline and not (run / ".worldvae.lock").is_file():
        time.sleep(0.1)
    code, err = worldvae([*argv, "--resume"])
    first.kill()
    first.wait()
    row.add(code, is_one_line(err))
    row.note = f"second refused naming the PID: {f'PID {first.pid}' in err}"
    rows.append(row)
    return rows


def flip_bit(path: Path, member: str) -> None:
    """Flip one bit in the middle of ``member``'s stored bytes inside the zip ``path``."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + o : info.header_offset + o + 2],
                                          "little") for o in (26, 28))  # fmt: skip
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def bit_flip(work: Path, ref: Path) -> Row:
    row = Row("a flipped bit in an episode's frames: verify, then re-run collect")
    out = work / "flipped"
    shutil.copytree(ref, out)
    victim = sorted((out / "episodes").glob("ep_*.npz"))[5]
    flip_bit(victim, "frames.npy")
    code, err = worldvae(["data", "verify", str(out)])
    found = code != 0 and victim.name in (err + code.__str__() + _stdout_of_verify(out))
    row.add(code)
    code, err = worldvae([*COLLECT, "--episodes", "150", "--out", str(out)])
    row.add(code, None if code == 0 else is_one_line(err), not same_dataset(out, ref))
    row.note = f"verify named the file: {found}; re-collected to the reference: {code == 0}"
    return row


def _stdout_of_verify(out: Path) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "worldvae", "data", "verify", str(out)],
        capture_output=True,
        text=True,
        env=ENV,
    )
    return r.stdout


def disk_full(work: Path, data: Path, ref_vae: Path) -> list[Row]:
    mnt = work / "tmpfs"
    mnt.mkdir(exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0  # fmt: skip
    if not ok:
        return [Row("disk full (tmpfs)", note="skipped: mount -t tmpfs is not allowed here")]
    rows = []
    try:
        row = Row("disk full during collect (1 MiB tmpfs), then room made and re-run")
        out = mnt / "ds"
        argv = [*COLLECT, "--episodes", "400", "--no-compress", "--out", str(out)]
        code, err = worldvae(argv)
        row.add(code, is_one_line(err))
        full_msg = "disk full" in err
        verify, _ = worldvae(["data", "verify", str(out)])
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        code2, _ = worldvae(argv)
        verify2, _ = worldvae(["data", "verify", str(out)])
        row.add(code2, None, verify != 0 or verify2 != 0)
        row.note = (
            f"message says 'disk full': {full_msg}; what was kept verifies: {verify == 0}; "
            f"re-run completes: {code2 == 0}"
        )
        rows.append(row)

        row = Row("disk full during train-vae (tmpfs), then room made and --resume")
        subprocess.run(["umount", str(mnt)], check=True)  # a tmpfs cannot shrink below its use
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=180k", "tmpfs", str(mnt)], check=True)
        out = mnt / "vae"
        argv = ["train-vae", "--data", str(data), "--out", str(out), *VAE]
        code, err = worldvae(argv)
        row.add(code, is_one_line(err))
        full_msg = "disk full" in err
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        code2, _ = worldvae([*argv, "--resume"])
        same = code2 == 0 and same_file(
            out / "checkpoints" / "last" / "model.safetensors",
            ref_vae / "checkpoints" / "last" / "model.safetensors",
        )
        row.add(code2, None, not same)
        row.note = (
            f"message says 'disk full': {full_msg}; --resume completes: {code2 == 0}; "
            f"final weights equal the reference: {same}"
        )
        rows.append(row)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    return rows


def bad_input(work: Path, data: Path, model: Path) -> list[Row]:
    yaml_dir = work / "yaml"
    yaml_dir.mkdir(exist_ok=True)
    files = {
        "broken": "ppo: [unclosed\n",
        "python_tag": "ppo: !!python/object/apply:os.system ['touch pwned']\n",
        "string_number": "ppo:\n  learning_rate: fast\n",
    }
    for name, text in files.items():
        (yaml_dir / f"{name}.yaml").write_text(text)
    bad_agent = work / "bad_agent"
    bad_agent.mkdir(exist_ok=True)
    (bad_agent / "config.json").write_text(
        json.dumps({"agent": {"obs": "pixel"}, "status": "complete"})
    )
    (bad_agent / "agent.zip").write_bytes(b"")
    o = str(work / "refused")
    agent = ["train-agent", "--env", "CartPole-v1", "--obs", "pixel", "--out", o]
    vae = ["train-vae", "--data", str(data), "--out", o]
    cases: dict[str, list[str]] = {
        "train-vae --epochs 0": [*vae, "--epochs", "0"],
        "train-vae --epochs -3": [*vae, "--epochs", "-3"],
        "train-vae --max-steps 0": [*vae, "--max-steps", "0"],
        "train-vae --batch-size larger than the data": [
            *vae,
            "--batch-size",
            "100000",
            "--channels",
            "8,16",
        ],
        "train-agent --steps 0": [*agent, "--steps", "0"],
        "train-agent --steps -1": [*agent, "--steps", "-1"],
        "train-agent --eval-episodes 0": [*agent, "--eval-episodes", "0"],
        "train-agent --eval-freq 0": [*agent, "--eval-freq", "0"],
        "train-agent --n-envs 0": [*agent, "--n-envs", "0"],
        "collect --frame-skip 0": [*COLLECT, "--frame-skip", "0", "--episodes", "1", "--out", o],
        "collect --workers 0": [*COLLECT, "--workers", "0", "--episodes", "1", "--out", o],
        "collect --frame-size 100000": [
            *COLLECT,
            "--frame-size",
            "100000",
            "--episodes",
            "1",
            "--out",
            o,
        ],
        "collect --env-kwarg malformed": [
            *COLLECT,
            "--env-kwarg",
            "oops",
            "--episodes",
            "1",
            "--out",
            o,
        ],
        "collect --env-kwarg unknown gym kwarg": [
            *COLLECT,
            "--env-kwarg",
            "bogus=1",
            "--episodes",
            "1",
            "--out",
            o,
        ],
        "collect --env-kwarg render_mode=human": [
            *COLLECT,
            "--env-kwarg",
            "render_mode=human",
            "--episodes",
            "1",
            "--out",
            o,
        ],
        "collect Hopper-v4 (mujoco missing)": [
            "collect",
            "--env",
            "Hopper-v4",
            "--episodes",
            "1",
            "--out",
            o,
        ],
        "compare --workers 0": [
            "compare",
            "--env",
            "CartPole-v1",
            "--model",
            str(model),
            "--workers",
            "0",
            "--out",
            o,
        ],
        "compare --seeds 0": [
            "compare",
            "--env",
            "CartPole-v1",
            "--model",
            str(model),
            "--seeds",
            "0",
            "--out",
            o,
        ],
        "compare with a missing model": [
            "compare",
            "--env",
            "CartPole-v1",
            "--model",
            str(work / "nope"),
            "--out",
            o,
        ],
        "compare with a model of another frame size": [
            "compare",
            "--env",
            "CartPole-v1",
            "--model",
            str(model),
            "--out",
            o,
        ],
        "inspect --frames -5": [
            "inspect",
            str(model),
            "--data",
            str(data),
            "--frames",
            "-5",
            "--out",
            o,
        ],
        "data info --n 0": ["data", "info", str(data), "--n", "0"],
        "evaluate an agent whose config.json lacks keys": ["evaluate", str(bad_agent)],
    }
    for name in files:
        cases[f"train-agent --hyperparams {name}.yaml"] = [
            *agent,
            "--hyperparams",
            str(yaml_dir / f"{name}.yaml"),
        ]
    rows = []
    for name, argv in cases.items():
        code, err = worldvae(argv, cwd=work)
        row = Row(f"bad input: {name}")
        row.add(code, is_one_line(err), Path(o).exists())
        line = next((x for x in err.splitlines() if x.startswith("worldvae: error:")), "")
        row.note = line.removeprefix("worldvae: error: ")[:110]
        rows.append(row)
        shutil.rmtree(o, ignore_errors=True)
    rows[-1].note += "; no file 'pwned' created" if not (work / "pwned").exists() else "; PWNED"
    return rows


def not_ours(work: Path, model: Path, hp: Path) -> list[Row]:
    rows = []
    notes = work / "notes"
    notes.mkdir(exist_ok=True)
    (notes / "todo.txt").write_text("keep me")
    (notes / "dataset").mkdir(exist_ok=True)
    before = sorted(p.name for p in notes.iterdir())
    for extra in ([], ["--overwrite"]):
        code, err = worldvae([*agent_argv(model, notes, hp), *extra])
        row = Row(f"train-agent --out a folder of notes {' '.join(extra)}".strip())
        row.add(code, is_one_line(err), sorted(p.name for p in notes.iterdir()) != before)
        rows.append(row)
    cwd = work / "cwd"
    cwd.mkdir(exist_ok=True)
    (cwd / "keep.txt").write_text("keep")
    code, err = worldvae([*agent_argv(model, Path("."), hp)], cwd=cwd)
    row = Row("train-agent --out . (a folder with files)")
    row.add(code, is_one_line(err), not (cwd / "keep.txt").exists())
    rows.append(row)
    for command in ("compare", "pipeline"):
        argv = (
            ["compare", "--env", "CartPole-v1", "--model", str(model), "--out", str(notes)]
            if command == "compare"
            else ["pipeline", "--preset", "smoke", "--out", str(notes)]
        )
        code, err = worldvae(argv)
        row = Row(f"{command} --out a folder of notes")
        row.add(code, is_one_line(err), sorted(p.name for p in notes.iterdir()) != before)
        rows.append(row)
    return rows


# ---- folder rules, pools, refusals before work (each found by an earlier run of this script) --
SMALL = [*COLLECT, "--max-episode-steps", "20"]


def error_line(stderr: str) -> str:
    line = next((x for x in stderr.splitlines() if x.startswith("worldvae: error:")), "")
    return line.removeprefix("worldvae: error: ")


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (the lock file aside) with its bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.name != LOCK_NAME
    }


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def wait_until(condition: Callable[[], bool], timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def lock_free(folder: Path) -> bool:
    try:
        with RunDirLock(folder, "faults"):
            return True
    except RuntimeError:
        return False


def tiny_model(path: Path, frame_size: int = 16, nan: bool = False) -> Path:
    """An untrained VAE of CartPole frames of ``frame_size`` pixels, recording its env spec."""
    import torch

    from worldvae.envspec import EnvSpec
    from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        kind="vae", frame_shape=(frame_size, frame_size, 3), latent_dim=4, channels=(4, 8)
    )
    model = Autoencoder(cfg)
    if nan:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("nan")
    spec = EnvSpec("CartPole-v1", frame_size=(frame_size, frame_size), backend="gymnasium")
    return save_model(model, path, extra={"data": spec.to_dict()})


def refused_row(case: str, argv: list[str], out: Path, said: str = "", **kw: Any) -> Row:
    """Run a command that must be refused before it writes ``out``."""
    t = time.time()
    code, err = worldvae(argv, **kw)
    took = time.time() - t
    row = Row(case)
    row.add(code, is_one_line(err))
    row.leftovers = int(out.exists() or out.is_symlink())
    line = error_line(err)
    row.note = (("" if said in line else f"MISSING '{said}': ") + line)[:110]
    if code == 0:
        row.note = "NOT REFUSED"
    row.note += f" ({took:.0f} s)" if took > 10 else ""
    return row


def merge_cases(work: Path, a: Path, b: Path) -> list[Row]:
    rows = []
    merge = ["data", "merge", str(a), str(b), "--overwrite", "--out"]

    row = Row("data merge --overwrite into a folder a collect is writing")
    out = work / "merge_busy"
    first = spawn([*COLLECT, "--episodes", "300", "--out", str(out)], work / "mb.log")
    wait_until(lambda: (out / EPISODES_DIR).is_dir(), 120, first)
    code, err = worldvae([*merge, str(out)])
    during = first.poll() is None
    row.add(code, is_one_line(err))
    first.wait()
    verify, _ = worldvae(["data", "verify", str(out)])
    n = len(list((out / EPISODES_DIR).glob("ep_*.npz")))
    row.add(first.returncode, None, first.returncode != 0 or verify != 0 or n != 300)
    row.note = (
        f"merge refused naming the collect's PID: {f'PID {first.pid}' in err} "
        f"(collect still running: {during}); collect ended with {n} of 300 episodes, "
        f"verify {'ok' if verify == 0 else 'FAILED'}"
    )
    rows.append(row)

    row = Row("data merge --overwrite --out a regular file")
    target = work / "merge_file.txt"
    target.write_text("mine")
    listing = names(work)
    code, err = worldvae([*merge, str(target)])
    row.add(code, is_one_line(err), target.read_text() != "mine")
    row.leftovers = len(names(work) - listing)
    row.note = error_line(err)[:110]
    rows.append(row)

    row = Row("data merge --overwrite into a dataset holding foreign files")
    out = work / "merge_foreign"
    shutil.copytree(a, out)
    (out / "notes.txt").write_text("mine")
    (out / EPISODES_DIR / "README").write_text("mine")
    before, listing = tree(out), names(work)
    code, err = worldvae([*merge, str(out)])
    row.add(code, is_one_line(err), tree(out) != before)
    row.leftovers = len(names(work) - listing)
    (out / "notes.txt").unlink()
    (out / EPISODES_DIR / "README").unlink()
    code2, _ = worldvae([*merge, str(out)])
    row.add(code2, None, code2 != 0)
    row.note = (
        f"names both: {'notes.txt' in err and 'episodes/README' in err}; "
        f"once moved out, the merge runs: {code2 == 0}"
    )
    rows.append(row)

    row = Row("data merge --overwrite --out a symbolic link to a dataset")
    real = work / "merge_real"
    shutil.copytree(b, real)
    link = work / "merge_link"
    link.symlink_to(real)
    before, listing = tree(real), names(work)
    code, err = worldvae([*merge, str(link)])
    row.add(code, is_one_line(err), not link.is_symlink() or tree(real) != before)
    row.leftovers = len(names(work) - listing)
    codes = [worldvae([*merge, str(real)])[0] for _ in range(2)]
    for c in codes:
        row.add(c, None, c != 0)
    row.leftovers += len(names(work) - listing)
    row.note = f"{error_line(err)[:70]}; merge into the folder itself, twice: {codes}"
    rows.append(row)
    return rows


def foreign_out_cases(work: Path, a: Path, data: Path, vae: Path) -> list[Row]:
    rows = []
    row = Row("collect --overwrite into a dataset with a foreign file in episodes/")
    ds = work / "collect_foreign"
    shutil.copytree(a, ds)
    (ds / EPISODES_DIR / "README").write_text("mine")
    before = tree(ds)
    argv = [*SMALL, "--episodes", "2", "--seed", "1", "--overwrite", "--out", str(ds)]
    code, err = worldvae(argv)
    row.add(code, is_one_line(err), tree(ds) != before)
    (ds / EPISODES_DIR / "README").unlink()
    code2, _ = worldvae(argv)
    row.add(code2, None, code2 != 0)
    row.note = f"names episodes/README: {'episodes/README' in err}; without it: exit {code2}"
    rows.append(row)

    notes = work / "foreign_notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    commands = {
        "inspect --out a folder of notes": (
            ["inspect", str(vae), "--data", str(data), "--frames", "32", "--device", "cpu",
             "--out"], notes, work / "inspect_new"),
        "data info --mosaic into a folder of notes": (
            ["data", "info", str(data), "--n", "16", "--mosaic"], notes / "m.png",
            work / "pics" / "m.png"),
    }  # fmt: skip
    for case, (argv, bad, good) in commands.items():
        row = Row(case)
        code, err = worldvae([*argv, str(bad)])
        row.add(code, is_one_line(err), names(notes) != {"keep.txt"})
        code2, _ = worldvae([*argv, str(good)])
        row.add(code2, None, code2 != 0)
        row.note = f"{error_line(err)[:80]}; into a new folder: exit {code2}"
        rows.append(row)
    return rows


def compare_argv(model: Path, hp: Path, out: Path, steps: int = 2048) -> list[str]:
    return ["compare", "--env", "CartPole-v1", "--model", str(model), "--obs", "latent",
            "--seeds", "2", "--workers", "2", "--steps", str(steps), "--eval-freq",
            str(steps // 2), "--eval-episodes", "1", "--final-episodes", "1", "--n-envs", "2",
            "--hyperparams", str(hp), "--no-probe", "--out", str(out)]  # fmt: skip


def killed_compare(work: Path, model: Path, hp: Path, sig: signal.Signals) -> Row:
    row = Row(f"{sig.name} to compare --workers 2: pool workers exit, re-run not refused")
    out = work / f"compare_{sig.name.lower()}"
    log = work / f"compare_{sig.name.lower()}.log"
    argv = compare_argv(model, hp, out)
    proc = spawn(argv, log)
    started = wait_until(lambda: len(list(out.glob(f"runs/*/{LOCK_NAME}"))) >= 2, 300, proc)
    time.sleep(1.0)
    below = descendants(proc.pid)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    deadline = time.time() + 15
    while time.time() < deadline and any(alive(k) for k in below):
        time.sleep(0.2)
    row.orphans = sum(alive(k) for k in below)
    text = log.read_text()
    one = None
    if sig == signal.SIGTERM:
        one = "worldvae: terminated" in text and "Traceback" not in text
    row.add(128 - proc.returncode if proc.returncode < 0 else proc.returncode, one)
    free = all(lock_free(f) for f in [out, *sorted(out.glob("runs/*"))])
    code, err = worldvae(argv)
    row.add(code, None if code == 0 else is_one_line(err), code != 0 or not started)
    row.note = (
        f"both runs under way: {started}; {len(below)} processes below it; locks free: {free}; "
        f"the same command re-run: exit {code}"
    )
    return row


def latent_data(work: Path, data: Path, vae: Path) -> Path:
    lat = work / "latents_m"
    if not lat.exists():
        code, err = worldvae(
            ["encode-data", "--data", str(data), "--model", str(vae), "--out", str(lat)]
        )
        assert code == 0, err
    return lat


def rnn_argv(lat: Path, out: Path) -> list[str]:
    return ["train-rnn", "--data", str(lat), "--out", str(out), "--epochs", "4",
            "--hidden-size", "16", "--n-gaussians", "2", "--batch-size", "8", "--seq-len", "16",
            "--checkpoint-every", "5", "--seed", "0", "--device", "cpu"]  # fmt: skip


def kill_train_rnn(work: Path, lat: Path, trials: int, rng: random.Random) -> Row:
    row = Row("kill -9 during train-rnn, then --resume")
    ref = work / "rnn_ref"
    t = time.time()
    code, err = worldvae(rnn_argv(lat, ref))
    assert code == 0, err
    duration = time.time() - t
    weights = Path("checkpoints") / "last" / "model.safetensors"
    n_killed = 0
    for i in range(trials):
        out = work / f"rnn_{i}"
        proc = spawn(rnn_argv(lat, out), work / f"rnn_{i}.log")
        n_killed += kill9_at(proc, kill_time(rng, duration))[0]
        argv = rnn_argv(lat, out)
        code, err = worldvae([*argv, "--resume"] if out.exists() else argv)
        row.add(
            code,
            None if code == 0 else is_one_line(err),
            not same_file(out / weights, ref / weights),
        )
    killed_note(row, n_killed, duration)
    return row


def agent_refusals(work: Path, vae: Path, hp: Path) -> list[Row]:
    (work / "neg_lr.yaml").write_text("ppo:\n  learning_rate: -0.001\n")
    (work / "nan_lr.yaml").write_text("ppo:\n  learning_rate: .nan\n")
    out = work / "agent_refused"
    base = ["train-agent", "--env", "CartPole-v1", "--steps", "64", "--n-envs", "1",
            "--eval-episodes", "1", "--eval-freq", "32", "--max-episode-steps", "20",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    latent = ["--obs", "latent", "--model", str(vae)]
    cases = {
        "pixel frames of 16 px": (["--obs", "pixel", "--frame-size", "16"], "36x36"),
        "--algo cmaes --obs latent": ([*latent, "--algo", "cmaes"], "latent+h"),
        "--algo sac on CartPole's discrete actions": ([*latent, "--algo", "sac"], "Discrete(2)"),
        "a negative learning rate": (
            [*latent, "--hyperparams", str(work / "neg_lr.yaml")], "learning_rate"),
        "a NaN learning rate": ([*latent, "--hyperparams", str(work / "nan_lr.yaml")], "finite"),
    }  # fmt: skip
    rows = [
        refused_row(f"train-agent refused before its first step: {case}", [*base, *opts], out, said)
        for case, (opts, said) in cases.items()
    ]
    row = Row("train-agent: the corrected command, in the refused ones' folder")
    code, err = worldvae([*base, *latent, "--hyperparams", str(hp)])
    row.add(code, None if code == 0 else is_one_line(err), code != 0)
    row.note = error_line(err)[:110]
    rows.append(row)
    return rows


def frame_size_refusals(work: Path) -> list[Row]:
    v32 = tiny_model(work / "v32", 32)
    out = work / "refused_32"
    return [
        refused_row(
            "compare with a V of 32 px frames and the pixel arm",
            ["compare", "--env", "CartPole-v1", "--model", str(v32), "--steps", "64", "--seeds",
             "1", "--out", str(out)], out, "at least 36x36"),
        refused_row(
            "pipeline --set env.frame_size=32",
            ["pipeline", "--preset", "smoke", "--set", "env.frame_size=32", "--out", str(out)],
            out, "at least 36x36"),
    ]  # fmt: skip


def records_elsewhere(work: Path, hp: Path) -> Row:
    """A project made with relative paths, compared from another folder with its own ./data."""
    row = Row("compare --obs pca from another folder holding its own ./data")
    proj, elsewhere = work / "proj", work / "elsewhere"
    proj.mkdir()
    elsewhere.mkdir()
    steps = [
        (proj, [*SMALL, "--frames", "600", "--out", "data"]),
        (proj, ["train-vae", "--data", "data", "--out", "vae", *VAE]),
        (elsewhere, [*SMALL, "--frames", "200", "--frame-skip", "2", "--out", "data"]),
    ]
    for cwd, argv in steps:
        code, err = worldvae(argv, cwd=cwd)
        assert code == 0, err
    argv = ["compare", "--env", "CartPole-v1", "--model", str(proj / "vae"), "--obs", "pca",
            "--seeds", "1", "--steps", "256", "--eval-freq", "128", "--eval-episodes", "1",
            "--final-episodes", "1", "--n-envs", "2", "--hyperparams", str(hp), "--no-probe",
            "--out", "cmp"]  # fmt: skip
    code, err = worldvae(argv, cwd=elsewhere)
    skips = []
    for cfg in (elsewhere / "cmp").rglob("config.json"):
        data = json.loads(cfg.read_text()).get("extra_info", {}).get("data", {})
        if "env_options" in data:
            skips.append((data["env_options"].get("frame_skip"), data.get("root")))
    ok = code == 0 and bool(skips) and all(s == 1 for s, _ in skips)
    row.add(code, None if code == 0 else is_one_line(err), not ok)
    row.note = (
        "the PCA arm fitted on the V's own frames (frame_skip 1), not on ./data (frame_skip 2)"
        if ok
        else f"WRONG DATA: {skips} {error_line(err)[:80]}"
    )
    return row


def cluster_refusals(work: Path, vae: Path) -> list[Row]:
    out = work / "cluster_out"
    rows = []
    for name, argv in {
        "collect": [*SMALL, "--episodes", "1", "--out", str(out)],
        "compare": ["compare", "--env", "CartPole-v1", "--model", str(vae), "--obs", "latent",
                    "--steps", "64", "--seeds", "1", "--out", str(out)],
    }.items():  # fmt: skip
        t = time.time()
        row = refused_row(
            f"{name} --cluster 127.0.0.1:1 (nothing listening)",
            [*argv, "--cluster", "127.0.0.1:1"],
            out,
            "no Ray cluster answers",
        )
        took = time.time() - t
        row.lost += int(took >= 10)
        row.note = f"{row.note[:80]}; failed in {took:.1f} s"
        rows.append(row)
    return rows


def sweep_refusals(work: Path, data: Path) -> list[Row]:
    out = work / "sweep_out"
    base = ["sweep", "--preset", "smoke", "--data", str(data), "--kinds", "ae",
            "--return-steps", "0", "--out"]  # fmt: skip
    rows = [
        refused_row(f"sweep {' '.join(flags)}", [*base, str(out), *flags], out, named)
        for flags, named in (
            (["--epochs", "0"], "--epochs"),
            (["--workers", "0"], "--workers"),
            (["--kinds", "ae,vqvae"], "--kinds"),
        )
    ]
    notes = work / "sweep_notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    for flags in ([], ["--overwrite"]):
        row = refused_row(
            f"sweep --out a folder of notes {' '.join(flags)}".strip(),
            [*base, str(notes), *flags],
            work / "never",
            "keep.txt",
        )
        row.lost = int(names(notes) != {"keep.txt"})
        rows.append(row)
    return rows


def pipeline_set_refusals(work: Path) -> list[Row]:
    out = work / "pipeline_refused"
    settings = {
        "vae.epochs={bad": "not a JSON value",
        "agent_steps=many": "agent_steps",
        "compare.algo=sac": "Discrete",
        "collect.policy=nope": "collect.policy",
        'compare.overrides={"ppo": {"learning_rate": -1}}': "learning_rate",
    }
    return [
        refused_row(
            f"pipeline --set {setting}",
            ["pipeline", "--preset", "smoke", "--set", setting, "--out", str(out)],
            out,
            said,
        )
        for setting, said in settings.items()
    ]


def _rewrite(path: Path, **members: np.ndarray) -> None:
    """Write an episode again with some members replaced (pickling allowed, numpy's default)."""
    np.savez_compressed(path, **(read_episode(path) | members))  # type: ignore[arg-type]


def unusable_data(work: Path, source: Path) -> list[Row]:
    """Data that reads back intact but cannot be used: verify names it, training refuses it."""

    def lying_manifest(root: Path) -> str:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
        (root / MANIFEST_NAME).write_text(json.dumps(manifest | {"frame_shape": [32, 32, 3]}))
        return MANIFEST_NAME

    def episode(root: Path) -> Path:
        return sorted((root / EPISODES_DIR).glob("ep_*.npz"))[2]

    def other_size(root: Path) -> str:
        path = episode(root)
        _rewrite(path, frames=np.ascontiguousarray(read_episode(path)["frames"][:, :8, :8]))
        return path.name

    def object_array(root: Path) -> str:
        path = episode(root)
        actions = read_episode(path)["actions"]
        _rewrite(path, actions=np.array([{"a": int(x)} for x in actions], dtype=object))
        return path.name

    def short_rewards(root: Path) -> str:
        path = episode(root)
        _rewrite(path, rewards=read_episode(path)["rewards"][:-1])
        return path.name

    def stray_copy(root: Path) -> str:
        shutil.copy(episode(root), root / EPISODES_DIR / "ep_0000001 copy.npz")
        return "ep_0000001 copy.npz"

    spoils: dict[str, Callable[[Path], str]] = {
        "a manifest whose frame shape lies": lying_manifest,
        "an episode of another frame size": other_size,
        "a member holding a pickled object array": object_array,
        "rewards shorter than actions": short_rewards,
        "a stray 'ep_0000001 copy.npz'": stray_copy,
    }
    rows = []
    for i, (case, spoil) in enumerate(spoils.items()):
        root = work / f"unusable_{i}"
        shutil.copytree(source, root)
        name = spoil(root)
        r = subprocess.run(
            [sys.executable, "-m", "worldvae", "data", "verify", str(root)],
            capture_output=True, text=True, env=ENV,
        )  # fmt: skip
        named = any(x.startswith("unusable: ") and name in x for x in r.stdout.splitlines())
        out = work / f"unusable_vae_{i}"
        code, err = worldvae(["train-vae", "--data", str(root), "--out", str(out), *VAE,
                              "--batch-size", "4"])  # fmt: skip
        row = Row(f"unusable data: {case}")
        row.add(r.returncode)
        row.add(code, is_one_line(err), not named)
        row.leftovers = int(out.exists())
        row.note = f"verify names it unusable: {named}; train-vae: {error_line(err)[:70]}"
        rows.append(row)
    return rows


def model_refusals(work: Path, data: Path) -> list[Row]:
    huge = tiny_model(work / "v_huge")
    cfg = json.loads((huge / "config.json").read_text())
    cfg["model"]["frame_shape"] = [1_000_000, 1_000_000, 3]
    (huge / "config.json").write_text(json.dumps(cfg))
    nan = tiny_model(work / "v_nan", nan=True)
    out = work / "model_refused"
    agent = ["train-agent", "--env", "CartPole-v1", "--obs", "latent", "--steps", "64",
             "--device", "cpu", "--out", str(out), "--model"]  # fmt: skip
    encode = ["encode-data", "--data", str(data), "--out", str(out), "--model"]
    return [
        refused_row("train-agent with a V whose config.json says 10^6 x 10^6 frames",
                    [*agent, str(huge)], out, "does not describe the weights"),
        refused_row("encode-data with a V whose config.json says 10^6 x 10^6 frames",
                    [*encode, str(huge)], out, "does not describe the weights"),
        refused_row("train-agent with NaN weights in V", [*agent, str(nan)], out, "non-finite"),
        refused_row("encode-data with NaN weights in V", [*encode, str(nan)], out, "non-finite"),
    ]  # fmt: skip


def cap_refusals(work: Path, lat: Path) -> list[Row]:
    out = work / "cap_refused"
    return [
        refused_row("collect --workers 256", [*SMALL, "--episodes", "1", "--workers", "256",
                    "--out", str(out)], out, "at most"),
        refused_row("train-rnn --hidden-size 16384", ["train-rnn", "--data", str(lat), "--out",
                    str(out), "--hidden-size", "16384", "--device", "cpu"], out, "GiB"),
    ]  # fmt: skip


def interruptions(work: Path, data: Path, vae: Path, hp: Path) -> list[Row]:
    rows = []
    row = Row("Ctrl-C (SIGINT) of train-vae")
    out = work / "vae_sigint"
    log = work / "vae_sigint.log"
    proc = spawn(["train-vae", "--data", str(data), "--out", str(out), *VAE, "--epochs", "1000"],
                 log)  # fmt: skip
    wait_until(lambda: (out / "checkpoints" / "last").exists(), 300, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    text = log.read_text()
    lines = [x for x in text.splitlines() if x.startswith("worldvae: interrupted")]
    row.add(proc.returncode, len(lines) == 1 and "Traceback" not in text)
    row.note = lines[0][:110] if lines else "NO interruption line"
    row.lost = int(not lines or "--resume" not in lines[0])
    rows.append(row)

    row = Row("early Ctrl-C of collect --workers 2 (the whole process group)")
    log = work / "collect_sigint.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worldvae", *COLLECT, "--workers", "2", "--episodes", "1000",
             "--out", str(work / "collect_sigint")],
            stdout=f, stderr=subprocess.STDOUT, env=ENV, start_new_session=True,
        )  # fmt: skip
    wait_until(lambda: len(descendants(proc.pid)) >= 2, 120, proc)
    time.sleep(0.3)  # the workers are still importing their modules
    below = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(2.0)
    row.orphans = sum(alive(k) for k in below)
    text = log.read_text()
    clean = "Traceback" not in text and "KeyboardInterrupt" not in text
    lines = [x for x in text.splitlines() if x.startswith("worldvae: interrupted")]
    row.add(proc.returncode, clean and len(lines) == 1)
    row.note = lines[0][:110] if lines else "NO interruption line"
    rows.append(row)

    rows.append(
        refused_row(
            "evaluate --workers 0",
            ["evaluate", str(work / "agent_refused"), "--workers", "0"],
            work / "never",
            ">= 1",
        )
    )
    row = Row("evaluate an unfinished agent run (killed)")
    out = work / "agent_unfinished"
    proc = spawn(agent_argv(vae, out, hp), work / "unfinished.log")
    wait_until(lambda: (out / "checkpoints").is_dir(), 300, proc)
    kill9_at(proc, 0.0)
    code, err = worldvae(["evaluate", str(out)])
    row.add(code, is_one_line(err))
    line = error_line(err)
    row.lost = int("train-agent" not in line)
    row.note = line[:110]
    rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| case | trials | exit codes | one error line | data lost | orphans | leftovers | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        one = "-" if r.one_line is None else ("yes" if r.one_line else "NO")
        codes = ", ".join(str(c) for c in r.exits) or "-"
        lines.append(
            f"| {r.case} | {r.trials} | {codes} | {one} | {r.lost} | {r.orphans} | "
            f"{r.leftovers} | {r.note} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=1, help="kill trials per command")
    p.add_argument("--pipeline-trials", type=int, default=None, help="default: --trials")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "faults")
    p.add_argument("--only", default="", help="comma list of case groups to run")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = args.out.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.time()
    print("references: collect, train-vae, train-agent ...", flush=True)
    took: dict[str, float] = {}

    def reference(name: str, argv: list[str]) -> None:
        t = time.time()
        code, err = worldvae(argv)
        assert code == 0, err
        took[name] = time.time() - t

    ref_data = work / "ref_data"
    reference("collect", [*COLLECT, "--episodes", "150", "--out", str(ref_data)])
    ref_vae = work / "ref_vae"
    reference("vae", ["train-vae", "--data", str(ref_data), "--out", str(ref_vae), *VAE])
    hp = work / "tiny.yaml"
    hp.write_text(HYPERPARAMS)
    ref_agent = work / "ref_agent"
    reference("agent", agent_argv(ref_vae, ref_agent, hp))
    print("references took " + ", ".join(f"{k} {v:.0f} s" for k, v in took.items()))

    def small() -> tuple[Path, Path]:
        """Two small datasets of CartPole frames (6 and 3 episodes of at most 20 steps)."""
        a, b = work / "small_a", work / "small_b"
        for out, n, seed in ((a, 6, 0), (b, 3, 1)):
            if not out.exists():
                code, err = worldvae([*SMALL, "--episodes", str(n), "--seed", str(seed),
                                      "--out", str(out)])  # fmt: skip
                assert code == 0, err
        return a, b

    def latents() -> Path:
        return latent_data(work, ref_data, ref_vae)

    groups = set(filter(None, args.only.split(",")))
    rows: list[Row] = []

    def want(name: str) -> bool:
        return not groups or name in groups

    steps = [
        ("collect", lambda: [kill_collect(work, ref_data, took["collect"], args.trials, rng)]),
        ("orphans", lambda: [orphaned_workers(work)]),
        (
            "vae",
            lambda: [kill_train_vae(work, ref_data, ref_vae, took["vae"], args.trials, rng)],
        ),
        (
            "agent",
            lambda: [
                kill_train_agent(work, ref_vae, ref_agent, hp, took["agent"], args.trials, rng)
            ],
        ),
        ("pipeline", lambda: [kill_pipeline(work, args.pipeline_trials or args.trials, rng)]),
        ("concurrent", lambda: concurrent_writers(work, ref_data, ref_vae, hp)),
        ("bitflip", lambda: [bit_flip(work, ref_data)]),
        ("diskfull", lambda: disk_full(work, ref_data, ref_vae)),
        ("world", lambda: world_model_dirs(work, ref_data, ref_vae)),
        ("ours", lambda: not_ours(work, ref_vae, hp)),
        ("badinput", lambda: bad_input(work, ref_data, ref_vae)),
        ("merge", lambda: merge_cases(work, *small())),
        ("foreign", lambda: foreign_out_cases(work, small()[0], ref_data, ref_vae)),
        ("pools", lambda: [killed_compare(work, ref_vae, hp, s) for s in KILLS]),
        ("rnn", lambda: [kill_train_rnn(work, latents(), args.trials, rng)]),
        ("agentrefused", lambda: agent_refusals(work, ref_vae, hp)),
        ("framesize", lambda: frame_size_refusals(work)),
        ("records", lambda: [records_elsewhere(work, hp)]),
        ("cluster", lambda: cluster_refusals(work, ref_vae)),
        ("sweep", lambda: sweep_refusals(work, ref_data)),
        ("pipelineset", lambda: pipeline_set_refusals(work)),
        ("unusable", lambda: unusable_data(work, small()[0])),
        ("models", lambda: model_refusals(work, ref_data)),
        ("caps", lambda: cap_refusals(work, latents())),
        ("interrupt", lambda: interruptions(work, ref_data, ref_vae, hp)),
    ]
    for name, step in steps:
        if want(name):
            print(f"{name} ... ({time.time() - t0:.0f} s)", flush=True)
            new = step()
            rows += new
            print(table(new).split("\n", 2)[2], flush=True)
    print()
    print(f"{len(rows)} cases in {time.time() - t0:.0f} s")
    print(table(rows))


if __name__ == "__main__":
    main()
