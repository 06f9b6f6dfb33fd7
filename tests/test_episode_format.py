"""Episode files of format 2 (zstd members), format 1 still read and resumed, and the
collector's writer thread: same files as writing in turn, failures reported by episode."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from envs import PolicySpec, collect
from envs.collector import _worker
from worldvae.data import Episode, Manifest, load_episode, write_episode
from worldvae.data.codecs import ZSTD_MAGIC, zstandard_module
from worldvae.data.episodes import (
    CorruptEpisodeError,
    read_episode,
    read_headers,
    verify_episode,
)
from worldvae.data.manifest import EPISODES_DIR, FORMAT_VERSION
from worldvae.data.writer import EpisodeWriteError, EpisodeWriter, episode_path
from worldvae.envspec import EnvSpec

CART = EnvSpec("CartPole-v1", frame_size=(16, 16))
COMPAT_DATA = Path(__file__).resolve().parent / "fixtures" / "compat_v1" / "data"


def _episode(t: int = 30, seed: int = 3, states: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    frames = np.zeros((t + 1, 16, 16, 3), np.uint8)
    frames[:, 4:8, 4:8] = rng.integers(0, 256, (t + 1, 1, 1, 3), dtype=np.uint8)
    return Episode(
        frames=frames,
        actions=rng.standard_normal((t, 3)).astype(np.float32),
        rewards=rng.standard_normal(t).astype(np.float32),
        terminated=np.r_[np.zeros(t - 1, bool), True],
        truncated=np.zeros(t, bool),
        seed=seed,
        states=rng.standard_normal((t + 1, 4)).astype(np.float32) if states else None,
    )


def _assert_episodes_equal(a: Episode, b: Episode) -> None:
    for key in ("frames", "actions", "rewards", "terminated", "truncated", "states"):
        x, y = getattr(a, key), getattr(b, key)
        if x is None or y is None:
            assert x is y, key
            continue
        assert x.dtype == y.dtype, key
        np.testing.assert_array_equal(x, y, err_msg=key)
    assert a.seed == b.seed


def _manifest(root: Path) -> None:
    Manifest(
        env_id="Synthetic-v0",
        env_options={},
        frame_shape=(16, 16, 3),
        policy={"name": "random", "params": {}},
        seed=0,
    ).save(root)


# ---- the file format ------------------------------------------------------------------------


def test_format_2_round_trip_keeps_every_member(tmp_path):
    ep = _episode()
    write_episode(tmp_path / "e.npz", ep)
    back = load_episode(tmp_path / "e.npz")
    _assert_episodes_equal(ep, back)
    assert back.frames.flags.writeable
    with zipfile.ZipFile(tmp_path / "e.npz") as z:
        for info in z.infolist():  # stored by zip, each one zstd frame of its .npy bytes
            assert info.compress_type == zipfile.ZIP_STORED
            assert z.read(info).startswith(ZSTD_MAGIC), info.filename
    headers = read_headers(tmp_path / "e.npz")
    assert headers["frames"] == ((31, 16, 16, 3), np.dtype(np.uint8))
    verify_episode(tmp_path / "e.npz")


def test_the_same_episode_gives_the_same_bytes(tmp_path):
    write_episode(tmp_path / "a.npz", _episode())
    write_episode(tmp_path / "b.npz", _episode())
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


@pytest.mark.parametrize(("compress", "codec"), [(True, "zlib"), (False, "zstd")])
def test_format_1_files_are_plain_npz_and_read_back(tmp_path, compress, codec):
    ep = _episode(states=False)
    write_episode(tmp_path / "e.npz", ep, compress=compress, codec=codec)
    with np.load(tmp_path / "e.npz", allow_pickle=False) as z:  # what numpy alone reads
        np.testing.assert_array_equal(z["frames"], ep.frames)
    _assert_episodes_equal(ep, load_episode(tmp_path / "e.npz"))


def test_a_flipped_bit_in_a_zstd_member_is_reported_by_name(tmp_path):
    path = tmp_path / "e.npz"
    write_episode(path, _episode())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("frames.npy")
    raw = bytearray(path.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    raw[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptEpisodeError, match=r"frames\.npy"):
        verify_episode(path)
    with pytest.raises(CorruptEpisodeError, match=str(path)):
        read_episode(path)
    read_episode(path, keys=("rewards",))  # the other members are intact


def test_unknown_codec_is_refused_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match="zstd, zlib, none"):
        write_episode(tmp_path / "e.npz", _episode(), codec="lz5")


def test_the_zstandard_package_is_installed():
    """A dependency: without it, format 2 files would fail to read (with an install hint)."""
    assert zstandard_module().__name__ == "zstandard"


# ---- format 1 datasets: read, resumed in their own format, merged with new ones -------------------


@pytest.fixture
def old_dataset(tmp_path: Path) -> Path:
    """A copy of the dataset that the code before format 2 wrote (zlib, format_version 1)."""
    return Path(shutil.copytree(COMPAT_DATA, tmp_path / "old"))


def test_a_format_1_dataset_resumes_in_format_1(old_dataset):
    before = {p.name: p.read_bytes() for p in (old_dataset / EPISODES_DIR).iterdir()}
    manifest = Manifest.load(old_dataset)
    assert manifest.format_version == 1 < FORMAT_VERSION
    r = collect(old_dataset, manifest.env_spec, n_episodes=4, seed=manifest.seed, progress=False)
    assert (r.new_episodes, r.total_episodes) == (1, 4)
    assert Manifest.load(old_dataset).format_version == 1
    for name, data in before.items():
        assert (old_dataset / EPISODES_DIR / name).read_bytes() == data
    new = episode_path(old_dataset, 3)
    with zipfile.ZipFile(new) as z:
        assert z.getinfo("frames.npy").compress_type == zipfile.ZIP_DEFLATED
    with np.load(new, allow_pickle=False) as z:  # readable by the code before format 2
        assert z["frames"].shape[1:] == (16, 16, 3)


def test_a_manifest_of_a_newer_format_is_refused(old_dataset):
    path = old_dataset / "manifest.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"format_version": 99}))
    manifest = Manifest.load(old_dataset)
    with pytest.raises(ValueError, match="newer than this worldvae knows"):
        collect(old_dataset, manifest.env_spec, n_episodes=4, progress=False)


# ---- the writer thread ------------------------------------------------------------------------


def test_writer_thread_reports_each_episode_once_it_is_on_disk(tmp_path):
    _manifest(tmp_path)
    seen: list[tuple[int, int, bool]] = []

    def on_written(index: int, n_frames: int) -> None:
        seen.append((index, n_frames, episode_path(tmp_path, index).is_file()))

    with EpisodeWriter(tmp_path, on_written=on_written, max_pending=1) as writer:
        for i in range(4):
            writer.submit(i, _episode(t=10 + i, seed=i))
    assert seen == [(i, 11 + i, True) for i in range(4)]
    for i in range(4):
        _assert_episodes_equal(_episode(t=10 + i, seed=i), load_episode(episode_path(tmp_path, i)))


def test_writer_queue_is_bounded(tmp_path):
    _manifest(tmp_path)
    release = threading.Event()
    writer = EpisodeWriter(tmp_path, max_pending=1, on_written=lambda i, n: release.wait(10))
    writer.submit(0, _episode())  # taken by the thread, which then waits in on_written
    writer.submit(1, _episode())  # fills the queue
    third = threading.Thread(target=writer.submit, args=(2, _episode()), daemon=True)
    third.start()
    third.join(0.5)
    assert third.is_alive()  # blocked: at most max_pending episodes wait
    release.set()
    third.join(10)
    writer.close()
    assert sorted(p.name for p in (tmp_path / EPISODES_DIR).iterdir()) == [
        "ep_0000000.npz",
        "ep_0000001.npz",
        "ep_0000002.npz",
    ]


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_write_surfaces_naming_the_episode(tmp_path, background):
    _manifest(tmp_path)
    (tmp_path / EPISODES_DIR).write_text("a file where the episodes' folder goes")
    writer = EpisodeWriter(tmp_path, background=background)
    with pytest.raises(EpisodeWriteError, match=r"writing episode 5 to .*ep_0000005\.npz failed"):
        writer.submit(5, _episode())
        writer.close()
    with pytest.raises(EpisodeWriteError, match="episode 5") as info:
        writer.submit(6, _episode())  # the writer stays failed
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(EpisodeWriteError):
        writer.close()


def test_a_failed_write_stops_the_collector_worker(tmp_path):
    """In a real worker process: episode 0 is played, its write fails on the writer thread,
    and the worker reports that error (naming episode 0) instead of playing on."""
    _manifest(tmp_path)
    (tmp_path / EPISODES_DIR).write_text("a file where the episodes' folder goes")
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for item in (0, 1, 2, None):
        tasks.put(item)
    worker = ctx.Process(
        target=_worker,
        args=(CART, PolicySpec("random"), 0, str(tmp_path), True, tasks, results),
        daemon=True,
    )
    worker.start()
    messages = []
    while not messages or messages[-1][0] not in ("error", "exit"):
        messages.append(results.get(timeout=120))
    worker.join(30)
    kind, index, payload = messages[-1]
    assert kind == "error" and index in (1, 2)
    assert "EpisodeWriteError: writing episode 0" in payload
    assert not any(m[0] == "done" for m in messages)
    assert messages[0][0] == "ready"


@pytest.mark.slow
def test_threaded_and_inline_writes_give_the_same_files(tmp_path):
    kw = {"n_episodes": 4, "seed": 5, "progress": False}
    a = collect(tmp_path / "a", CART, background_writes=True, **kw)
    b = collect(tmp_path / "b", CART, background_writes=False, **kw)
    assert a.total_episodes == b.total_episodes == 4
    files_a = sorted((tmp_path / "a" / EPISODES_DIR).iterdir())
    files_b = sorted((tmp_path / "b" / EPISODES_DIR).iterdir())
    assert [p.name for p in files_a] == [p.name for p in files_b]
    for x, y in zip(files_a, files_b, strict=True):
        assert x.read_bytes() == y.read_bytes(), x.name
    assert Manifest.load(tmp_path / "a").format_version == FORMAT_VERSION == 2
    assert a.startup_seconds is not None and 0 < a.startup_seconds < a.seconds
