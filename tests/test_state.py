"""True env state: readers per family, the collector's ``states`` member, the state wrapper."""

import numpy as np
import pytest

from envs import EnvSpec, collect, make_env
from envs.state import StateObservation, has_state, read_state, state_names
from worldvae.data import Episode, EpisodeDataset, load_episode, write_episode


@pytest.mark.parametrize(
    ("env_id", "names"),
    [
        ("CartPole-v1", ("x", "x_dot", "theta", "theta_dot")),
        ("Pendulum-v1", ("cos_theta", "sin_theta", "theta_dot")),
        ("MiniGrid-Empty-5x5-v0", ("agent_x", "agent_y", "dir_x", "dir_y", "carrying")),
    ],
)
def test_state_follows_the_env(env_id, names):
    env = make_env(env_id, 16)
    env.reset(seed=3)
    env.action_space.seed(3)
    first, got = read_state(env)
    assert got == names and first.dtype == np.float32 and first.shape == (len(names),)
    states = [first]
    for _ in range(20):
        env.step(env.action_space.sample())
        states.append(read_state(env)[0])
    assert not all(np.array_equal(states[0], s) for s in states[1:])  # it moves


def test_pendulum_state_is_the_unwrapped_angle():
    env = make_env("Pendulum-v1", 16)
    env.reset(seed=0)
    theta, theta_dot = env.unwrapped.state
    np.testing.assert_allclose(
        read_state(env)[0], [np.cos(theta), np.sin(theta), theta_dot], rtol=1e-6
    )


def test_minigrid_state_is_position_and_facing():
    env = make_env("MiniGrid-Empty-5x5-v0", 16)
    env.reset(seed=0)
    u = env.unwrapped
    state, _ = read_state(env)
    assert tuple(state[:2]) == tuple(float(v) for v in u.agent_pos)
    np.testing.assert_array_equal(state[2:4], u.dir_vec)


def test_envs_without_state_are_named():
    assert not has_state("ALE/Pong-v5") and state_names("LunarLander-v3") is None
    assert has_state("CarRacing-v3")
    with pytest.raises(ValueError, match="no known low-dimensional state"):
        StateObservation(make_env("ALE/Pong-v5", 16), "ALE/Pong-v5")


def test_state_observation_wrapper_space_and_values():
    env = StateObservation(make_env("CartPole-v1", 16))
    obs, _ = env.reset(seed=1)
    assert env.observation_space.shape == (4,) and obs.dtype == np.float32
    np.testing.assert_allclose(obs, env.unwrapped.state, rtol=1e-6)
    obs, *_ = env.step(0)
    np.testing.assert_allclose(obs, env.unwrapped.state, rtol=1e-6)


def test_collector_stores_aligned_states(tmp_path):
    spec = EnvSpec("Pendulum-v1", frame_size=(16, 16), max_episode_steps=10)
    collect(tmp_path / "d", spec, n_episodes=2, progress=False)
    ds = EpisodeDataset(tmp_path / "d")
    assert ds.state_names == ("cos_theta", "sin_theta", "theta_dot")
    ep = load_episode(ds.episodes[0].path)
    assert ep.states is not None and ep.states.shape == (len(ep.frames), 3)
    np.testing.assert_allclose(ep.states[:, 0] ** 2 + ep.states[:, 1] ** 2, 1.0, rtol=1e-5)
    # the first state is the reset state of the episode's seed
    env = make_env("Pendulum-v1", 16)
    env.reset(seed=ep.seed)
    np.testing.assert_allclose(ep.states[0], read_state(env)[0], rtol=1e-6)


def test_collector_state_recording_off_and_refused(tmp_path):
    collect(
        tmp_path / "off",
        EnvSpec("CartPole-v1", frame_size=(16, 16)),
        n_episodes=1,
        progress=False,
        record_state=False,
    )
    ds = EpisodeDataset(tmp_path / "off")
    assert ds.state_names is None and load_episode(ds.episodes[0].path).states is None
    with pytest.raises(ValueError, match="no known low-dimensional state"):
        collect(tmp_path / "pong", "ALE/Pong-v5", n_episodes=1, record_state=True, progress=False)
    assert not (tmp_path / "pong").exists()


def test_episode_states_round_trip_and_shape_check(tmp_path):
    t = 4
    kw = dict(
        frames=np.zeros((t + 1, 8, 8, 3), np.uint8),
        actions=np.zeros(t, np.int64),
        rewards=np.zeros(t, np.float32),
        terminated=np.zeros(t, bool),
        truncated=np.zeros(t, bool),
        seed=1,
    )
    states = np.arange((t + 1) * 2, dtype=np.float32).reshape(t + 1, 2)
    write_episode(tmp_path / "e.npz", Episode(**kw, states=states))
    np.testing.assert_array_equal(load_episode(tmp_path / "e.npz").states, states)
    with pytest.raises(ValueError, match="states must be float32"):
        Episode(**kw, states=states[:-1])
