"""Videos of agents playing (evaluate --video, record_episode_video, the report's GIF) and of
M's dream."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from agents import evaluate_bundle, resolve_config, train_agent
from agents.cli.main import main
from agents.comparison import CompareConfig, run_comparison
from agents.evaluation import VideoOptions, record_episode_video
from agents.report import write_report
from worldvae.memory import MDNRNN, MemoryConfig
from worldvae.memory.diagnostics import dream_rollout, dream_video
from worldvae.vae import Autoencoder, AutoencoderConfig
from worldvae.video import write_video

FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}
CARTPOLE_SIZE = (600, 400)  # (width, height) of CartPole's rgb_array rendering


@pytest.fixture(scope="module")
def cartpole_agent(tmp_path_factory):
    """A pixel PPO agent on 40x40 CartPole frames, trained for 64 steps."""
    cfg = resolve_config(
        "CartPole-v1", "pixel", "ppo", None, 64, seed=1, overrides=FAST,
        env_given={"frame_size": 40}, n_envs=2, eval_freq=64, eval_episodes=1,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("agent") / "agent"
    train_agent(cfg, out, progress=False)
    return out


def _gif_frames(path):
    with Image.open(path) as im:
        return im.n_frames, im.size, np.asarray(im.convert("RGB"))


def _mp4_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_evaluate_video_films_the_rendered_env_as_gif_and_mp4(cartpole_agent, tmp_path):
    seed = 7
    (episode_return,) = evaluate_bundle(cartpole_agent, 1, seed, device="cpu").returns
    n_steps = int(episode_return)  # CartPole pays 1 a step: one frame before each action
    gif, mp4 = tmp_path / "drive.gif", tmp_path / "drive.mp4"
    for path in (gif, mp4):
        args = ["evaluate", str(cartpole_agent), "--episodes", "2", "--seed", str(seed)]
        assert main([*args, "--video", str(path), "--device", "cpu"]) == 0
    n_frames, size, first = _gif_frames(gif)
    assert (n_frames, size) == (n_steps, CARTPOLE_SIZE)  # the env's rendering, not 40x40
    # the return is written on a dark band at the top left of CartPole's white background
    assert first[:12, :60].mean() < 150 < first[200:, :].mean()
    frames = _mp4_frames(mp4)
    assert len(frames) == n_steps
    assert frames[0].shape == (CARTPOLE_SIZE[1], CARTPOLE_SIZE[0], 3)


def test_evaluate_samples_actions_with_stochastic_and_takes_the_mode_by_default(
    cartpole_agent, capsys
):
    args = ["evaluate", str(cartpole_agent), "--episodes", "4", "--seed", "11", "--device", "cpu"]
    for flags, deterministic in (
        ([], None),
        (["--deterministic"], True),
        (["--stochastic"], False),
    ):
        r = evaluate_bundle(cartpole_agent, 4, 11, device="cpu", deterministic=deterministic)
        assert main([*args, *flags]) == 0
        out = capsys.readouterr().out
        assert f"return {r.mean:.2f} +- {r.std:.2f} over 4 episodes" in out
        assert ("sampled actions" in out) == (deterministic is False)
    mode = evaluate_bundle(cartpole_agent, 4, 11, device="cpu", deterministic=True).returns
    sampled = evaluate_bundle(cartpole_agent, 4, 11, device="cpu", deterministic=False).returns
    assert not np.array_equal(mode, sampled)  # the flag changes how actions are chosen
    assert main([*args, "--stochastic", "--deterministic"]) != 0
    assert "not allowed with argument --stochastic" in capsys.readouterr().err


def test_record_episode_video_scales_skips_and_caps_frames(cartpole_agent, tmp_path):
    seed = 3
    (episode_return,) = evaluate_bundle(cartpole_agent, 1, seed, device="cpu").returns
    clip = record_episode_video(
        cartpole_agent, tmp_path / "small.gif", seed, options=VideoOptions(width=200, every=2)
    )
    assert clip.episode_return == episode_return
    assert clip.n_frames == -(-int(episode_return) // 2)  # one frame in two
    assert clip.size == (200, 133)
    assert _gif_frames(clip.path)[:2] == (clip.n_frames, (200, 133))
    capped = record_episode_video(
        cartpole_agent, tmp_path / "capped.mp4", seed, options=VideoOptions(max_frames=3)
    )
    assert capped.n_frames == len(_mp4_frames(capped.path)) == min(3, int(episode_return))


def test_a_video_of_another_format_is_refused_before_playing(cartpole_agent, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"name it drive\.mp4 or drive\.gif"):
        evaluate_bundle(cartpole_agent, 1, video=tmp_path / "drive.avi", device="cpu")
    assert main(["evaluate", str(cartpole_agent), "--video", str(tmp_path / "drive.avi")]) != 0
    assert "argument --video" in capsys.readouterr().err
    assert not (tmp_path / "drive.avi").exists()


def test_dream_video_puts_the_real_episode_beside_ms_dream(tmp_path):
    torch.manual_seed(0)
    vae = Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(32, 32, 3), latent_dim=3, channels=(8, 16))
    ).eval()
    memory = MDNRNN(MemoryConfig(latent_dim=3, action_dim=2, hidden_size=16, n_gaussians=2))
    rng = np.random.default_rng(0)
    episode = {
        "mu": rng.normal(size=(9, 3)).astype(np.float32),
        "actions": np.eye(2, dtype=np.float32)[rng.integers(0, 2, 8)],
    }
    frames = dream_video(memory, vae, episode, n_steps=5, temperature=1.0, seed=4, pad=2)
    scale = 128 // 32
    side = 32 * scale
    assert frames.shape == (5, side, 2 * side + 2, 3)
    real = vae.decode(episode["mu"][1:6]).repeat(scale, axis=1).repeat(scale, axis=2)
    dreamed, _, _ = dream_rollout(memory, episode["mu"][0], episode["actions"][:5], 1.0, 4)
    dream = vae.decode(dreamed).repeat(scale, axis=1).repeat(scale, axis=2)
    below_labels = slice(side // 2, side)
    np.testing.assert_array_equal(frames[:, below_labels, :side], real[:, below_labels])
    np.testing.assert_array_equal(frames[:, below_labels, side + 2 :], dream[:, below_labels])
    assert (frames[:, :, side : side + 2] == 255).all()  # the white gap between the panels
    n_frames, size, _ = _gif_frames(write_video(tmp_path / "dream.gif", list(frames), fps=10))
    assert (n_frames, size) == (5, (2 * side + 2, side))


def test_the_report_embeds_a_small_gif_of_the_best_agent_and_keeps_it(tmp_path):
    cfg = CompareConfig(
        env_id="CartPole-v1", obs_kinds=("pixel",), seeds=(0,), total_timesteps=64,
        eval_freq=64, eval_episodes=1, final_eval_episodes=1, env_given={"frame_size": 40},
        overrides=FAST, n_envs=2, probe=False,
    )  # fmt: skip
    result = run_comparison(cfg, tmp_path / "cmp", progress=False)
    out = tmp_path / "cmp" / "report"
    text = write_report(result, out, "worldvae compare ...", video=True).read_text()
    filmed = json.loads((out / "best_agent.json").read_text())
    assert filmed["backend"] == "gymnasium" and filmed["run"] == result.runs[0]["run"]
    assert "![the best agent playing CartPole-v1](best_agent.gif)" in text
    assert f"from seed {cfg.eval_seed}: return {filmed['return']:.1f}" in text
    n_frames, size, _ = _gif_frames(out / "best_agent.gif")
    assert size == (200, 133) and n_frames == filmed["frames"] == -(-int(filmed["return"]) // 2)
    stamp = (out / "best_agent.gif").stat().st_mtime_ns
    write_report(result, out, "worldvae compare ...", video=True)  # the same best: not filmed again
    assert (out / "best_agent.gif").stat().st_mtime_ns == stamp
    assert "best_agent.gif" not in write_report(result, tmp_path / "plain", "c").read_text()
