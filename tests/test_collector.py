import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs import BrownianPolicy, PolicySpec, collect
from worldvae.data import EpisodeDataset, load_episode
from worldvae.envspec import EnvSpec

CART = EnvSpec("CartPole-v1", frame_size=(16, 16))


def _episodes(root: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for p in sorted((root / "episodes").glob("ep_*.npz")):
        ep = load_episode(p)
        out[p.name] = {"frames": ep.frames, "actions": ep.actions, "rewards": ep.rewards}
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key], err_msg=f"{name}:{key}")


@pytest.mark.slow
def test_same_seed_same_dataset_whatever_the_worker_count(tmp_path):
    r1 = collect(
        tmp_path / "a",
        CART,
        n_episodes=5,
        n_workers=1,
        seed=11,
        progress=False,
    )
    r2 = collect(
        tmp_path / "b",
        CART,
        n_episodes=5,
        n_workers=2,
        seed=11,
        progress=False,
    )
    assert r1.total_episodes == r2.total_episodes == 5
    _assert_same(_episodes(tmp_path / "a"), _episodes(tmp_path / "b"))
    ep = load_episode(tmp_path / "a" / "episodes" / "ep_0000000.npz")
    assert ep.frames.shape == (ep.length + 1, 16, 16, 3)
    assert ep.terminated[-1] or ep.truncated[-1]
    assert not (ep.terminated[:-1] | ep.truncated[:-1]).any()


def test_frame_budget_keeps_a_deterministic_prefix(tmp_path):
    r = collect(
        tmp_path / "a",
        CART,
        n_frames=200,
        n_workers=2,
        seed=5,
        progress=False,
    )
    ds = EpisodeDataset(tmp_path / "a")
    indices = [e.index for e in ds.episodes]
    assert indices == list(range(len(indices)))  # a prefix, no gaps
    assert ds.n_frames() >= 200
    assert ds.n_frames() - ds.episodes[-1].n_frames < 200  # the last episode was needed
    assert r.total_frames == ds.n_frames()


def test_resume_adds_only_missing_episodes(tmp_path):
    collect(tmp_path / "a", CART, n_episodes=3, seed=1, progress=False)
    r = collect(tmp_path / "a", CART, n_episodes=5, seed=1, progress=False)
    assert r.new_episodes == 2 and r.total_episodes == 5
    collect(tmp_path / "b", CART, n_episodes=5, seed=1, progress=False)
    _assert_same(_episodes(tmp_path / "a"), _episodes(tmp_path / "b"))


@pytest.mark.slow
def test_other_settings_into_same_dir_is_refused(tmp_path):
    collect(tmp_path / "a", CART, n_episodes=1, seed=1, progress=False)
    with pytest.raises(ValueError, match="collected with other settings"):
        collect(tmp_path / "a", CART, n_episodes=1, seed=2, progress=False)
    r = collect(
        tmp_path / "a",
        CART,
        n_episodes=1,
        seed=2,
        overwrite=True,
        progress=False,
    )
    assert r.new_episodes == 1
    with pytest.raises(ValueError, match="collected with other settings"):  # another frame size
        collect(tmp_path / "a", CART.replace(frame_size=24), n_episodes=1, seed=2, progress=False)


def test_an_env_id_collects_its_default_spec_with_the_backend_resolved(tmp_path):
    collect(tmp_path / "a", "CartPole-v1", n_episodes=1, progress=False)
    manifest = EpisodeDataset(tmp_path / "a").manifest
    assert manifest.env_spec == EnvSpec("CartPole-v1", backend="gymnasium")
    assert manifest.env_options == manifest.env_spec.options()  # the whole spec, on disk
    assert manifest.frame_shape == manifest.env_spec.frame_shape == (64, 64, 3)


@pytest.mark.slow
def test_killed_collector_resumes_without_duplicates_or_broken_files(tmp_path):
    cmd = [
        sys.executable, "-m", "worldvae", "collect", "--env", "MiniGrid-Empty-8x8-v0",
        "--frame-size", "16", "--episodes", "40", "--workers", "2", "--seed", "3",
    ]  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, "--out", str(killed)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "episodes").glob("ep_*.npz"))) < 4:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-episode
    proc.wait()
    n_before = len(list((killed / "episodes").glob("ep_*.npz")))
    assert 4 <= n_before < 40, "the run must be killed part-way"
    subprocess.run([*cmd, "--out", str(killed)], check=True, capture_output=True)
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    assert not list((killed / "episodes").glob(".*"))  # no temporary left
    _assert_same(_episodes(killed), _episodes(tmp_path / "whole"))


def test_brownian_actions_are_temporally_correlated():
    space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    policy, random = BrownianPolicy(space, sigma=0.1), np.random.default_rng(0)
    policy.reset(0)
    walk = np.stack([policy.act(None) for _ in range(500)])
    white = random.uniform(-1, 1, (500, 3))
    assert walk.dtype == np.float32 and space.contains(walk[0])
    assert np.abs(np.diff(walk, axis=0)).mean() < 0.3 * np.abs(np.diff(white, axis=0)).mean()
    sticky = BrownianPolicy(gym.spaces.Discrete(4), repeat_prob=0.9)
    sticky.reset(0)
    acts = np.array([sticky.act(None) for _ in range(500)])
    assert (np.diff(acts) == 0).mean() > 0.85
    assert set(acts) == {0, 1, 2, 3}


def test_policy_spec_parsing():
    assert PolicySpec.parse("sb3:ppo:agent.zip") == PolicySpec(
        "sb3", {"algo": "ppo", "path": "agent.zip"}
    )
    with pytest.raises(ValueError, match="unknown policy 'greedy'"):
        PolicySpec.parse("greedy")


def test_collect_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="exactly one of n_episodes or n_frames"):
        collect(tmp_path, CART, n_episodes=1, n_frames=10)
    with pytest.raises(ValueError, match="did you mean"):
        collect(tmp_path, "CartPol-v1", n_episodes=1)
