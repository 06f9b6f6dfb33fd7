"""``data merge``, ``collect``, ``inspect`` and ``data info`` follow the folder rules: one writer
(a lock naming the holder), nothing written into or deleted from a folder that is not theirs,
no temporaries that block the corrected command; an unreachable ``--cluster`` fails fast."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from agents.cli.main import main
from tests.conftest import repo_pythonpath, write_synthetic_dataset
from worldvae.data import EpisodeDataset, Manifest, writer
from worldvae.rundir import LOCK_NAME, RunDirBusyError, RunDirLock

COLLECT = ["collect", "--env", "CartPole-v1", "--frame-size", "16", "--max-episode-steps", "20"]


def _error(capsys, argv: list[str]) -> str:
    """Run ``argv``; assert it failed with exactly one error line and return that line."""
    status = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("worldvae: error:")]
    assert status == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (the lock file aside) with its bytes (None for a folder)."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.name != LOCK_NAME
    }


@pytest.fixture
def sources(tmp_path: Path) -> tuple[Path, Path]:
    a = write_synthetic_dataset(tmp_path / "a", n_episodes=3, length=5)
    b = write_synthetic_dataset(tmp_path / "b", n_episodes=2, length=5, seed=1)
    return a, b


def _merge(sources, out: Path, *flags: str) -> list[str]:
    return ["data", "merge", str(sources[0]), str(sources[1]), "--out", str(out), *flags]


# -- 1. one writer: merge takes the dataset's lock --------------------------------------------


def test_merge_is_refused_while_another_process_writes_the_folder(tmp_path, sources, capsys):
    out = write_synthetic_dataset(tmp_path / "out", n_episodes=4, length=5, seed=9)
    before = _tree(out)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from worldvae.rundir import RunDirLock; "
         f"RunDirLock({str(out)!r}, 'collect').acquire(); print('locked', flush=True); "
         "time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONPATH": repo_pythonpath()},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = _error(capsys, _merge(sources, out, "--overwrite"))
        assert f"in use by another worldvae process (PID {holder.pid})" in line
        assert _tree(out) == before  # the writer's episodes and manifest untouched
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    finally:
        holder.kill()
        holder.wait()
    assert main(_merge(sources, out, "--overwrite")) == 0  # the lock died with its holder
    assert len(EpisodeDataset(out, val_fraction=0.0).episodes) == 5


def test_a_merge_in_progress_holds_the_folder_until_it_is_done(tmp_path, sources, monkeypatch):
    out = tmp_path / "out"
    real_link, real_dir = writer._link_episodes, writer.atomic_dir
    seen = []

    def link_while_checking(roots, manifests, tmp):
        with pytest.raises(RunDirBusyError, match=f"PID {os.getpid()}"):
            RunDirLock(out, "collect").acquire()  # a collect into --out is refused meanwhile
        seen.append("building")
        return real_link(roots, manifests, tmp)

    @contextlib.contextmanager
    def replace_then_check(target):
        with real_dir(target) as tmp:
            yield tmp
        with pytest.raises(RunDirBusyError):  # the new folder came in locked
            RunDirLock(target, "collect").acquire()
        seen.append("renamed")

    monkeypatch.setattr(writer, "_link_episodes", link_while_checking)
    monkeypatch.setattr(writer, "atomic_dir", replace_then_check)
    writer.merge_datasets(sources, out)
    assert seen == ["building", "renamed"]
    with RunDirLock(out, "collect"):  # free once the merge returned
        pass


# -- 2. nothing written into, or deleted from, what is not ours -------------------------------


def test_merge_refuses_a_file_at_out_and_leaves_it(tmp_path, sources, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = _error(capsys, _merge(sources, target, "--overwrite"))
    assert "exists and is not a folder" in line and "choose another --out" in line
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "notes.txt"]


def test_merge_overwrite_refuses_a_dataset_holding_foreign_entries(tmp_path, sources, capsys):
    out = write_synthetic_dataset(tmp_path / "out", n_episodes=4, length=5, seed=9)
    (out / "notes.txt").write_text("mine")
    (out / "plots").mkdir()
    (out / "plots" / "p.txt").write_text("mine")
    (out / "episodes" / "README").write_text("mine")
    before = _tree(out)
    line = _error(capsys, _merge(sources, out, "--overwrite"))
    assert "notes.txt" in line and "plots" in line and "episodes/README" in line
    assert "nothing was changed" in line and "move them out" in line
    assert _tree(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # once the foreign files are moved out, --overwrite replaces the dataset's own files
    for name in ("notes.txt", "plots", "episodes/README"):
        shutil.move(out / name, tmp_path / Path(name).name)
    (out / "mosaic.png").write_bytes(b"old mosaic")
    assert main(_merge(sources, out, "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME, "episodes", "manifest.json"]
    assert Manifest.load(out).policy["name"] == "merged"
    assert len(EpisodeDataset(out, val_fraction=0.0).episodes) == 5


def test_merge_refuses_a_folder_that_is_not_a_dataset(tmp_path, sources, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for flags in ((), ("--overwrite",)):
        line = _error(capsys, _merge(sources, out, *flags))
        assert "is not a worldvae dataset" in line and "keep.txt" in line
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # no lock file either


def test_merge_into_a_symlink_is_refused_and_leaves_nothing_behind(tmp_path, sources, capsys):
    real = write_synthetic_dataset(tmp_path / "real", n_episodes=4, length=5, seed=9)
    link = tmp_path / "link"
    link.symlink_to(real)
    before = _tree(real)
    line = _error(capsys, _merge(sources, link, "--overwrite"))
    assert "is a symbolic link" in line and "give the folder itself" in line
    assert link.is_symlink() and _tree(real) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # the corrected command works, and so does the one after it
    for _ in range(2):
        assert main(_merge(sources, real, "--overwrite")) == 0
        assert len(EpisodeDataset(real, val_fraction=0.0).episodes) == 5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_stale_old_link_from_an_earlier_merge_does_not_block_merging(tmp_path, sources):
    out = write_synthetic_dataset(tmp_path / "out", n_episodes=4, length=5, seed=9)
    (tmp_path / ".out.old").symlink_to(sources[0])  # what a merge into a link used to leave
    for _ in range(2):
        writer.merge_datasets(sources, out, overwrite=True)
    assert not (tmp_path / ".out.old").exists() and not (tmp_path / ".out.old").is_symlink()
    assert len(EpisodeDataset(sources[0], val_fraction=0.0).episodes) == 3  # the link's target


@pytest.mark.slow
def test_collect_overwrite_keeps_foreign_files_and_refuses_foreign_folders(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert main([*COLLECT, "--episodes", "3", "--out", str(ds)]) == 0
    (ds / "episodes" / "README").write_text("mine")
    before = _tree(ds)
    line = _error(capsys, [*COLLECT, "--episodes", "2", "--seed", "1", "--out", str(ds),
                           "--overwrite"])  # fmt: skip
    assert "episodes/README" in line and "nothing was changed" in line
    assert _tree(ds) == before

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    line = _error(capsys, [*COLLECT, "--episodes", "1", "--out", str(notes), "--overwrite"])
    assert "is not a worldvae dataset" in line and "keep.txt" in line
    assert sorted(p.name for p in notes.iterdir()) == ["keep.txt"]  # not adopted, no lock left

    afile = tmp_path / "afile"
    afile.write_text("mine")
    line = _error(capsys, [*COLLECT, "--episodes", "1", "--out", str(afile)])
    assert "exists and is not a folder" in line and afile.read_text() == "mine"

    # without the foreign file, --overwrite replaces the dataset's own files only
    (ds / "episodes" / "README").unlink()
    (ds / "mosaic.png").write_bytes(b"old mosaic")
    assert main([*COLLECT, "--episodes", "2", "--seed", "1", "--out", str(ds),
                 "--overwrite"]) == 0  # fmt: skip
    assert sorted(p.name for p in (ds / "episodes").iterdir()) == [
        "ep_0000000.npz",
        "ep_0000001.npz",
    ]
    assert sorted(p.name for p in ds.iterdir()) == [LOCK_NAME, "episodes", "manifest.json"]
    assert Manifest.load(ds).seed == 1


def test_data_info_writes_its_mosaic_only_where_it_may(tmp_path, capsys):
    ds = write_synthetic_dataset(tmp_path / "ds", n_episodes=3, length=5)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    line = _error(capsys, ["data", "info", str(ds), "--mosaic", str(notes / "m.png")])
    assert "keep.txt" in line and "nothing was written" in line
    assert sorted(p.name for p in notes.iterdir()) == ["keep.txt"]
    line = _error(capsys, ["data", "info", str(ds), "--mosaic", str(notes)])
    assert "is a folder" in line
    line = _error(capsys, ["data", "info", str(ds), "--mosaic", str(notes / "keep.txt" / "m.png")])
    assert "is not a folder" in line and (notes / "keep.txt").read_text() == "mine"
    # a new folder, again (a re-run), and the dataset itself are fine
    for _ in range(2):
        assert main(["data", "info", str(ds), "--mosaic", str(tmp_path / "pics" / "m.png")]) == 0
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [LOCK_NAME, "m.png"]
    assert main(["data", "info", str(ds)]) == 0 and (ds / "mosaic.png").is_file()


def test_inspect_refuses_a_foreign_out_and_reruns_into_its_own(tmp_path, capsys):
    from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(4, 8))
    model = save_model(Autoencoder(cfg), tmp_path / "model")
    data = write_synthetic_dataset(tmp_path / "data", n_episodes=6, length=5)
    base = ["inspect", str(model), "--data", str(data), "--frames", "32", "--device", "cpu"]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    line = _error(capsys, [*base, "--out", str(notes)])
    assert "keep.txt" in line and "nothing was changed" in line
    assert sorted(p.name for p in notes.iterdir()) == ["keep.txt"]
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "is not a folder" in _error(capsys, [*base, "--out", str(afile)])
    for _ in range(2):  # a new folder, then the same one again
        assert main([*base, "--out", str(tmp_path / "insp")]) == 0
    assert (tmp_path / "insp" / "summary.json").is_file()


# -- 3. an unreachable --cluster fails in seconds ---------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_probe_needs_no_ray_and_names_the_address(monkeypatch):
    from envs.cluster import connect_ray, probe_address

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe_address(f"127.0.0.1:{server.getsockname()[1]}")  # something answers: no error
    port = _closed_port()
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # no Ray, initialised or not
    monkeypatch.setattr("envs.cluster.import_ray", lambda: pytest.fail("Ray was needed"))
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConnectionError, match=f"no Ray cluster answers at {address}"):
            connect_ray(address)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"RAY_ADDRESS=127.0.0.1:{port}"):
        connect_ray("ray")
    with pytest.raises(ValueError, match="names no host and port"):
        connect_ray("head-node")


def test_collect_with_nothing_listening_at_the_cluster_fails_fast(tmp_path):
    out = tmp_path / "ds"
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "worldvae", *COLLECT, "--episodes", "1", "--out", str(out),
         "--cluster", address],
        capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONPATH": repo_pythonpath(), "SDL_VIDEODRIVER": "dummy"},
    )  # fmt: skip
    assert time.monotonic() - start < 60
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"worldvae: error: no Ray cluster answers at {address}"), r.stderr
    assert "ray start --head" in last and "--cluster local" in last
    assert not out.exists()


def test_a_worldmodels_pipeline_folder_is_its_own_after_the_controllers_stage(tmp_path, capsys):
    """The controllers and scoring stages' folders are the pipeline's: a re-run is refused only
    for what the pipeline never writes, and names nothing else."""
    from agents.pipeline import PIPELINE_ENTRIES

    out = tmp_path / "wm"
    for name in PIPELINE_ENTRIES:
        if not name.endswith(".json"):
            (out / name).mkdir(parents=True)
    (out / "world_models" / "drivers.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    line = _error(capsys, ["pipeline", "--preset", "worldmodels", "--out", str(out)])
    assert "not a pipeline folder (it holds notes.txt)" in line, line
    assert _tree(out) == before
    assert {"controllers", "world_models", "canonical.json", "data12", "rnn12"} <= set(
        PIPELINE_ENTRIES
    )
