"""Data that reads back intact but cannot be used is named, file by file, before anything runs.

``data verify`` checks every episode against its manifest and the other episodes; the loaders
behind train-vae, encode-data, train-rnn and data merge refuse the same files up front, naming
the file and the fix, and leave no folder that would block the corrected command. One listing
of ``episodes/`` serves every command, so a stray name is refused alike everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.cli.main import main
from tests.conftest import write_synthetic_dataset
from tests.latent_fixtures import write_synthetic_latents
from worldvae.data import EpisodeDataset, read_episode
from worldvae.data.dataset import verify_dataset
from worldvae.data.episodes import InvalidEpisodeError, episode_layout, layout_problems
from worldvae.data.latents import LatentDataset
from worldvae.data.manifest import (
    EPISODES_DIR,
    MANIFEST_NAME,
    StrayEpisodeFileError,
    episode_filename,
    is_episode_name,
    list_episode_files,
)
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

FRAME_SHAPE = (16, 16, 3)


def _members(path: Path) -> dict[str, np.ndarray]:
    return read_episode(path, ("frames", "actions", "rewards", "terminated", "truncated", "seed"))


def _rewrite(path: Path, **members: np.ndarray) -> None:
    """Write ``path`` again with some members replaced (pickling allowed, as numpy's default)."""
    written: dict[str, Any] = _members(path) | members
    np.savez_compressed(path, **written)


def _other_frame_size(path: Path) -> None:
    frames = _members(path)["frames"]
    _rewrite(path, frames=np.ascontiguousarray(frames[:, :8, :8]))


def _object_actions(path: Path) -> None:
    actions = _members(path)["actions"]
    _rewrite(path, actions=np.array([{"a": int(a)} for a in actions], dtype=object))


def _short_rewards(path: Path) -> None:
    _rewrite(path, rewards=_members(path)["rewards"][:-1])


# what is done to an episode, and what the message must say about it
FRAMES_SAID = r"frames has shape \(\d+, 8, 8, 3\), expected \(T\+1, 16, 16, 3\) from the manifest"
STEPS_SAID = (
    r"disagree on the number of steps T: frames \d+ \(T\+1\), actions \d+ \(T\), rewards \d+"
)
UNUSABLE: dict[str, tuple[Callable[[Path], None], str]] = {
    "other frame size": (_other_frame_size, FRAMES_SAID),
    "object array": (_object_actions, r"actions holds Python objects"),
    "short rewards": (_short_rewards, STEPS_SAID),
}


def _episode(root: Path, index: int) -> Path:
    return root / EPISODES_DIR / episode_filename(index)


def _cartpole_dataset(root: Path, n_episodes: int, seed: int = 0) -> Path:
    """A synthetic dataset recorded as CartPole's (two actions), so encode-data can build its
    env's action encoding."""
    write_synthetic_dataset(root, n_episodes=n_episodes, length=8, seed=seed)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    (root / MANIFEST_NAME).write_text(json.dumps(manifest | {"env_id": "CartPole-v1"}))
    return root


@pytest.mark.parametrize("kind", sorted(UNUSABLE))
def test_loading_names_the_unusable_file_what_is_wrong_and_the_fix(tmp_path, kind):
    root = write_synthetic_dataset(tmp_path / "ds", n_episodes=6, length=8)
    spoil, said = UNUSABLE[kind]
    spoil(_episode(root, 4))
    with pytest.raises(InvalidEpisodeError, match=said) as caught:
        EpisodeDataset(root)
    message = str(caught.value)
    assert episode_filename(4) in message and f"worldvae data verify {root}" in message
    # skipping unreadable episodes skips this one too, and only this one
    ds = EpisodeDataset(root, skip_corrupt=True)
    assert [e.index for e in ds.episodes] == [0, 1, 2, 3, 5]
    assert [p.name for p in ds.corrupt] == [episode_filename(4)]


def test_verify_names_every_unusable_file_and_keeps_the_rest(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", n_episodes=8, length=8)
    spoiled = {}
    for index, kind in enumerate(sorted(UNUSABLE), start=2):
        UNUSABLE[kind][0](_episode(root, index))
        spoiled[episode_filename(index)] = UNUSABLE[kind][1]
    shutil.copy(_episode(root, 1), root / EPISODES_DIR / "ep_0000001 copy.npz")
    shutil.copy(_episode(root, 1), root / EPISODES_DIR / "ep_1.npz")
    assert main(["data", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("unusable: ")]
    assert len(lines) == 5, out
    for name, said in spoiled.items():
        (line,) = [line for line in lines if f"{EPISODES_DIR}/{name}:" in line]
        assert re.search(said, line), line
    for stray in ("ep_0000001 copy.npz", "ep_1.npz"):
        (line,) = [line for line in lines if f"{EPISODES_DIR}/{stray}:" in line]
        assert "ep_NNNNNNN.npz" in line and "move it out" in line
    assert "5 episodes intact, 5 unusable" in out
    report = verify_dataset(root)
    assert [p.name for p in report.intact] == [episode_filename(i) for i in (0, 1, 5, 6, 7)]


def test_verify_blames_a_manifest_whose_frame_shape_lies(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", n_episodes=4, length=6)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["frame_shape"] = [32, 32, 3]
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert main(["data", "verify", str(root)]) == 1
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("unusable: ")]
    assert line.startswith(f"unusable: {MANIFEST_NAME}:")
    assert "(32, 32, 3)" in line and "(16, 16, 3)" in line and "manifest is wrong" in line
    with pytest.raises(
        InvalidEpisodeError, match=r"expected \(T\+1, 32, 32, 3\) from the manifest"
    ):
        EpisodeDataset(root)


def test_a_manifest_of_no_frame_shape_is_refused_naming_it(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", n_episodes=2, length=4)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["frame_shape"] = [16, -16]
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert main(["data", "verify", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"worldvae: error: {root / MANIFEST_NAME} is not a valid dataset manifest" in err
    assert "frame_shape must be (H, W, C)" in err


def test_verify_names_episodes_whose_actions_differ_from_the_others(tmp_path, capsys):
    root = write_synthetic_dataset(tmp_path / "ds", n_episodes=5, length=6)
    path = _episode(root, 3)
    _rewrite(path, actions=np.zeros((len(_members(path)["actions"]), 3), np.float32))
    report = verify_dataset(root)
    assert [name for name, _ in report.bad] == [f"{EPISODES_DIR}/{episode_filename(3)}"]
    assert "actions have shape (T, 3)" in report.bad[0][1] and "(T,)" in report.bad[0][1]


def test_layout_problems_lists_each_problem_of_a_file():
    headers = {
        "frames": ((11, 16, 16, 3), np.dtype(np.float32)),
        "actions": ((10,), np.dtype(np.int64)),
        "rewards": ((10,), np.dtype(np.float32)),
        "terminated": ((9,), np.dtype(bool)),
        "seed": ((), np.dtype(np.int64)),
    }
    problems = layout_problems(headers, episode_layout(FRAME_SHAPE))
    assert problems == [
        "frames is float32, expected uint8",
        "it lacks truncated",
        "its members disagree on the number of steps T: actions 10 (T), rewards 10 (T), "
        "terminated 9 (T)",
    ]


def _one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("worldvae: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def tiny_model(tmp_path) -> Path:
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=FRAME_SHAPE, latent_dim=4, channels=(4, 8))
    return save_model(Autoencoder(cfg), tmp_path / "model")


def _commands(tmp_path: Path, data: Path, model: Path) -> dict[str, list[str]]:
    out = str(tmp_path / "out")
    return {
        "train-vae": ["train-vae", "--data", str(data), "--out", out, "--channels", "4,8",
                      "--latent-dim", "4", "--batch-size", "4", "--max-steps", "1"],
        "encode-data": ["encode-data", "--data", str(data), "--model", str(model), "--out", out],
        "data merge": ["data", "merge", str(data), str(tmp_path / "other"), "--out", out],
    }  # fmt: skip


@pytest.mark.parametrize("command", ["train-vae", "encode-data", "data merge"])
@pytest.mark.parametrize("kind", sorted(UNUSABLE))
def test_commands_refuse_unusable_data_in_one_line_and_leave_nothing(
    tmp_path, capsys, tiny_model, command, kind
):
    data = _cartpole_dataset(tmp_path / "ds", n_episodes=5)
    _cartpole_dataset(tmp_path / "other", n_episodes=2, seed=1)
    bad = _episode(data, 2)
    UNUSABLE[kind][0](bad)
    argv = _commands(tmp_path, data, tiny_model)[command]
    assert main(argv) == 1
    line = _one_error(capsys)
    assert str(bad) in line and "worldvae data verify" in line
    assert not (tmp_path / "out").exists()
    bad.unlink()  # the fix the message names; the same command then runs
    assert main(argv) == 0, capsys.readouterr().err


def test_train_rnn_refuses_a_latent_episode_that_does_not_fit(tmp_path, capsys):
    data = write_synthetic_latents(tmp_path / "lat", n_episodes=5, length=10)
    bad = _episode(data, 1)
    with np.load(bad) as npz:
        members = dict(npz)
    members["mu"] = members["mu"][:, :2]  # latent_dim 3 in the manifest
    np.savez_compressed(bad, **members)
    with pytest.raises(InvalidEpisodeError, match=r"mu has shape \(11, 2\), expected \(T\+1, 3\)"):
        LatentDataset(data)
    argv = ["train-rnn", "--data", str(data), "--out", str(tmp_path / "rnn"), "--epochs", "1",
            "--hidden-size", "8", "--n-gaussians", "2", "--batch-size", "4", "--seq-len", "8"]  # fmt: skip
    assert main(argv) == 1
    line = _one_error(capsys)
    assert str(bad) in line and "encode-data" in line
    assert not (tmp_path / "rnn").exists()


def test_one_episode_name_form_everywhere(tmp_path, capsys):
    assert is_episode_name("ep_0000001.npz") and is_episode_name("ep_12345678.npz")
    for name in ("ep_1.npz", "ep_00000001.npz", "ep_0000001 copy.npz", "ep_0000001.npz.bak"):
        assert not is_episode_name(name)
    root = write_synthetic_dataset(tmp_path / "ds", n_episodes=3, length=5)
    assert [p.name for p in list_episode_files(root)] == [episode_filename(i) for i in range(3)]
    shutil.copy(_episode(root, 1), root / EPISODES_DIR / "ep_1.npz")  # episode 1 a second time
    with pytest.raises(StrayEpisodeFileError, match=r"'ep_1\.npz'.*ep_NNNNNNN\.npz.*move it out"):
        EpisodeDataset(root)
    with pytest.raises(StrayEpisodeFileError, match=r"ep_1\.npz"):
        list_episode_files(root)
    # collect refuses the folder too, naming the file, before it writes anything
    argv = ["collect", "--env", "CartPole-v1", "--episodes", "1", "--out", str(root)]
    before = sorted(p.name for p in (root / EPISODES_DIR).iterdir())
    assert main(argv) == 1
    assert "episodes/ep_1.npz" in _one_error(capsys)
    assert sorted(p.name for p in (root / EPISODES_DIR).iterdir()) == before
    (root / EPISODES_DIR / "ep_1.npz").rename(root / EPISODES_DIR / "ep_0000001 copy.npz")
    for argv in (["data", "info", str(root)], ["data", "verify", str(root)]):
        assert main(argv) == 1
    out_and_err = capsys.readouterr()
    assert "ep_0000001 copy.npz" in out_and_err.out + out_and_err.err
