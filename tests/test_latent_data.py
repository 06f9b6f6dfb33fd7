import numpy as np
import pytest
import torch

from tests.conftest import write_synthetic_dataset
from tests.latent_fixtures import write_synthetic_latents
from worldvae.data import EpisodeDataset, read_episode
from worldvae.data.latents import (
    ActionSpec,
    LatentDataset,
    SequenceStream,
    encode_dataset,
    episode_chunks,
)
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model
from worldvae.vae.io import model_sha256


@pytest.fixture
def tiny_vae(tmp_path):
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
    ).eval()
    save_model(model, tmp_path / "vae")
    return model, tmp_path / "vae"


def _encode(data, vae, out, **kw):
    model, path = vae
    return encode_dataset(
        data, model, path, model_sha256(path), out, ActionSpec("discrete", 2), progress=False, **kw
    )


def test_encode_data_writes_posteriors_actions_and_resumes(tmp_path, tiny_vae):
    data = write_synthetic_dataset(tmp_path / "ds", n_episodes=5, length=10)
    out = tmp_path / "lat"
    r = _encode(data, tiny_vae, out)
    assert (r.new_episodes, r.total_episodes) == (5, 5)
    src = EpisodeDataset(data)
    lat = LatentDataset(out, val_fraction=0.2)
    assert lat.latent_dim == 4 and lat.action_dim == 2
    assert lat.manifest.model_sha256 == model_sha256(tiny_vae[1])
    assert lat.manifest.env_id == "Synthetic-v0"
    ep = lat.load(lat.episodes[0])
    frames = read_episode(src.episodes[0].path)["frames"]
    t = len(frames) - 1
    assert ep["mu"].shape == ep["logvar"].shape == (t + 1, 4)
    np.testing.assert_allclose(ep["mu"], tiny_vae[0].encode(frames), rtol=1e-5, atol=1e-5)
    assert ep["actions"].shape == (t, 2) and np.all(ep["actions"].sum(1) == 1)
    # resume: a missing episode is re-encoded, the others are kept as they are
    kept = lat.episodes[1].path.stat().st_mtime_ns
    lat.episodes[0].path.unlink()
    r = _encode(data, tiny_vae, out)
    assert (r.new_episodes, r.total_episodes) == (1, 5)
    assert lat.episodes[1].path.stat().st_mtime_ns == kept


def test_encode_data_refuses_a_directory_made_with_another_model(tmp_path, tiny_vae):
    data = write_synthetic_dataset(tmp_path / "ds", n_episodes=3, length=8)
    out = tmp_path / "lat"
    _encode(data, tiny_vae, out)
    model, _ = tiny_vae
    with torch.no_grad():
        model.head.bias.add_(1.0)
    save_model(model, tmp_path / "vae2")
    with pytest.raises(FileExistsError, match=r"another dataset or model.*--overwrite"):
        _encode(data, (model, tmp_path / "vae2"), out)
    r = _encode(data, (model, tmp_path / "vae2"), out, overwrite=True)
    assert r.new_episodes == 3


def test_encode_data_resumes_a_folder_moved_with_its_sources_and_refuses_other_data(
    tmp_path, tiny_vae
):
    """A latent dataset moved together with the dataset and the model it was made from (a
    pipeline folder copied elsewhere) resumes, and records where they lie now; a dataset of
    another making is still refused."""
    import shutil

    model, _ = tiny_vae
    before = tmp_path / "before"
    before.mkdir()
    data = write_synthetic_dataset(before / "ds", n_episodes=3, length=8)
    shutil.move(tmp_path / "vae", before / "vae")
    _encode(data, (model, before / "vae"), before / "lat")
    after = shutil.move(before, tmp_path / "after")
    kept = sorted(p.stat().st_mtime_ns for p in (after / "lat").rglob("*.npz"))
    r = _encode(after / "ds", (model, after / "vae"), after / "lat")
    assert (r.new_episodes, r.total_episodes) == (0, 3)
    assert kept == sorted(p.stat().st_mtime_ns for p in (after / "lat").rglob("*.npz"))
    manifest = LatentDataset(after / "lat").manifest
    assert (manifest.source, manifest.model_dir) == (
        str((after / "ds").resolve()),
        str((after / "vae").resolve()),
    )
    other = write_synthetic_dataset(tmp_path / "other", n_episodes=3, length=8, seed=1)
    with pytest.raises(FileExistsError, match=r"another dataset or model.*--overwrite"):
        _encode(other, (model, after / "vae"), after / "lat")


def test_encode_data_refuses_a_model_of_another_frame_shape(tmp_path):
    data = write_synthetic_dataset(tmp_path / "ds", n_episodes=2, length=5)
    model = Autoencoder(AutoencoderConfig(frame_shape=(32, 32, 3), latent_dim=4, channels=(8,)))
    save_model(model, tmp_path / "vae")
    with pytest.raises(ValueError, match=r"expects frames \(32, 32, 3\).*\(16, 16, 3\)"):
        encode_dataset(
            data, model, tmp_path / "vae", "x", tmp_path / "lat", ActionSpec("discrete", 2)
        )


def test_action_spec_encodes_and_rejects():
    spec = ActionSpec("discrete", 3, start=1)
    np.testing.assert_array_equal(spec.encode(np.array([1, 3])), [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"lie in \[1, 4\)"):
        spec.encode(np.array([0]))
    box = ActionSpec("box", 2, low=(-1.0, 0.0), high=(1.0, 1.0))
    np.testing.assert_array_equal(box.encode(np.array([[2.0, 0.5]])), [[1.0, 0.5]])
    assert ActionSpec.from_dict(box.to_dict()) == box


def test_chunks_cover_every_step_once_with_bounded_memory(tmp_path):
    root = write_synthetic_latents(tmp_path / "lat", n_episodes=9, length=23)
    ds = LatentDataset(root, val_fraction=0.0)
    stream = SequenceStream(ds, ds.episodes, seq_len=8, batch_size=4, buffer_chunks=6, seed=1)
    batches = list(stream)
    steps = sum(float(b["mask"].sum()) for b in batches)
    assert steps == 9 * 23
    assert stream.peak_buffered_chunks <= 6 + 3  # buffer plus one episode's chunks
    b = batches[0]
    assert b["mu"].shape == (4, 9, 3) and b["actions"].shape == (4, 8, 2)
    assert b["rewards"].shape == b["dones"].shape == b["mask"].shape == (4, 8)
    # the same seed and epoch give the same batches; another epoch another order
    again = list(stream)
    np.testing.assert_array_equal(again[0]["mu"], b["mu"])
    stream.set_epoch(1)
    assert not np.array_equal(next(iter(stream))["mu"], b["mu"])


def test_episode_chunks_pad_the_tail_and_align_targets(tmp_path):
    root = write_synthetic_latents(tmp_path / "lat", n_episodes=1, length=10)
    ep = LatentDataset(root, val_fraction=0.0).load(LatentDataset(root, 0.0).episodes[0])
    chunks = episode_chunks(ep, 4)
    assert [int(c["mask"].sum()) for c in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(chunks[1]["mu"], ep["mu"][4:9])
    np.testing.assert_array_equal(chunks[2]["mu"][:3], ep["mu"][8:11])
    assert chunks[2]["dones"][1] == 1.0 and chunks[2]["dones"][2:].sum() == 0
