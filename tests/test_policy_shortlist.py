"""The shortlist of SB3 agents: every evaluation's policy kept, the best evaluations' played
again on other episodes, all at once, and the best there kept as the run's best policy."""

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
from stable_baselines3 import PPO

from agents import evaluate_bundle, resolve_config, train_agent
from agents.agent_config import validate_hyperparams
from agents.agent_training import _same_run
from agents.comparison import best_policy
from agents.controller.cmaes import CHOICE_CSV, CHOICE_SEED_OFFSET
from agents.environments import build_vec_env, evaluate_policy_seeded
from agents.policy_shortlist import evaluated_policy_path, play_policies, shortlisted

FAST = {"n_steps": 64, "batch_size": 64, "n_epochs": 1}


def _cfg(steps=384, seed=3, **algo):
    return resolve_config(
        "CartPole-v1", "state", "ppo", None, steps, seed=seed, overrides=FAST | algo,
        n_envs=2, eval_freq=64, eval_episodes=2,
    )  # fmt: skip


def test_policies_played_together_return_what_each_returns_alone():
    cfg = _cfg()
    one = build_vec_env(cfg, 1, 0, None)
    policies = [PPO("MlpPolicy", one, seed=s, device="cpu") for s in (0, 1)]
    alone = np.stack([evaluate_policy_seeded(p, one, 3, 100) for p in policies])
    one.close()
    venv = build_vec_env(cfg, 4, 0, None)  # 6 episodes: two waves, the second with 2 idle envs
    together = play_policies(policies, venv, 3, 100)
    venv.close()
    assert together.shape == (2, 3)
    np.testing.assert_array_equal(together, alone)
    assert not np.array_equal(alone[0], alone[1])  # two policies that differ, each its own


def test_a_shortlist_keeps_the_policy_best_on_other_episodes(tmp_path):
    cfg = _cfg(shortlist=3, shortlist_episodes=3)
    out = tmp_path / "a"
    train_agent(cfg, out, progress=False)
    info = json.loads((out / "config.json").read_text())
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert len(rows) >= 4
    kept = sorted(p.name for p in (out / "evaluated").iterdir())
    assert kept == sorted(evaluated_policy_path(out, int(r["steps"])).name for r in rows)
    choice = list(csv.DictReader((out / CHOICE_CSV).open()))
    means = sorted((float(r["mean_return"]) for r in rows), reverse=True)
    assert [float(r["mean_return"]) for r in choice] == pytest.approx(means[:3])
    chosen = [r for r in choice if r["chosen"] == "True"]
    assert len(chosen) == 1
    scores = [float(r["choice_mean_return"]) for r in choice]
    assert float(chosen[0]["choice_mean_return"]) == max(scores)
    steps = int(chosen[0]["steps"])
    assert info["best"]["steps"] == steps
    assert info["choice"] == {
        "steps": steps,
        "shortlist": 3,
        "episodes": 3,
        "seed": cfg.eval_seed + CHOICE_SEED_OFFSET,
        "mean_return": pytest.approx(max(scores)),
        "std_return": pytest.approx(float(chosen[0]["choice_std_return"])),
    }
    assert info["train_seconds"] == pytest.approx(float(rows[-1]["seconds"]), abs=0.05)
    # the best policy is that evaluation's: it replays its score on the choosing episodes
    kept_bytes = evaluated_policy_path(out, steps).read_bytes()
    assert (out / "best_agent.zip").read_bytes() == kept_bytes
    again = evaluate_bundle(out, 3, cfg.eval_seed + CHOICE_SEED_OFFSET, device="cpu", which="best")
    assert again.returns.mean() == pytest.approx(max(scores))
    # across runs, the best policy is the one best on its shortlist's episodes
    assert best_policy(tmp_path, ["a"]) == ("a", "best", steps)
    # --overwrite with no shortlist removes the shortlist's files with the rest of the bundle
    plain = replace(cfg, total_timesteps=64, algo_kwargs=cfg.algo_kwargs | {"shortlist": 0})
    train_agent(plain, out, progress=False, overwrite=True)
    assert not (out / CHOICE_CSV).exists() and not (out / "evaluated").exists()
    assert "choice" not in json.loads((out / "config.json").read_text())


def test_the_best_row_of_a_run_that_kept_no_policies_comes_from_the_best_file(tmp_path):
    (tmp_path / "best_agent.zip").write_bytes(b"zip")
    evaluated_policy_path(tmp_path, 64).parent.mkdir()
    evaluated_policy_path(tmp_path, 64).write_bytes(b"zip")
    rows = [
        {"steps": 0, "mean_return": 5.0},
        {"steps": 32, "mean_return": 9.0},
        {"steps": 64, "mean_return": 7.0},
        {"steps": 96, "mean_return": 8.0},
    ]
    picked = shortlisted(tmp_path, rows, 3)
    assert [(r["steps"], p.name) for r, p in picked] == [
        (32, "best_agent.zip"),
        (64, "000000000064.zip"),
    ]  # 96 and 0 kept no policy


def test_a_run_resumes_across_its_shortlist_settings_only():
    recorded = _cfg(shortlist=0).to_dict()
    assert _same_run(recorded, _cfg(shortlist=4, shortlist_episodes=10), None)
    assert not _same_run(recorded, _cfg(shortlist=4, n_epochs=2), None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"shortlist": -1}, "ppo.shortlist must be int >= 0"),
        ({"shortlist": 1.5}, "ppo.shortlist must be int >= 0"),
        ({"shortlist_episodes": 0}, "ppo.shortlist_episodes must be int >= 1"),
    ],
)
def test_shortlist_settings_out_of_range_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        validate_hyperparams({"ppo": values}, "hp.yaml")


def _run(runs, name, best, choice=None):
    (runs / name).mkdir(parents=True)
    (runs / name / "best_agent.zip").write_bytes(b"zip")
    info = {"best": {"steps": best[0], "mean_return": best[1]}, "final_mean_return": 0.0}
    info |= {"choice": {"mean_return": choice, "steps": best[0]}} if choice is not None else {}
    info |= {"steps": 100}
    (runs / name / "config.json").write_text(json.dumps(info))


def test_the_best_run_is_the_best_on_its_shortlist_where_every_run_had_one(tmp_path):
    _run(tmp_path, "lucky", (40, 500.0), choice=300.0)  # best evaluation, worse elsewhere
    _run(tmp_path, "steady", (80, 450.0), choice=420.0)
    assert best_policy(tmp_path, ["lucky", "steady"]) == ("steady", "best", 80)
    _run(tmp_path, "plain", (60, 460.0))  # chose by its evaluations: all are weighed by theirs
    assert best_policy(tmp_path, ["lucky", "steady", "plain"]) == ("lucky", "best", 40)


def test_a_best_policy_taken_from_the_best_file_is_kept_before_the_shortlist_replaces_it(
    tmp_path,
):
    from agents.policy_shortlist import _keep_best_row, restore_best_policy

    (tmp_path / "best_agent.zip").write_bytes(b"step 32")
    picked = shortlisted(tmp_path, [{"steps": 32, "mean_return": 9.0}], 2)
    _keep_best_row(tmp_path, picked)
    assert picked[0][1] == evaluated_policy_path(tmp_path, 32)
    assert picked[0][1].read_bytes() == b"step 32"
    # the shortlist then keeps another step's policy; a run finished without one (killed
    # after the shortlist, resumed with shortlist 0) keeps its best evaluation's again
    (tmp_path / "best_agent.zip").write_bytes(b"step 64")
    restore_best_policy(tmp_path, 32)
    assert (tmp_path / "best_agent.zip").read_bytes() == b"step 32"
    restore_best_policy(tmp_path, 96)  # kept no policy: the file is left as it is
    assert (tmp_path / "best_agent.zip").read_bytes() == b"step 32"


def test_sampled_play_draws_gsde_noise_for_each_env():
    cfg = resolve_config("Pendulum-v1", "state", "ppo", None, 64, seed=0, n_envs=1)
    one = build_vec_env(cfg, 1, 0, None)
    policy = PPO("MlpPolicy", one, use_sde=True, sde_sample_freq=4, seed=0, device="cpu")
    one.close()
    venv = build_vec_env(cfg, 3, 0, None)
    returns = play_policies([policy], venv, 3, 7, deterministic=False)
    venv.close()
    assert returns.shape == (1, 3) and np.isfinite(returns).all()
    # one exploration matrix per env, not one shared by the policy's three episodes
    assert policy.policy.action_dist.exploration_matrices.shape[0] == 3
