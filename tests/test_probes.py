"""Linear probes: R^2 of a ridge regression from codes to states."""

import numpy as np
import pytest

from worldvae.data import Episode, EpisodeDataset, Manifest, episode_filename, write_episode
from worldvae.data.manifest import EPISODES_DIR
from worldvae.probes import fit_ridge, probe_dataset, probe_r2, r2_score


def test_r2_score_hand_values():
    y = np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(r2_score(y, y), [1.0])
    np.testing.assert_allclose(r2_score(y, np.full_like(y, 2.0)), [0.0])
    # residuals (0.5, 0, -0.5): SS_res 0.5, SS_tot 2 -> 0.75
    np.testing.assert_allclose(r2_score(y, [[0.5], [2.0], [3.5]]), [0.75])
    assert np.isnan(r2_score(np.ones((3, 1)), np.ones((3, 1)))[0])


def test_probe_recovers_a_known_linear_map():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3))
    x_tr, x_te = rng.standard_normal((500, 8)), rng.standard_normal((200, 8))
    y_tr, y_te = x_tr @ w + 2.0, x_te @ w + 2.0
    r2 = probe_r2(x_tr, y_tr, x_te, y_te, alpha=1e-3)
    assert r2.shape == (3,) and (r2 > 0.999).all()
    probe = fit_ridge(x_tr, y_tr, alpha=0.0)
    np.testing.assert_allclose(probe.predict(x_te), y_te, atol=1e-8)


def test_probe_gives_near_zero_on_noise():
    rng = np.random.default_rng(1)
    r2 = probe_r2(
        rng.standard_normal((400, 8)),
        rng.standard_normal((400, 2)),
        rng.standard_normal((400, 8)),
        rng.standard_normal((400, 2)),
    )
    assert (np.abs(r2) < 0.1).all()


def test_probe_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same N"):
        fit_ridge(np.zeros((5, 2)), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="do not match"):
        probe_r2(np.zeros((5, 2)), np.ones((5, 1)), np.zeros((5, 3)), np.ones((5, 1)))


def _state_dataset(root, n_episodes=20, t=15, with_states=True):
    """Frames whose first pixel's red value is a linear function of a hidden 1-d state."""
    rng = np.random.default_rng(0)
    Manifest(
        env_id="Synthetic-v0",
        env_options={},
        frame_shape=(4, 4, 3),
        policy={"name": "random", "params": {}},
        seed=0,
        state_names=["pos", "noise"] if with_states else None,
    ).save(root)
    for i in range(n_episodes):
        pos = rng.uniform(0, 1, t + 1)
        frames = rng.integers(0, 256, (t + 1, 4, 4, 3), dtype=np.uint8)
        frames[:, 0, 0, 0] = np.round(pos * 250).astype(np.uint8)
        states = np.stack([pos, rng.standard_normal(t + 1)], 1).astype(np.float32)
        write_episode(
            root / EPISODES_DIR / episode_filename(i),
            Episode(
                frames=frames,
                actions=np.zeros(t, np.int64),
                rewards=np.zeros(t, np.float32),
                terminated=np.r_[np.zeros(t - 1, bool), True],
                truncated=np.zeros(t, bool),
                seed=i,
                states=states if with_states else None,
            ),
        )
    return EpisodeDataset(root, val_fraction=0.25)


def test_probe_dataset_on_held_out_episodes(tmp_path):
    ds = _state_dataset(tmp_path / "ds")
    result = probe_dataset(lambda f: f.reshape(len(f), -1).astype(np.float32), ds)
    assert result.names == ("pos", "noise")
    assert result.r2[0] > 0.99 and result.r2[1] < 0.2
    assert result.n_test == ds.n_frames("val")
    assert set(result.as_dict()) == {"pos", "noise"}


def test_probe_dataset_without_states_is_refused(tmp_path):
    ds = _state_dataset(tmp_path / "ds", n_episodes=4, with_states=False)
    with pytest.raises(ValueError, match="holds no env states"):
        probe_dataset(lambda f: f.reshape(len(f), -1), ds)
