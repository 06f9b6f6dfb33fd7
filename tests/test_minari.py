"""Minari both ways: ``data export-minari``, and ``--data minari:NAME`` for train-vae and
data info."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("minari")  # the optional extra: pip install 'worldvae[minari]'

import minari
from gymnasium import spaces

from agents.cli.main import main
from envs import collect
from envs.minari_data import METADATA_KEY, MinariEpisodeDataset, image_observation
from worldvae.data import EpisodeDataset, load_episode
from worldvae.envspec import EnvSpec, read_env_spec

NAME = "worldvae/cartpole-random-v0"


def _collect(root: Path, frame_size: int, n_episodes: int) -> Path:
    spec = EnvSpec("CartPole-v1", frame_size=frame_size, backend="gymnasium")
    collect(root, spec, n_episodes=n_episodes, n_workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def cartpole16(tmp_path_factory) -> Path:
    """A tiny CartPole-v1 dataset of 16x16 frames."""
    return _collect(tmp_path_factory.mktemp("cartpole16") / "ds", 16, n_episodes=5)


def _export(data: Path, root: Path, name: str = NAME, *extra: str) -> int:
    return main(["data", "export-minari", str(data), name, "--minari-root", str(root), *extra])


def _assert_same_episodes(ours: EpisodeDataset, theirs: MinariEpisodeDataset) -> None:
    assert [e.index for e in theirs.episodes] == [e.index for e in ours.episodes]
    for mine, back in zip(ours.episodes, theirs.episodes, strict=True):
        a, b = load_episode(mine.path), theirs.read_episode(back)
        np.testing.assert_array_equal(b.frames, a.frames)
        assert b.frames.dtype == np.uint8
        np.testing.assert_array_equal(b.actions, a.actions)
        np.testing.assert_array_equal(b.rewards, a.rewards)
        np.testing.assert_array_equal(b.terminated, a.terminated)
        np.testing.assert_array_equal(b.truncated, a.truncated)
        assert b.seed == a.seed
        np.testing.assert_array_equal(theirs.read_frames(back), a.frames)


def test_round_trip_gives_the_same_episodes_and_split(cartpole16, tmp_path, capsys):
    assert _export(cartpole16, tmp_path) == 0
    assert "exported 5 episodes" in capsys.readouterr().out
    ours, theirs = EpisodeDataset(cartpole16), MinariEpisodeDataset(NAME, tmp_path)
    _assert_same_episodes(ours, theirs)
    assert theirs.manifest.env_spec == ours.manifest.env_spec
    assert theirs.frame_shape == (16, 16, 3)
    assert [e.index for e in theirs.split("val")] == [e.index for e in ours.split("val")]
    assert theirs.stats()["return_mean"] == pytest.approx(ours.stats()["return_mean"])


def test_export_is_a_minari_dataset_found_through_minari_datasets_path(
    cartpole16, tmp_path, monkeypatch
):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert main(["data", "export-minari", str(cartpole16), NAME]) == 0
    assert NAME in minari.list_local_datasets()
    dataset = minari.load_dataset(NAME)
    assert dataset.total_episodes == 5
    assert dataset.env_spec.id == "CartPole-v1"
    assert dataset.observation_space == spaces.Box(0, 255, (16, 16, 3), np.uint8)
    record = dataset.storage.metadata[METADATA_KEY]
    assert EnvSpec.from_dict(record["env_spec"]) == EpisodeDataset(cartpole16).manifest.env_spec
    episode = next(iter(dataset.iterate_episodes([0])))
    assert episode.observations.shape == (len(episode.rewards) + 1, 16, 16, 3)


def test_frames_of_image_size_stay_lossless(tmp_path):
    """At 32 pixels and more Minari takes the frames for images, which it may JPEG-encode."""
    data = _collect(tmp_path / "ds", 32, n_episodes=2)
    assert _export(data, tmp_path / "minari") == 0
    _assert_same_episodes(EpisodeDataset(data), MinariEpisodeDataset(NAME, tmp_path / "minari"))


def test_export_refuses_an_existing_name_and_overwrite_replaces_it_alone(
    cartpole16, tmp_path, capsys
):
    other = "worldvae/other-v0"
    assert _export(cartpole16, tmp_path) == 0
    assert _export(cartpole16, tmp_path, other) == 0
    before = (tmp_path / NAME / "data" / "metadata.json").read_text()
    capsys.readouterr()
    assert _export(cartpole16, tmp_path) == 1
    err = capsys.readouterr().err
    assert "exists" in err and "--overwrite" in err
    assert (tmp_path / NAME / "data" / "metadata.json").read_text() == before
    assert _export(cartpole16, tmp_path, NAME, "--overwrite") == 0
    assert MinariEpisodeDataset(NAME, tmp_path).n_frames() == EpisodeDataset(cartpole16).n_frames()
    assert MinariEpisodeDataset(other, tmp_path).n_frames() > 0
    assert sorted(p.name for p in (tmp_path / "worldvae").iterdir()) == [
        "cartpole-random-v0",
        "other-v0",
    ]


def test_export_refuses_a_name_that_is_not_a_minari_id(cartpole16, tmp_path, capsys):
    for name in ("no version", "cartpole"):
        assert _export(cartpole16, tmp_path, name) == 1
        assert "(namespace/)name-vN" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_a_relative_minari_root_is_read_from_the_working_folder(cartpole16, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _export(cartpole16, Path("minari")) == 0
    theirs = MinariEpisodeDataset(NAME, "minari")
    assert theirs.root == tmp_path / "minari" / NAME
    assert theirs.n_frames() == EpisodeDataset(cartpole16).n_frames()


def test_train_vae_from_a_minari_dataset_makes_a_model(cartpole16, tmp_path, capsys):
    assert _export(cartpole16, tmp_path / "minari") == 0
    out = tmp_path / "vae"
    argv = ["train-vae", "--data", f"minari:{NAME}", "--minari-root", str(tmp_path / "minari"),
            "--out", str(out), "--channels", "4,8", "--latent-dim", "4", "--batch-size", "8",
            "--epochs", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "trained 1 epochs" in capsys.readouterr().out
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file()
    # the model records the frames' env spec, as one trained on the folder would
    assert read_env_spec(out) == EpisodeDataset(cartpole16).manifest.env_spec


def _foreign_minari(root: Path, monkeypatch, obs_shape=(40, 30, 3)) -> str:
    """A Minari dataset written by Minari's own API, of Dict observations with pixels."""
    from minari.data_collector import EpisodeBuffer

    name = "foreign/pixels-v0"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    rng = np.random.default_rng(0)
    pixels = spaces.Box(0, 255, obs_shape, np.uint8)
    observation_space = spaces.Dict({"pixels": pixels, "t": spaces.Box(0, 100, (1,))})
    buffers = []
    for i, steps in enumerate((6, 9, 7)):
        frames = rng.integers(0, 256, (steps + 1, *obs_shape), dtype=np.uint8)
        buffers.append(
            EpisodeBuffer(
                id=i,
                observations={"pixels": frames, "t": np.zeros((steps + 1, 1), np.float32)},
                actions=rng.integers(0, 2, steps),
                rewards=np.ones(steps),
                terminations=np.r_[np.zeros(steps - 1, bool), True],
                truncations=np.zeros(steps, bool),
            )
        )
    with pytest.warns(UserWarning):  # Minari asks for an author, a description, ...
        minari.create_dataset_from_buffers(
            name, buffers, observation_space=observation_space, action_space=spaces.Discrete(2)
        )
    return name


def test_a_foreign_dataset_is_resized_on_the_fly_to_the_v_frame_size(tmp_path, monkeypatch):
    name = _foreign_minari(tmp_path, monkeypatch)
    default = MinariEpisodeDataset(name)  # MINARI_DATASETS_PATH
    assert default.frame_shape == (64, 64, 3)
    assert default.n_frames() == 7 + 10 + 8
    small = MinariEpisodeDataset(name, frame_size=16)
    frames = small.read_frames(small.episodes[1])
    assert frames.shape == (10, 16, 16, 3) and frames.dtype == np.uint8
    assert small.manifest.env_spec.frame_size == (16, 16)
    assert small.sample_frames(5).shape == (5, 16, 16, 3)


def test_data_info_reads_a_minari_dataset(tmp_path, monkeypatch, capsys):
    name = _foreign_minari(tmp_path / "minari", monkeypatch)
    assert main(["data", "info", f"minari:{name}"]) == 0
    text = capsys.readouterr().out
    assert "episodes   3" in text and "frames 25" in text and "mosaic     none" in text
    mosaic = tmp_path / "pics" / "mosaic.png"
    assert main(["data", "info", f"minari:{name}", "--mosaic", str(mosaic), "--n", "4"]) == 0
    assert mosaic.is_file()


def test_a_worldvae_dataset_keeps_its_frame_size(cartpole16, tmp_path, capsys):
    assert _export(cartpole16, tmp_path) == 0
    with pytest.raises(ValueError, match="collected at 16x16"):
        MinariEpisodeDataset(NAME, tmp_path, frame_size=32)
    argv = ["data", "info", str(cartpole16), "--minari-frame-size", "32"]
    assert main(argv) == 1
    assert "apply to --data minari:NAME" in capsys.readouterr().err


def test_missing_dataset_and_non_image_observations_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--minari-root"):
        MinariEpisodeDataset("nowhere/none-v0", tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        image_observation(spaces.Box(-1, 1, (4,)))
    with pytest.raises(ValueError, match="'pixels', 'image'"):
        image_observation(spaces.Dict({"state": spaces.Box(-1, 1, (4,))}))
    assert image_observation(spaces.Dict({"image": spaces.Box(0, 255, (7, 7, 3), np.uint8)}))[0]
