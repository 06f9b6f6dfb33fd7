"""envpool's async stepping against its batched stepping, and the latent wrapper that encodes
chunks of finished envs while the others step."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from envs.envpool_env import EnvpoolVecEnv
from envs.latent import VecLatentObservation, torch_threads
from envs.preprocessing import FrameChunk, FrameChunkSource, FrameTransform
from worldvae.vae import Autoencoder, AutoencoderConfig

pytest.importorskip("envpool")

CAR = "CarRacing-v3"
T = 5  # time limit: with frame skip 2 an episode ends inside an agent step's second frame


def _venv(n_envs: int, async_step: bool, frame_skip: int = 2, seed: int = 3) -> EnvpoolVecEnv:
    return EnvpoolVecEnv(
        CAR,
        n_envs,
        frame_size=32,
        crop=(0, 12, 0, 0),
        frame_skip=frame_skip,
        max_episode_steps=T,
        seed=seed,
        async_step=async_step,
        num_threads=2,
    )


def _actions(n_steps: int, n_envs: int) -> np.ndarray:
    """Different actions per env and per step ``(n_steps, n_envs, 3)``."""
    return np.random.default_rng(0).uniform(-1, 1, (n_steps, n_envs, 3)).astype(np.float32)


class CountingTransform(FrameTransform):
    """A FrameTransform that counts the frames it preprocesses."""

    frames = 0

    def batch(self, frames: np.ndarray) -> np.ndarray:
        self.frames += len(frames)
        return super().batch(frames)


class PassThrough(VecEnvWrapper):
    """A wrapper the latent wrapper cannot see through: it encodes after the step."""

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        return self.venv.step_wait()


class Recording(Autoencoder):
    """An autoencoder that records, per encode call, the frames and torch's thread count."""

    calls: list[tuple[int, int]]

    def encode(self, frames, sample=False):
        self.calls.append((len(frames), torch.get_num_threads()))
        return super().encode(frames, sample=sample)


def _tiny_model() -> Recording:
    torch.manual_seed(0)
    config = AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), latent_dim=4, channels=(8, 16))
    model = Recording(config).eval()
    model.calls = []
    return model


@pytest.mark.parametrize("frame_skip", [1, 2, 3])
def test_async_and_sync_give_the_same_transitions(frame_skip):
    sync, asyn = _venv(3, False, frame_skip), _venv(3, True, frame_skip)
    assert asyn._pool.is_async and not sync._pool.is_async
    np.testing.assert_array_equal(sync.reset(), asyn.reset())
    ends = 0
    for actions in _actions(8, 3):
        obs_s, rew_s, done_s, info_s = sync.step(actions)
        obs_a, rew_a, done_a, info_a = asyn.step(actions)
        np.testing.assert_array_equal(obs_s, obs_a)
        np.testing.assert_array_equal(rew_s, rew_a)
        np.testing.assert_array_equal(done_s, done_a)
        assert np.all(rew_a != 0.0)  # envpool's reset step (reward 0) never reaches the agent
        for i in range(3):
            assert info_s[i].keys() == info_a[i].keys()
            if done_a[i]:
                ends += 1
                assert info_a[i]["TimeLimit.truncated"] is info_s[i]["TimeLimit.truncated"]
                terminal = info_a[i]["terminal_observation"]
                np.testing.assert_array_equal(info_s[i]["terminal_observation"], terminal)
                assert not np.array_equal(terminal, obs_a[i])  # obs[i] starts the next episode
    assert ends >= 3
    # seeding again restarts the same episodes on the async pool too
    asyn.seed(5)
    sync.seed(5)
    np.testing.assert_array_equal(sync.reset(), asyn.reset())
    sync.close()
    asyn.close()


def _chunks_of_steps(venv: EnvpoolVecEnv, n_steps: int, min_chunk: int) -> list[list[FrameChunk]]:
    """Per step, the chunks handed to a consumer, checked against what the step returned."""
    venv.reset()
    per_step: list[list[FrameChunk]] = []
    for actions in _actions(n_steps, venv.num_envs):
        chunks: list[FrameChunk] = []
        with venv.frame_consumer(chunks.append, min_chunk):
            obs, _, dones, infos = venv.step(actions)
        ids = np.concatenate([c.env_ids for c in chunks])
        np.testing.assert_array_equal(np.sort(ids), np.arange(venv.num_envs))  # each env once
        for c in chunks:
            k = len(c.env_ids)
            assert len(c.frames) == k + len(c.done_ids)
            np.testing.assert_array_equal(c.frames[:k], np.asarray(obs)[c.env_ids])
            np.testing.assert_array_equal(c.done_ids, [i for i in c.env_ids if dones[i]])
            for j, i in enumerate(c.done_ids):
                np.testing.assert_array_equal(c.frames[k + j], infos[i]["terminal_observation"])
        per_step.append(chunks)
    return per_step


def test_chunks_hand_on_every_env_once_and_preprocess_each_frame_once():
    venv = _venv(4, True)
    assert isinstance(venv, FrameChunkSource)
    venv.transform = CountingTransform(venv._raw.shape[1:], (32, 32), crop=(0, 12, 0, 0))
    per_step = _chunks_of_steps(venv, 6, min_chunk=2)
    for chunks in per_step:
        assert all(len(c.env_ids) >= 2 for c in chunks[:-1])
    n_frames = sum(len(c.frames) for chunks in per_step for c in chunks)
    assert venv.transform.frames == 4 + n_frames  # the reset's 4, then each frame once
    assert any(len(c.done_ids) for chunks in per_step for c in chunks)
    with (
        venv.frame_consumer(lambda chunk: None),
        pytest.raises(RuntimeError, match="one frame consumer"),
        venv.frame_consumer(lambda chunk: None),
    ):
        pass
    venv.close()
    sync = _venv(4, False)
    assert all(len(chunks) == 1 for chunks in _chunks_of_steps(sync, 3, min_chunk=2))
    sync.close()


def test_a_consumer_that_raises_leaves_the_pool_usable():
    venv = _venv(4, True)
    venv.reset()

    def fail(chunk: FrameChunk) -> None:
        raise ValueError("consumer failed")

    actions = _actions(2, 4)
    with venv.frame_consumer(fail, 1), pytest.raises(ValueError, match="consumer failed"):
        venv.step(actions[0])
    obs, rewards, _, _ = venv.step(actions[1])  # no result of the failed step is left over
    assert obs.shape == (4, 32, 32, 3) and np.all(rewards != 0.0)
    venv.close()


def _latent_run(venv: VecEnv, model: Autoencoder, n_steps: int) -> list[tuple]:
    latent = VecLatentObservation(venv, model, frame_stack=2, chunk_size=2)
    steps: list[tuple] = [(latent.reset(),)]
    for actions in _actions(n_steps, venv.num_envs):
        obs, rewards, dones, infos = latent.step(actions)
        terminal = {i: info["terminal_observation"] for i, info in enumerate(infos) if dones[i]}
        steps.append((obs, rewards, dones, terminal))
    latent.close()
    return steps


def test_latent_wrapper_encodes_chunks_as_the_envs_finish():
    model = _tiny_model()
    # the torch runtime: the calls are counted in model.encode, the threads are torch's
    latent = VecLatentObservation(VecMonitor(_venv(4, True)), model, chunk_size=2, runtime="torch")
    assert latent.chunk_source is not None and latent.chunk_source.async_step
    assert latent.thread_budget == {"encode_threads": 1, "env_threads": 2, "chunk_size": 2}
    latent.reset()
    for actions in _actions(4, 4):
        model.calls.clear()
        _, _, dones, infos = latent.step(actions)
        # every frame once (the step's and the terminal ones), in chunks, on one torch thread
        assert len(model.calls) >= 2 and sum(n for n, _ in model.calls) == 4 + int(dones.sum())
        assert all(threads == 1 for _, threads in model.calls)
        assert all("episode" in infos[i] for i in np.flatnonzero(dones))  # VecMonitor's
    latent.close()
    # the same observations as one encode after a batched step (float rounding aside)
    chunked = _latent_run(VecMonitor(_venv(4, True)), model, 6)
    after = _latent_run(PassThrough(_venv(4, False)), model, 6)
    assert any(len(step[3]) for step in after[1:])
    np.testing.assert_allclose(chunked[0][0], after[0][0], rtol=1e-5, atol=1e-6)
    for (obs_c, rew_c, done_c, term_c), (obs_a, rew_a, done_a, term_a) in zip(
        chunked[1:], after[1:], strict=True
    ):
        np.testing.assert_allclose(obs_c, obs_a, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(rew_c, rew_a)
        np.testing.assert_array_equal(done_c, done_a)
        assert term_c.keys() == term_a.keys()
        for i in term_c:
            np.testing.assert_allclose(term_c[i], term_a[i], rtol=1e-5, atol=1e-6)


def test_torch_threads_are_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
