import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import LatentObservation, VecLatentObservation, make_env
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

SIZE = 40


@pytest.fixture(scope="module")
def model() -> Autoencoder:
    import torch

    torch.manual_seed(0)
    cfg = AutoencoderConfig(
        kind="vae", frame_shape=(SIZE, SIZE, 3), latent_dim=6, channels=(8, 16, 32)
    )
    return Autoencoder(cfg).eval()


def _cartpole() -> gym.Env:
    return make_env("CartPole-v1", frame_size=SIZE)


def test_latent_env_passes_gymnasium_and_sb3_checkers(model):
    env = LatentObservation(_cartpole(), model, frame_stack=2, action_history=1)
    assert env.observation_space.shape == (2 * 6 + 2,)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=True)


def test_model_directory_path_is_accepted(model, tmp_path):
    save_model(model, tmp_path / "m")
    env = LatentObservation(_cartpole(), str(tmp_path / "m"), device="cpu")
    obs, _ = env.reset(seed=3)
    ref, _ = LatentObservation(_cartpole(), model).reset(seed=3)
    np.testing.assert_allclose(obs, ref, rtol=1e-5, atol=1e-6)


def test_frame_shape_mismatch_is_explained(model):
    with pytest.raises(
        ValueError,
        match=r"model expects frames \(40, 40, 3\), the env gives \(64, 64, 3\); make the env with make_env\(\.\.\., frame_size=\(40, 40\)\)",
    ):
        LatentObservation(make_env("CartPole-v1", frame_size=64), model)
    with pytest.raises(ValueError, match="requires a uint8 \\(H, W, C\\) Box"):
        LatentObservation(gym.make("CartPole-v1"), model)


def test_frame_stack_shifts_latents(model):
    env = LatentObservation(_cartpole(), model, frame_stack=3)
    obs0, _ = env.reset(seed=0)
    z0 = obs0[-6:]
    assert z0.any()
    np.testing.assert_array_equal(obs0[:12], 0.0)  # zeros before the first latent, as pixels
    obs1, *_ = env.step(0)
    np.testing.assert_array_equal(obs1[:12], obs0[6:])  # oldest dropped, newest appended


@pytest.mark.parametrize(("frame_stack", "action_history"), [(1, 0), (2, 2)])
def test_vec_wrapper_equals_single_wrappers_on_same_seeds(model, frame_stack, action_history):
    n = 3
    vec = VecLatentObservation(
        DummyVecEnv([_cartpole] * n), model, frame_stack=frame_stack, action_history=action_history
    )
    singles = DummyVecEnv(
        [
            lambda: LatentObservation(
                _cartpole(), model, frame_stack=frame_stack, action_history=action_history
            )
        ]
        * n
    )
    for v in (vec, singles):
        v.seed(7)
    obs_v, obs_s = vec.reset(), singles.reset()
    np.testing.assert_allclose(obs_v, obs_s, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(0)
    n_done = 0
    for _ in range(80):  # random CartPole episodes end after ~20 steps: several resets
        actions = rng.integers(0, 2, n)
        obs_v, rew_v, done_v, info_v = vec.step(actions)
        obs_s, rew_s, done_s, info_s = singles.step(actions)
        np.testing.assert_allclose(obs_v, obs_s, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(done_v, done_s)
        np.testing.assert_array_equal(rew_v, rew_s)
        for i in np.flatnonzero(done_v):
            n_done += 1
            term = info_v[i]["terminal_observation"]
            assert term.shape == vec.observation_space.shape and term.dtype == np.float32
            np.testing.assert_allclose(
                term, info_s[i]["terminal_observation"], rtol=1e-5, atol=1e-5
            )
    assert n_done >= 3
    assert vec.observation_space == singles.observation_space


def test_vec_wrapper_observations_lie_in_its_space(model):
    vec = VecLatentObservation(DummyVecEnv([_cartpole] * 2), model)
    obs = vec.reset()
    assert obs.shape == (2, 6) and obs.dtype == np.float32
    assert all(vec.observation_space.contains(o) for o in obs)
    assert vec.last_frames is not None and vec.last_frames.shape == (2, SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "action_space",
    [gym.spaces.Discrete(3, start=1), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)],
    ids=["discrete", "box"],
)
def test_latent_history_batched_updates_equal_one_env_at_a_time(action_space):
    """push_many / reset_many / observations over several envs give what the same updates
    one env at a time give, written out by hand: oldest latent first, then the actions."""
    from envs.latent import LatentHistory

    rng = np.random.default_rng(0)
    n, d, k, m = 5, 3, 3, 2
    batched = LatentHistory(n, d, action_space, frame_stack=k, action_history=m)
    latents = [[np.zeros(d, np.float32)] * k for _ in range(n)]
    actions = [[np.zeros(batched.a, np.float32)] * m for _ in range(n)]
    action_space.seed(0)
    for _ in range(12):
        z = rng.normal(size=(n, d)).astype(np.float32)
        acts = np.stack([action_space.sample() for _ in range(n)])
        restart = rng.random(n) < 0.3
        running = np.flatnonzero(~restart)
        batched.push_many(running, z[running], acts[running])
        batched.reset_many(np.flatnonzero(restart), z[restart])
        for i in range(n):
            if restart[i]:
                latents[i] = [np.zeros(d, np.float32)] * (k - 1) + [z[i]]
                actions[i] = [np.zeros(batched.a, np.float32)] * m
            else:
                if isinstance(action_space, gym.spaces.Discrete):
                    code = np.eye(3, dtype=np.float32)[int(acts[i]) - 1]
                else:
                    code = acts[i].astype(np.float32)
                latents[i] = [*latents[i][1:], z[i]]
                actions[i] = [*actions[i][1:], code]
        expected = np.stack([np.concatenate(latents[i] + actions[i]) for i in range(n)])
        obs = batched.observations()
        assert obs.shape == (n, k * d + m * batched.a) and obs.dtype == np.float32
        np.testing.assert_array_equal(obs, expected)
        np.testing.assert_array_equal(batched.observations(np.array([3, 1])), expected[[3, 1]])
        np.testing.assert_array_equal(batched.observation(2), expected[2])
    before = batched.observations()
    before[:] = 7.0  # the observations are copies: an agent keeping them sees no later change
    assert not (batched.observations() == 7.0).any()
