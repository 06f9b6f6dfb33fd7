import gymnasium as gym
import numpy as np
import pytest

from envs import make_env
from envs.preprocessing import FramePreprocess, FrameTransform

FAMILIES = [
    ("CarRacing-v3", {"crop": (0, 12, 0, 0)}),
    ("ALE/Pong-v5", {}),
    ("MiniGrid-Empty-8x8-v0", {}),
    ("CartPole-v1", {}),
]


@pytest.mark.parametrize(("env_id", "kwargs"), FAMILIES)
def test_every_family_gives_uint8_frames_of_the_chosen_size(env_id, kwargs):
    env = make_env(env_id, frame_size=32, **kwargs)
    assert env.observation_space.shape == (32, 32, 3)
    assert env.observation_space.dtype == np.uint8
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and obs.dtype == np.uint8
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert obs.std() > 0  # a real picture, not a blank
    env.close()


@pytest.mark.parametrize(("env_id", "kwargs"), FAMILIES)
def test_same_seed_same_frames(env_id, kwargs):
    runs = []
    for _ in range(2):
        env = make_env(env_id, frame_size=24, **kwargs)
        env.action_space.seed(7)
        frames = [env.reset(seed=7)[0]]
        for _ in range(5):
            frames.append(env.step(env.action_space.sample())[0])
        runs.append(np.stack(frames))
        env.close()
    np.testing.assert_array_equal(runs[0], runs[1])


def test_grayscale_rectangular_and_frame_skip():
    env = make_env("CartPole-v1", frame_size=(20, 30), grayscale=True, frame_skip=3)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (20, 30, 1)
    _, reward, *_ = env.step(0)
    assert reward == 3.0  # three CartPole steps, +1 each


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("CarRacing-v3", {"crop": (0, 12, 0, 0)}),
        ("CarRacing-v3", {"crop": (0, 12, 0, 0), "grayscale": True}),
        ("CartPole-v1", {}),
        ("CartPole-v1", {"grayscale": True}),
    ],
)
def test_wrapper_chain_gives_the_frames_of_the_one_pass_transform(env_id, kwargs):
    # make_env's chain (gymnasium's AddRenderObservation and ResizeObservation around
    # FramePreprocess) against FrameTransform doing every step at once, as batched backends do
    renders = env_id == "CartPole-v1"
    env = make_env(env_id, frame_size=(24, 32), backend="gymnasium", **kwargs)
    raw_env = gym.make(env_id, render_mode="rgb_array" if renders else None)
    env.action_space.seed(3)
    obs, _ = env.reset(seed=3)
    raw, _ = raw_env.reset(seed=3)
    frame = raw_env.render() if renders else raw
    transform = FrameTransform(frame.shape, (24, 32), **kwargs)
    for _ in range(4):
        np.testing.assert_array_equal(obs, transform(frame))
        action = env.action_space.sample()
        obs, *_ = env.step(action)
        raw, *_ = raw_env.step(action)
        frame = raw_env.render() if renders else raw
    np.testing.assert_array_equal(obs, transform(frame))
    env.close()
    raw_env.close()


def test_crop_removes_rows_before_resize():
    full = make_env("CarRacing-v3", frame_size=96)
    cropped = make_env("CarRacing-v3", frame_size=(84, 96), crop=(0, 12, 0, 0))
    a, _ = full.reset(seed=1)
    b, _ = cropped.reset(seed=1)
    np.testing.assert_array_equal(a[:84], b)  # same pixels, dashboard strip gone


def test_unknown_id_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown environment id 'CarRacin-v3'.*'CarRacing-v3'"):
        make_env("CarRacin-v3")


def test_env_without_frames_is_refused(no_render_env_id):
    with pytest.raises(ValueError, match="not an image, and cannot render frames"):
        make_env(no_render_env_id)


def test_preprocess_rejects_non_image_space():
    with pytest.raises(ValueError, match=r"FramePreprocess requires a uint8 \(H, W, C\) Box"):
        FramePreprocess(gym.make("CartPole-v1"))


def test_crop_larger_than_frame_is_refused():
    with pytest.raises(ValueError, match="does not fit frames of 96x96"):
        make_env("CarRacing-v3", crop=(50, 50, 0, 0))
