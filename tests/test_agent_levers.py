"""Training levers in the hyperparameters: schedules, reward normalisation, the policy's
initial spread and activation, and the kept policy of the best evaluation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from agents import evaluate_bundle, load_bundle, load_hyperparams, resolve_config, train_agent
from agents.agent_config import validate_hyperparams
from agents.algo_kwargs import constructor_kwargs

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "best_policy.py"
FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}


def _cfg(steps=256, overrides=None, seed=2, **kw):
    return resolve_config(
        "CartPole-v1", "state", "ppo", None, steps, seed=seed,
        overrides=FAST | (overrides or {}), n_envs=2, eval_freq=64, eval_episodes=2, **kw,
    )  # fmt: skip


class Seen(BaseCallback):
    """Records the env the algorithm trains on and the rewards it learns from."""

    def __init__(self):
        super().__init__()
        self.rewards: list[np.ndarray] = []

    def _on_step(self) -> bool:
        self.env = self.training_env
        self.rewards.append(np.array(self.locals["rewards"]))
        return True


def test_linear_schedule_runs_from_start_to_end():
    kwargs = constructor_kwargs({"learning_rate": {"linear": [1e-3, 1e-4]}, "n_envs": 4})
    lr = kwargs["learning_rate"]
    assert "n_envs" not in kwargs
    assert lr(1.0) == pytest.approx(1e-3) and lr(0.0) == pytest.approx(1e-4)
    assert lr(0.5) == pytest.approx(5.5e-4)
    to_zero = constructor_kwargs({"clip_range": {"linear": 0.2}})["clip_range"]
    assert to_zero(1.0) == pytest.approx(0.2) and to_zero(0.0) == 0.0


def test_trained_agent_follows_its_schedule(tmp_path):
    class LearningRates(BaseCallback):
        """The optimiser's learning rate after each update."""

        def __init__(self):
            super().__init__()
            self.lrs: list[float] = []

        def _on_rollout_start(self) -> None:
            self.lrs.append(self.model.policy.optimizer.param_groups[0]["lr"])

        def _on_training_end(self) -> None:
            self.lrs.append(self.model.policy.optimizer.param_groups[0]["lr"])

        def _on_step(self) -> bool:
            return True

    seen = LearningRates()
    cfg = _cfg(overrides={"learning_rate": {"linear": [1e-3, 1e-4]}})
    train_agent(cfg, tmp_path / "a", progress=False, callbacks=[seen])
    # updates after 128 and 256 of 256 steps: half way, then the end value
    assert seen.lrs[1:] == pytest.approx([5.5e-4, 1e-4])


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"learning_rate": {"cosine": 1e-3}}, r"ppo.learning_rate must be a number or a schedule"),
        ({"clip_range": {"linear": [0.2, -0.1]}}, r"ppo.clip_range: a linear schedule takes"),
        ({"clip_range": {"linear": [1, 2, 3]}}, r"ppo.clip_range: a linear schedule takes"),
        ({"normalize_reward": 1}, r"normalize_reward must be bool"),
        ({"policy_kwargs": {"activation_fn": "swish"}}, r"activation_fn must be one of"),
    ],
)
def test_bad_levers_are_refused_naming_the_key(bad, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        validate_hyperparams({"ppo": bad}, "x.yaml")
    path = tmp_path / "hp.yaml"
    path.write_text(json.dumps({"ppo": bad}))  # JSON is YAML
    with pytest.raises(ValueError, match=match):
        load_hyperparams("CartPole-v1", path)


def test_reward_normalization_scales_training_rewards_not_reported_returns(tmp_path):
    seen = Seen()
    cfg = _cfg(overrides={"normalize_reward": True})
    train_agent(cfg, tmp_path / "a", progress=False, callbacks=[seen])
    assert isinstance(seen.env, VecNormalize) and not seen.env.norm_obs
    rewards = np.concatenate(seen.rewards)
    assert not np.allclose(rewards, 1.0)  # CartPole pays 1 a step; scaled by the return's std
    returns = [
        float(r.split(",")[3]) for r in (tmp_path / "a" / "eval.csv").read_text().split()[1:]
    ]
    assert all(r == int(r) and r >= 8 for r in returns)  # whole steps: the env's own units


@pytest.mark.slow
def test_reward_normalization_resumes_to_the_same_weights(tmp_path):
    class StopAt(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 300:
                raise KeyboardInterrupt
            return True

    cfg = _cfg(384, {"normalize_reward": True}, checkpoint_freq=128)
    train_agent(cfg, tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_agent(cfg, tmp_path / "cut", progress=False, callbacks=[StopAt()])
    state = json.loads((tmp_path / "cut" / "checkpoints" / "last" / "state.json").read_text())
    assert state["reward_norm"]["count"] > 1
    train_agent(cfg, tmp_path / "cut", progress=False)
    whole = load_bundle(tmp_path / "whole", device="cpu").agent.policy.state_dict()
    cut = load_bundle(tmp_path / "cut", device="cpu").agent.policy.state_dict()
    for k in whole:
        torch.testing.assert_close(cut[k], whole[k], rtol=0, atol=0)


def test_policy_spread_and_activation_reach_the_policy(tmp_path):
    overrides = {
        "use_sde": True,
        "policy_kwargs": {"log_std_init": -2.0, "activation_fn": "gelu", "net_arch": [16]},
    }
    cfg = resolve_config(
        "Pendulum-v1", "state", "ppo", None, 64, overrides=FAST | overrides, n_envs=1,
        eval_freq=64, eval_episodes=1,
    )  # fmt: skip
    train_agent(cfg, tmp_path / "a", progress=False)
    policy = load_bundle(tmp_path / "a", device="cpu").agent.policy
    assert any(isinstance(m, nn.GELU) for m in policy.modules())
    assert not any(isinstance(m, nn.Tanh) for m in policy.mlp_extractor.modules())
    assert float(policy.log_std.detach().mean()) == pytest.approx(
        -2.0, abs=0.05
    )  # one small update


def test_sampled_evaluation_resamples_gsde_noise_as_training_does(tmp_path):
    """A gSDE policy sampled in evaluation draws fresh noise each episode and every
    sde_sample_freq steps (not one matrix for all episodes), reproducibly; its mode draws none."""
    from agents.environments import build_vec_env, evaluate_policy_seeded

    overrides = {"use_sde": True, "sde_sample_freq": 4, "policy_kwargs": {"net_arch": [16]}}
    cfg = resolve_config(
        "Pendulum-v1", "state", "ppo", None, 64, overrides=FAST | overrides, n_envs=1,
        eval_freq=64, eval_episodes=1,
    )  # fmt: skip
    train_agent(cfg, tmp_path / "a", progress=False)
    bundle = load_bundle(tmp_path / "a", device="cpu")
    venv = build_vec_env(bundle.config, 1, 0, None)
    agent = bundle.agent
    dist = agent.policy.action_dist
    before = dist.exploration_mat.clone()
    evaluate_policy_seeded(agent, venv, 1, 5, deterministic=True)
    assert torch.equal(dist.exploration_mat, before)  # the mode leaves the noise alone
    first = evaluate_policy_seeded(agent, venv, 2, 5, deterministic=False)
    assert not torch.equal(dist.exploration_mat, before)
    after_5_6 = dist.exploration_mat.clone()
    assert np.array_equal(first, evaluate_policy_seeded(agent, venv, 2, 5, deterministic=False))
    assert torch.equal(dist.exploration_mat, after_5_6)  # the same draws again
    evaluate_policy_seeded(agent, venv, 1, 5, deterministic=False)
    assert not torch.equal(dist.exploration_mat, after_5_6)  # another episode, other noise


@pytest.mark.slow
def test_best_policy_is_kept_and_scores_its_evaluation(tmp_path):
    cfg = _cfg(512)
    train_agent(cfg, tmp_path / "a", progress=False)
    rows = [r.split(",") for r in (tmp_path / "a" / "eval.csv").read_text().split()[1:]]
    best = max(rows, key=lambda r: float(r[3]))
    info = json.loads((tmp_path / "a" / "config.json").read_text())
    assert info["best"]["steps"] == int(best[0])
    assert info["best"]["mean_return"] == pytest.approx(float(best[3]))
    # the kept policy replays its evaluation: same seeds, deterministic actions
    again = evaluate_bundle(tmp_path / "a", n_episodes=2, device="cpu", which="best")
    assert again.mean == pytest.approx(float(best[3]))
    final = evaluate_bundle(tmp_path / "a", n_episodes=2, device="cpu")
    assert final.mean == pytest.approx(float(rows[-1][3]))
    out = subprocess.run(
        [sys.executable, "-m", "worldvae", "evaluate", str(tmp_path / "a"), "--episodes", "2",
         "--which", "best"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert f"return {float(best[3]):.2f}" in out.stdout


def test_best_policy_missing_is_a_clear_error(tmp_path):
    train_agent(_cfg(128), tmp_path / "a", progress=False)
    (tmp_path / "a" / "best_agent.zip").unlink()
    with pytest.raises(FileNotFoundError, match="kept no best policy"):
        load_bundle(tmp_path / "a", device="cpu", which="best")
    load_bundle(tmp_path / "a", device="cpu")  # the final one still loads


@pytest.mark.slow
def test_canonical_scoring_picks_the_highest_evaluation_over_runs(tmp_path):
    from agents.pipeline import best_policy

    for seed in (0, 1):
        train_agent(_cfg(256, seed=seed), tmp_path / f"run{seed}", progress=False)
    infos = {s: json.loads((tmp_path / f"run{s}" / "config.json").read_text()) for s in (0, 1)}
    top = max((0, 1), key=lambda s: infos[s]["best"]["mean_return"])
    assert best_policy(tmp_path, ["run0", "run1"]) == (
        f"run{top}",
        "best",
        infos[top]["best"]["steps"],
    )
    (tmp_path / f"run{top}" / "best_agent.zip").unlink()  # an agent that kept none
    run, which, step = best_policy(tmp_path, [f"run{top}"])
    assert (run, which, step) == (f"run{top}", "final", infos[top]["steps"])


@pytest.mark.slow
def test_best_policy_script_names_the_arms_best_run(tmp_path):
    """scripts/best_policy.py: the --policy value of the top run of one arm, or a clear error."""
    runs = tmp_path / "runs"
    for seed in (0, 1):
        train_agent(_cfg(256, seed=seed), runs / f"run{seed}", progress=False)
    (runs / "unfinished").mkdir()  # a run without results is not a candidate
    (runs / "unfinished" / "config.json").write_text(json.dumps({"agent": {"obs": "state"}}))
    infos = {s: json.loads((runs / f"run{s}" / "config.json").read_text()) for s in (0, 1)}
    top = max((0, 1), key=lambda s: infos[s]["best"]["mean_return"])

    def script(*args):
        return subprocess.run(
            [sys.executable, str(SCRIPT), *map(str, args)],
            capture_output=True, text=True,
        )  # fmt: skip

    out = script(runs, "--obs", "state")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"best-agent:{runs / f'run{top}'}"
    (runs / f"run{top}" / "best_agent.zip").unlink()
    other = script(runs, "--obs", "state").stdout.strip()
    assert other in (f"agent:{runs / f'run{top}'}", f"best-agent:{runs / f'run{1 - top}'}")
    missing = script(runs, "--obs", "latent")
    assert missing.returncode == 2 and "no finished 'latent' runs" in missing.stderr
    nowhere = script(tmp_path / "nope")
    assert nowhere.returncode == 2 and "is not a directory" in nowhere.stderr
