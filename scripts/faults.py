"""The fault catalogue, run for real: kills, concurrent writers, a bit flip, a full disk, bad input.

Every case runs the ``worldvae`` command in subprocesses on tiny budgets (CartPole frames of
16x16, one collector worker) and checks three things:

* the exit status (non-zero for a refusal or a failure, zero for a success);
* that a failure printed exactly one ``worldvae: error:`` line and no traceback;
* that nothing was lost: after a ``kill -9`` and a re-run, the dataset, the VAE weights or the
  agent's weights equal those of an uninterrupted reference run, bit for bit; a refused writer
  changed nothing; no worker process outlived its parent.

It prints a Markdown table (one row per case). The full-disk cases need ``mount -t tmpfs``
(root); where mounting is not allowed they are reported as skipped.

    python scripts/faults.py --trials 5 --out runs/faults
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
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
HYPERPARAMS = "ppo:\n  n_steps: 64\n  batch_size: 64\n  n_epochs: 1\n"


@dataclass
class Row:
    case: str
    trials: int = 0
    exits: list[int] = field(default_factory=list)
    one_line: bool | None = None
    lost: int = 0
    orphans: int = 0
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
    for path in sorted((root / "episodes").glob("ep_*.npz")):
        with np.load(path, allow_pickle=False) as z:
            out[path.name] = {k: z[k] for k in z.files}
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


def table(rows: list[Row]) -> str:
    lines = [
        "| case | trials | exit codes | one error line | data lost | orphans | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        one = "-" if r.one_line is None else ("yes" if r.one_line else "NO")
        codes = ", ".join(str(c) for c in r.exits) or "-"
        lines.append(
            f"| {r.case} | {r.trials} | {codes} | {one} | {r.lost} | {r.orphans} | {r.note} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5, help="kill trials per command")
    p.add_argument("--pipeline-trials", type=int, default=2)
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
        ("pipeline", lambda: [kill_pipeline(work, args.pipeline_trials, rng)]),
        ("concurrent", lambda: concurrent_writers(work, ref_data, ref_vae, hp)),
        ("bitflip", lambda: [bit_flip(work, ref_data)]),
        ("diskfull", lambda: disk_full(work, ref_data, ref_vae)),
        ("world", lambda: world_model_dirs(work, ref_data, ref_vae)),
        ("ours", lambda: not_ours(work, ref_vae, hp)),
        ("badinput", lambda: bad_input(work, ref_data, ref_vae)),
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
