"""The envpool backend against the gymnasium reference: VecEnv contract, seeds, preprocessing."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecMonitor

from envs import make_env, make_vec_env
from envs.backends import BackendMismatchWarning, resolve_backend, warn_on_backend_mismatch
from envs.latent import VecLatentObservation
from worldvae.envspec import EnvSpec
from worldvae.vae import Autoencoder, AutoencoderConfig

CAR = "CarRacing-v3"
T = 5  # time limit of the short episodes below
CROP = (0, 12, 0, 0)


def _spec(backend: str, frame_skip: int = 1) -> EnvSpec:
    return EnvSpec(
        CAR, frame_size=32, crop=CROP, frame_skip=frame_skip, max_episode_steps=T, backend=backend
    )


def _venv(kind: str, n_envs: int = 2, frame_skip: int = 1, seed: int = 0):
    if kind == "envpool":
        pytest.importorskip("envpool")
        return make_vec_env(_spec("envpool", frame_skip), n_envs, seed)
    subprocess = kind == "subproc"
    return make_vec_env(_spec("gymnasium", frame_skip), n_envs, seed, subprocess)


# The reference VecEnvs: DummyVecEnv, and SubprocVecEnv (spawning takes a while: slow).
KINDS = ["envpool", "dummy", pytest.param("subproc", marks=pytest.mark.slow)]


@pytest.mark.parametrize("kind", KINDS)
def test_transitions_never_mix_two_episodes(kind):
    venv = VecMonitor(_venv(kind))
    obs = venv.reset()
    assert obs.shape == (2, 32, 32, 3) and obs.dtype == np.uint8
    zero = np.zeros((2, 3), np.float32)
    since_reset = np.zeros(2, int)
    returns = np.zeros(2)
    episodes = 0
    for _ in range(3 * T):
        obs, rewards, dones, infos = venv.step(zero)
        since_reset += 1
        returns += rewards
        # envpool's own reset step has reward exactly 0: it must never reach the agent
        assert np.all(rewards != 0.0)
        for i in range(2):
            if dones[i]:
                assert since_reset[i] == T  # no extra reset transition between episodes
                terminal = infos[i]["terminal_observation"]
                assert terminal.shape == (32, 32, 3) and terminal.dtype == np.uint8
                assert infos[i]["TimeLimit.truncated"] is True
                assert infos[i]["episode"]["l"] == T
                assert infos[i]["episode"]["r"] == pytest.approx(returns[i], abs=1e-4)
                assert not np.array_equal(terminal, obs[i])  # obs[i] starts the next episode
                since_reset[i], returns[i] = 0, 0.0
                episodes += 1
            else:
                assert "terminal_observation" not in infos[i]
    assert episodes == 6
    venv.close()


@pytest.mark.parametrize("kind", KINDS)
def test_frame_skip_counts_agent_steps(kind):
    venv = _venv(kind, n_envs=1, frame_skip=2)
    venv.reset()
    dones = [bool(venv.step(np.zeros((1, 3), np.float32))[2][0]) for _ in range(3)]
    assert dones == [False, False, True]  # a 5-step limit ends in the third double step
    venv.close()


@pytest.mark.parametrize("kind", KINDS)
def test_seed_gives_the_same_episode_per_env(kind):
    venv = _venv(kind)
    venv.seed(7)
    first = venv.reset()
    for _ in range(3):
        venv.step(np.full((2, 3), 0.5, np.float32))
    venv.seed(7)
    again = venv.reset()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], first[1])  # env i gets seed 7 + i
    backend = "envpool" if kind == "envpool" else "gymnasium"
    single = make_env(_spec(backend))
    np.testing.assert_array_equal(single.reset(seed=8)[0], first[1])
    single.close()
    venv.close()


def _observe(env: gym.Env, frame: np.ndarray) -> np.ndarray:
    """``frame`` through ``env``'s observation wrappers, innermost first."""
    wrappers = []
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.ObservationWrapper):
            wrappers.append(env)
        env = env.env
    for wrapper in reversed(wrappers):
        frame = wrapper.observation(frame)
    return frame


def test_preprocessing_is_the_same_on_both_backends():
    pytest.importorskip("envpool")
    venv = _venv("envpool", n_envs=3, seed=3)
    obs = venv.reset()
    for _ in range(4):
        obs, *_ = venv.step(np.tile([[0.3, 0.5, 0.0]], (3, 1)).astype(np.float32))
    raw = venv.get_images()
    # the gymnasium path's wrappers on the very frames envpool made
    env = make_env(CAR, frame_size=32, crop=CROP, backend="gymnasium")
    for i in range(3):
        np.testing.assert_array_equal(_observe(env, raw[i]), obs[i])
    env.close()
    np.testing.assert_array_equal(venv.transform.batch(np.stack(raw)), obs)
    venv.close()


def test_single_envpool_env_matches_the_batch():
    pytest.importorskip("envpool")
    env = make_env(CAR, frame_size=32, crop=CROP, backend="envpool")
    venv = _venv("envpool", n_envs=2, seed=11)
    batch = venv.reset()
    single, _ = env.reset(seed=12)
    np.testing.assert_array_equal(single, batch[1])
    action = np.array([0.1, 0.6, 0.0], np.float32)
    step_single = env.step(action)
    step_batch = venv.step(np.stack([action, action]))
    np.testing.assert_array_equal(step_single[0], step_batch[0][1])
    assert step_single[1] == pytest.approx(step_batch[1][1])
    env.close()
    venv.close()


def test_latent_wrapper_wraps_the_envpool_vecenv_unchanged():
    pytest.importorskip("envpool")
    torch.manual_seed(0)
    model = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), latent_dim=4, channels=(8, 16))
    ).eval()
    venv = VecLatentObservation(_venv("envpool", n_envs=2), model, frame_stack=2)
    obs = venv.reset()
    assert obs.shape == (2, 8) and obs.dtype == np.float32
    for _ in range(T):
        obs, _, dones, infos = venv.step(np.zeros((2, 3), np.float32))
    assert dones.all()
    for i in range(2):
        terminal = infos[i]["terminal_observation"]
        assert terminal.shape == (8,)
        np.testing.assert_array_equal(obs[i, :4], 0.0)  # the stack starts afresh at the reset
        assert obs[i, 4:].any()
        assert not np.array_equal(terminal, obs[i])
    venv.close()


def test_backend_resolution():
    assert resolve_backend("MiniGrid-Empty-5x5-v0", "auto") == "gymnasium"
    assert resolve_backend(CAR, "gymnasium") == "gymnasium"
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend(CAR, "jax")
    with pytest.raises(ValueError, match="envpool"):
        resolve_backend("MiniGrid-Empty-5x5-v0", "envpool")


def test_envpool_resolution_where_installed():
    pytest.importorskip("envpool")
    assert resolve_backend(CAR, "auto") == "envpool"
    assert resolve_backend("ALE/Pong-v5", "auto") == "gymnasium"  # measured faster one at a time
    assert resolve_backend("ALE/Pong-v5", "envpool") == "envpool"
    assert resolve_backend(CAR, "auto", {"domain_randomize": True}) == "gymnasium"
    with pytest.raises(ValueError, match=r"none of the gymnasium options \['domain_randomize'\]"):
        resolve_backend(CAR, "envpool", {"domain_randomize": True})


def test_atari_frames_are_channels_last_like_gymnasium():
    pytest.importorskip("envpool")
    pytest.importorskip("ale_py")
    pool = make_env("ALE/Pong-v5", frame_size=(210, 160), backend="envpool")
    ref = make_env("ALE/Pong-v5", frame_size=(210, 160), backend="gymnasium")
    assert pool.observation_space == ref.observation_space
    assert pool.action_space == ref.action_space
    frame, _ = pool.reset(seed=0)
    assert frame.shape == (210, 160, 3)
    pool.close()
    ref.close()


def test_backend_mismatch_warns_once_named():
    with pytest.warns(BackendMismatchWarning, match="trained on frames from the envpool backend"):
        assert warn_on_backend_mismatch("envpool", "gymnasium", "the VAE")
    assert not warn_on_backend_mismatch("gymnasium", "gymnasium", "the VAE")
    # a model recorded before backends were: its frames came from gymnasium
    old = EnvSpec.from_dict({"env_id": CAR, "env_options": {"frame_size": [32, 32]}})
    assert not warn_on_backend_mismatch(old.backend, "gymnasium", "the VAE")


def test_make_vec_env_resolves_the_spec_it_is_given():
    venv = make_vec_env(EnvSpec("CartPole-v1", frame_size=16, backend="auto"), 2, seed=0)
    assert venv.num_envs == 2 and venv.observation_space.shape == (16, 16, 3)
    venv.close()
    with pytest.raises(ValueError, match="n_envs must be >= 1"):
        make_vec_env(EnvSpec("CartPole-v1"), 0)


def test_collecting_true_states_needs_gymnasium(tmp_path):
    pytest.importorskip("envpool")
    from envs import collect

    with pytest.raises(ValueError, match="collect with --backend gymnasium"):
        collect(
            tmp_path / "d",
            EnvSpec(CAR, backend="envpool"),
            n_episodes=1,
            record_state=True,
            progress=False,
        )
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_true_state_of_an_envpool_carracing_is_refused_clearly():
    pytest.importorskip("envpool")
    from envs.state import read_state

    env = make_env(CAR, frame_size=32, backend="envpool")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="make the env with backend='gymnasium'"):
        read_state(env, CAR)
    env.close()
