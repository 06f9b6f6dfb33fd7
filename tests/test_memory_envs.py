import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from envs import make_env
from envs.dream_env import DreamEnv
from envs.latent_memory import LatentMemoryObservation, VecLatentMemoryObservation, action_spec_for
from worldvae.memory import MDNRNN, MemoryConfig
from worldvae.vae import Autoencoder, AutoencoderConfig


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
    ).eval()


@pytest.fixture(scope="module")
def memory():
    torch.manual_seed(1)
    return MDNRNN(MemoryConfig(latent_dim=4, action_dim=2, hidden_size=8, n_gaussians=2)).eval()


def _cartpole():
    return make_env("CartPole-v1", frame_size=16)


def test_latent_h_batched_equals_single_on_the_same_seeds(vae, memory):
    seeds = [3, 4]
    venv = VecLatentMemoryObservation(DummyVecEnv([_cartpole, _cartpole]), vae, memory)
    venv.seed(seeds[0])  # DummyVecEnv seeds env i with seed + i
    singles = [LatentMemoryObservation(_cartpole(), vae, memory) for _ in seeds]
    vec_obs = venv.reset()
    single_obs = [env.reset(seed=s)[0] for env, s in zip(singles, seeds, strict=True)]
    np.testing.assert_allclose(vec_obs, np.stack(single_obs), rtol=1e-5, atol=1e-6)
    assert vec_obs.shape == (2, 4 + 8) and not vec_obs[:, 4:].any()  # h is zero after a reset
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(60):
        actions = rng.integers(0, 2, 2)
        vec_obs, vec_rew, dones, infos = venv.step(actions)
        for i, env in enumerate(singles):
            obs, reward, term, trunc, _ = env.step(int(actions[i]))
            assert reward == vec_rew[i]
            if term or trunc:
                ends += 1
                assert dones[i]
                np.testing.assert_allclose(
                    infos[i]["terminal_observation"], obs, rtol=1e-5, atol=1e-6
                )
                obs, _ = env.reset()
            np.testing.assert_allclose(vec_obs[i], obs, rtol=1e-5, atol=1e-6)
    assert ends >= 2  # the comparison went through episode ends
    assert np.abs(vec_obs[:, 4:]).sum() > 0  # M's state moved


def test_latent_h_refuses_an_m_of_other_actions(vae):
    other = MDNRNN(MemoryConfig(latent_dim=4, action_dim=3, hidden_size=8))
    with pytest.raises(ValueError, match=r"M reads actions of width 3.*encodes to 2"):
        LatentMemoryObservation(_cartpole(), vae, other)
    wrong_z = MDNRNN(MemoryConfig(latent_dim=5, action_dim=2, hidden_size=8))
    with pytest.raises(ValueError, match="M reads latents of size 5, the VAE gives 4"):
        LatentMemoryObservation(_cartpole(), vae, wrong_z)


def test_action_spec_for_spaces():
    assert action_spec_for(gym.spaces.Discrete(3, start=1)).to_dict()["start"] == 1
    box = action_spec_for(gym.spaces.Box(-1, 1, (2,), np.float32))
    assert box.kind == "box" and box.n == 2
    with pytest.raises(ValueError, match="Discrete or Box"):
        action_spec_for(gym.spaces.MultiBinary(3))


def _dream(memory, vae=None, **kw):
    starts = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    return DreamEnv(memory, starts, gym.spaces.Discrete(2), vae=vae, **kw)


def test_dream_env_passes_the_env_checkers(memory, vae):
    gym_check_env(_dream(memory, max_episode_steps=50), skip_render_check=True)
    sb3_check_env(_dream(memory, max_episode_steps=50), warn=True)
    box_memory = MDNRNN(MemoryConfig(latent_dim=4, action_dim=3, hidden_size=8))
    starts = np.zeros((2, 4), np.float32)
    box = DreamEnv(box_memory, starts, gym.spaces.Box(-1, 1, (3,), np.float32))
    gym_check_env(box, skip_render_check=True)


def test_dream_env_is_seeded_renders_and_ends_when_m_says_so(memory, vae):
    env = _dream(memory, vae, render_mode="rgb_array", max_episode_steps=7)
    runs = []
    for _ in range(2):
        obs, info = env.reset(seed=11)
        traj = [obs]
        for _ in range(7):
            obs, _, term, trunc, _ = env.step(1)
            traj.append(obs)
        runs.append(np.stack(traj))
        assert trunc or term
    np.testing.assert_array_equal(runs[0], runs[1])
    assert env.render().shape == (16, 16, 3)
    ends = MDNRNN(memory.config)
    ends.load_state_dict(memory.state_dict())
    with torch.no_grad():
        ends.done_head.bias.fill_(20.0)
    env = _dream(ends)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(0)
    assert term and not trunc and info["done_probability"] > 0.99


def test_dream_env_rejects_bad_start_latents(memory):
    with pytest.raises(ValueError, match=r"start latents \(N, 4\)"):
        DreamEnv(memory, np.zeros((3, 7), np.float32), gym.spaces.Discrete(2))


def test_dream_vec_env_steps_m_once_for_all_envs_like_the_single_dream(memory):
    from envs.dream_env import DreamVecEnv

    starts = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)  # one start
    venv = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=3, max_episode_steps=50,
                        done_threshold=1.0)  # fmt: skip
    venv.seed(5)
    obs = venv.reset()
    assert obs.shape == (3, 4 + 8) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, :4], np.repeat(starts, 3, axis=0))
    actions = np.array([0, 1, 0])
    obs, rewards, dones, infos = venv.step(actions)
    assert all("terminal_observation" not in info for info in infos)
    assert rewards.shape == (3,) and dones.shape == (3,) and not dones.any()
    for i, a in enumerate(actions):  # h after one step depends on (z0, a0) alone
        single = DreamEnv(memory, starts, gym.spaces.Discrete(2), done_threshold=1.0)
        single.reset(seed=0)
        one, reward, *_ = single.step(int(a))
        np.testing.assert_allclose(obs[i, 4:], one[4:], rtol=1e-5, atol=1e-6)
        assert rewards[i] == pytest.approx(reward, rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(obs[0, 4:], obs[2, 4:])  # same start and action: same h
    assert not np.array_equal(obs[0, :4], obs[2, :4])  # each env samples its own next z


def test_dream_vec_env_is_seeded_and_never_mixes_two_episodes(memory):
    from envs.dream_env import DreamVecEnv

    starts = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)

    def play() -> tuple[np.ndarray, list[dict]]:
        venv = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=2, max_episode_steps=4,
                            done_threshold=1.0)  # fmt: skip
        venv.seed(7)
        frames, ends = [venv.reset()], []
        for t in range(9):
            obs, _, dones, infos = venv.step(np.array([t % 2, 1]))
            frames.append(obs)
            ends += [(t, i, infos[i]) for i in np.flatnonzero(dones)]
        return np.stack(frames), ends

    a, ends = play()
    b, _ = play()
    np.testing.assert_array_equal(a, b)
    assert {(t, i) for t, i, _ in ends} == {(3, 0), (3, 1), (7, 0), (7, 1)}  # the time limit
    for t, i, info in ends:
        assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == (12,)
        after = a[t + 1, i]
        assert not np.any(after[4:])  # M's state starts afresh: h = 0
        assert any(np.array_equal(after[:4], s) for s in starts)  # z from a real start
        assert not np.array_equal(info["terminal_observation"], after)


def _other_memory(seed: int, latent_dim: int = 4) -> MDNRNN:
    torch.manual_seed(seed)
    config = MemoryConfig(latent_dim=latent_dim, action_dim=2, hidden_size=6, n_gaussians=3)
    return MDNRNN(config).eval()


def test_dream_ensemble_of_copies_dreams_what_m_alone_dreams(memory):
    import copy

    from envs.dream_env import DreamVecEnv

    starts = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)

    def play(ensemble) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        venv = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=3,
                           max_episode_steps=5, ensemble=ensemble)  # fmt: skip
        venv.seed(11)
        steps = [(venv.reset(), np.zeros(3), np.zeros(3, bool))]
        for t in range(12):
            obs, rewards, dones, _ = venv.step(np.array([t % 2, 1, 0]))
            steps.append((obs, rewards, dones))
        return steps

    for alone, pair in zip(play(()), play([copy.deepcopy(memory)]), strict=True):
        for a, b in zip(alone, pair, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_dream_ensemble_draws_each_envs_next_latent_from_one_member_and_averages_rewards(memory):
    from envs.dream_env import DreamVecEnv

    other = _other_memory(2)
    start = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    n = 16
    venv = DreamVecEnv(memory, start, gym.spaces.Discrete(2), n_envs=n, temperature=1e-6,
                       done_threshold=1.0, ensemble=[other])  # fmt: skip
    venv.seed(0)
    venv.reset()
    obs, rewards, _, _ = venv.step(np.ones(n, np.int64))
    z = torch.from_numpy(np.repeat(start, n, axis=0))
    a = torch.from_numpy(venv.action_encoding.encode(np.ones(n, np.int64)))
    modes, member_rewards = [], []
    for m in (memory, other):
        out, _ = m.step(z, a, None)
        best = out.log_pi[:, -1].argmax(dim=-1, keepdim=True)  # tau -> 0: the likeliest mean
        modes.append(out.mu[:, -1].gather(-1, best).squeeze(-1)[0].numpy())
        member_rewards.append(float(out.reward[0, -1]))
        if m is memory:  # the observed h is the first M's
            np.testing.assert_allclose(obs[:, 4:], out.hidden[:, -1].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rewards, np.mean(member_rewards), rtol=1e-5, atol=1e-6)
    drawn = [int(np.argmin([np.abs(row[:4] - mode).max() for mode in modes])) for row in obs]
    for row, k in zip(obs, drawn, strict=True):
        np.testing.assert_allclose(row[:4], modes[k], atol=1e-2)
    assert set(drawn) == {0, 1}  # both members drawn among 16 envs


def test_dream_ensemble_refuses_a_member_of_other_latents(memory):
    from envs.dream_env import DreamVecEnv

    starts = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="ensemble member 1 reads latents of size 5"):
        DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=2,
                    ensemble=[_other_memory(2, latent_dim=5)])  # fmt: skip


def test_dream_disagreement_penalty_takes_the_members_spread_off_each_reward(memory):
    """With lambda, every dreamed reward is the unpenalised one less lambda times the members'
    disagreement, reported per env; copies of M never disagree."""
    import copy

    from envs.dream_env import DreamVecEnv
    from worldvae.memory.model import disagreement

    starts = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)

    def play(ensemble, penalty: float) -> list[tuple[np.ndarray, list[dict]]]:
        venv = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=4, max_episode_steps=6,
                           ensemble=ensemble, disagreement_penalty=penalty)  # fmt: skip
        venv.seed(5)
        venv.reset()
        return [venv.step(np.array([t % 2, 1, 0, 1]))[1:4:2] for t in range(9)]

    other = _other_memory(7)
    for (plain, infos), (paid, infos_paid) in zip(
        play([other], 0.0), play([other], 2.5), strict=True
    ):
        spread = np.array([i["disagreement"] for i in infos], np.float32)
        assert (spread > 0).all() and spread == pytest.approx(
            [i["disagreement"] for i in infos_paid]
        )
        np.testing.assert_allclose(paid, plain - 2.5 * spread, rtol=1e-5, atol=1e-6)
    for _, infos in play([copy.deepcopy(memory)], 2.5):
        assert [i["disagreement"] for i in infos] == [0.0] * 4
    z, a = torch.zeros(2, 4), torch.zeros(2, 2)
    outs = [m.step(z, a, None)[0] for m in (memory, other)]
    means = np.stack([o.mean()[:, -1].numpy() for o in outs])
    np.testing.assert_allclose(
        disagreement(outs)[:, -1].numpy(),
        np.linalg.norm(np.abs(means[0] - means[1]) / 2, axis=-1),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="two Ms or more"):
        disagreement(outs[:1])


def test_dream_disagreement_penalty_needs_an_ensemble_and_a_finite_non_negative_weight(memory):
    from envs.dream_env import DreamVecEnv

    starts = np.zeros((1, 4), np.float32)
    with pytest.raises(ValueError, match="pass an ensemble"):
        DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=2, disagreement_penalty=1.0)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="disagreement_penalty must be >= 0"):
            DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=2,
                        ensemble=[_other_memory(2)], disagreement_penalty=bad)  # fmt: skip


def test_dream_vec_env_seeded_env_by_env_starts_each_where_one_env_dream_starts(memory):
    from envs.dream_env import DreamVecEnv

    starts = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    seeds = [5, 6, 7, 8]
    venv = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=4)
    venv.seed_each(seeds)
    obs = venv.reset()
    alone = []
    for s in seeds:
        one = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=1)
        one.seed(s)
        alone.append(one.reset()[0])
    np.testing.assert_array_equal(obs, np.stack(alone))
    assert len({tuple(o[:4]) for o in alone}) > 1  # the seeds pick different starts
    # with one env, seed_each([s]) is seed(s): the same dream, sample for sample
    a, b = (
        DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=1, max_episode_steps=3)
        for _ in range(2)
    )
    a.seed_each([9])
    b.seed(9)
    a.reset(), b.reset()
    for _ in range(7):  # through M's ends and the time limit's restarts
        np.testing.assert_array_equal(a.step(np.array([1]))[0], b.step(np.array([1]))[0])
    with pytest.raises(ValueError, match="seed_each needs 4 seeds, got 2"):
        venv.seed_each([1, 2])


def test_dream_vec_env_envs_of_one_seed_share_its_dream(memory):
    import copy

    from envs.dream_env import DreamVecEnv

    starts = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    m2 = copy.deepcopy(memory)  # a second member, so the member draws are followed too
    with torch.no_grad():
        for p in m2.parameters():
            p.add_(0.05 * torch.randn_like(p))
    kw = {"done_threshold": 1.0, "ensemble": [m2], "temperature": 1.3}
    venv = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=3, **kw)
    one = DreamVecEnv(memory, starts, gym.spaces.Discrete(2), n_envs=1, **kw)
    venv.seed_each([5, 5, 6])
    one.seed(5)
    obs, alone = venv.reset(), one.reset()
    for _ in range(8):
        obs, rewards, *_ = venv.step(np.ones(3, int))
        alone, alone_rewards, *_ = one.step(np.ones(1, int))
        np.testing.assert_array_equal(obs[0], obs[1])  # the same seed: the same dream
        np.testing.assert_allclose(obs[0], alone[0], rtol=1e-5, atol=1e-5)  # seed(5)'s dream
        assert rewards[0] == pytest.approx(alone_rewards[0], rel=1e-5, abs=1e-5)
    assert not np.allclose(obs[0, :4], obs[2, :4])  # another seed, another dream
    venv.seed(5)  # back to one generator for all envs
    venv.reset()
    obs = venv.step(np.ones(3, int))[0]
    assert not np.array_equal(obs[0, :4], obs[1, :4])
