"""World Models' controller C: linear or with one hidden layer, saved and loaded by shape, and
scored by CMA-ES per env or batched on one VecEnv (same fitnesses)."""

import csv
import json
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from agents import evaluate_bundle, load_bundle, resolve_config, train_agent
from agents.agent_config import validate_hyperparams
from agents.controller.cmaes import (
    BEST_CONTROLLER_FILE,
    CHOICE_CSV,
    CHOICE_SEED_OFFSET,
    CONTROLLER_FILE,
    BatchedScorer,
    CandidateScorer,
    CMAESConfig,
    Controller,
    ControllerBatch,
    LinearController,
    evaluated_path,
    load_controller,
    rollouts,
)
from agents.environments import build_vec_env
from worldvae.memory import load_memory
from worldvae.vae import load_model

ENV = {"frame_size": 16}
OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
BOX = gym.spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32))


def _cfg(world, steps=60, **cmaes):
    vae, rnn = world
    return resolve_config(
        "CartPole-v1",
        "latent+h",
        "cmaes",
        str(vae),
        steps,
        seed=1,
        overrides={"popsize": 4, "rollouts": 1, "workers": 1} | cmaes,
        memory_dir=str(rnn),
        env_given=ENV,
        eval_freq=60,
        eval_episodes=2,
        device="cpu",
    )


def test_a_hidden_layer_controller_round_trips(tmp_path):
    for space, n_out in ((gym.spaces.Discrete(3, start=1), 3), (BOX, 2)):
        c = Controller(5, space, hidden=4)
        assert c.n_params == 4 * 5 + 4 + n_out * 4 + n_out
        c.set_params(np.random.default_rng(0).normal(size=c.n_params))
        c.save(tmp_path / CONTROLLER_FILE)
        shapes = {k: v.shape for k, v in load_file(str(tmp_path / CONTROLLER_FILE)).items()}
        assert shapes == {
            "hidden.weight": (4, 5),
            "hidden.bias": (4,),
            "weight": (n_out, 4),
            "bias": (n_out,),
        }
        loaded = load_controller(tmp_path, OBS, space)
        assert loaded.hidden == 4
        np.testing.assert_array_equal(loaded.params(), c.params())
        obs = np.random.default_rng(1).normal(size=(7, 5)).astype(np.float32)
        np.testing.assert_array_equal(loaded.predict(obs)[0], c.predict(obs)[0])
        x = np.tanh(obs @ c.hidden_weight.T + c.hidden_bias) @ c.weight.T + c.bias
        if space is BOX:
            expected = BOX.low + (np.tanh(x) + 1) / 2 * (BOX.high - BOX.low)
            np.testing.assert_allclose(c.predict(obs)[0], expected, rtol=1e-6)
        else:
            np.testing.assert_array_equal(c.predict(obs)[0], x.argmax(axis=1) + 1)


def test_a_linear_controller_keeps_its_layout_and_name(tmp_path):
    assert LinearController is Controller
    c = Controller(5, BOX, np.arange(12, dtype=np.float32))
    assert c.weight.tolist() == np.arange(10).reshape(2, 5).tolist() and c.bias.tolist() == [10, 11]
    c.save(tmp_path / CONTROLLER_FILE)
    assert set(load_file(str(tmp_path / CONTROLLER_FILE))) == {"weight", "bias"}
    assert load_controller(tmp_path, OBS, BOX).hidden == 0


def test_load_controller_refuses_tensors_that_do_not_fit(tmp_path):
    path = tmp_path / CONTROLLER_FILE
    actions = gym.spaces.Discrete(3)
    f32 = np.float32
    bad = {
        "obs width": ({"hidden.weight": np.ones((4, 6), f32), "hidden.bias": np.ones(4, f32)}, 4),
        "output reads obs": ({"hidden.weight": np.ones((4, 5), f32), "hidden.bias": np.ones(4, f32)}, 5),
        "no hidden bias": ({"hidden.weight": np.ones((4, 5), f32)}, 4),
        "hidden bias alone": ({"hidden.bias": np.ones(4, f32)}, 5),
    }  # fmt: skip
    for name, (hidden, width) in bad.items():
        save_file(hidden | {"weight": np.ones((3, width), f32), "bias": np.ones(3, f32)}, str(path))
        with pytest.raises(ValueError, match=r"do not fit observations \(5,\)"):
            load_controller(tmp_path, OBS, actions)
        assert name
    w1 = np.ones((4, 5), f32)
    w1[0, 0] = np.inf
    tensors = {"hidden.weight": w1, "hidden.bias": np.ones(4, f32)}
    save_file(tensors | {"weight": np.ones((3, 4), f32), "bias": np.ones(3, f32)}, str(path))
    with pytest.raises(ValueError, match="holds non-finite weights"):
        load_controller(tmp_path, OBS, actions)
    path.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="is not a readable controller file"):
        load_controller(tmp_path, OBS, actions)


@pytest.mark.parametrize("hidden", [0, 3])
@pytest.mark.parametrize("space", [gym.spaces.Discrete(4), BOX], ids=["discrete", "box"])
def test_a_batch_of_controllers_acts_as_each_one_alone(hidden, space):
    rng = np.random.default_rng(2)
    template = Controller(5, space, hidden=hidden)
    params = rng.normal(size=(6, template.n_params)).astype(np.float32)
    obs = rng.normal(size=(6, 5)).astype(np.float32)
    batched = ControllerBatch(template, params).predict(obs)
    alone = [
        Controller(5, space, p, hidden=hidden).predict(obs[k : k + 1])[0]
        for k, p in enumerate(params)
    ]
    np.testing.assert_array_equal(batched, np.concatenate(alone))  # bit for bit


def test_cmaes_settings_take_a_hidden_layer_and_batched_scoring():
    validate_hyperparams({"cmaes": {"hidden": 8, "batched": True, "batch_envs": 32}}, "hp.yaml")
    assert CMAESConfig.from_dict({"hidden": 8}).hidden == 8
    with pytest.raises(ValueError, match="hidden must be an integer >= 0"):
        CMAESConfig(hidden=-1)
    with pytest.raises(ValueError, match="batch_envs must be an integer >= 1"):
        CMAESConfig(batch_envs=0)
    with pytest.raises(ValueError, match="batched scores in this process"):
        CMAESConfig(batched=True, cluster="ray")


def _scoring_spec(world, hidden: int, rollouts: int) -> dict:
    cfg = _cfg(world)
    model = load_model(world[0], device="cpu")
    memory = load_memory(world[1], device="cpu")[0]

    def make_env(spec):
        return build_vec_env(cfg, int(spec.get("n_envs", 1)), cfg.seed, model, memory=memory)

    return {"obs_dim": 4 + 8, "rollouts": rollouts, "hidden": hidden, "make_env": make_env}


# candidate draws whose fitnesses differ (most random controllers push one way: 9.5 steps)
@pytest.mark.parametrize(("hidden", "draw"), [(0, 5), (3, 1)])
def test_batched_scoring_gives_the_per_env_fitnesses(world, hidden, draw):
    spec = _scoring_spec(world, hidden, rollouts=2)
    n = Controller(12, gym.spaces.Discrete(2), hidden=hidden).n_params
    candidates = list(np.random.default_rng(draw).normal(0, 3.0, (3, n)))
    per_env = CandidateScorer(spec, workers=1)
    one_wave = BatchedScorer(spec, popsize=3, max_envs=64)
    waves = BatchedScorer(spec, popsize=3, max_envs=4)  # 6 jobs: 2 waves of 3 envs
    assert (one_wave.n_envs, waves.n_envs) == (6, 3)
    try:
        fitness, steps = per_env.score(candidates, seed=7)
        assert len(set(fitness)) > 1  # the candidates act differently
        assert one_wave.score(candidates, seed=7) == (fitness, steps)
        assert waves.score(candidates, seed=7) == (fitness, steps)
    finally:
        for s in (per_env, one_wave, waves):
            s.close()


def test_a_hidden_layer_controller_trains_batched_and_loads_from_its_bundle(world, tmp_path):
    cfg = _cfg(world, hidden=3, batched=True, sigma0=0.5)
    r = train_agent(cfg, tmp_path / "a", progress=False)
    assert r.steps_per_second > 0
    a = load_bundle(tmp_path / "a", device="cpu").agent
    assert isinstance(a, Controller) and a.hidden == 3 and a.weight.shape == (2, 3)
    assert a.hidden_weight.shape == (3, 4 + 8) and np.abs(a.params()).sum() > 0
    returns = evaluate_bundle(tmp_path / "a", n_episodes=2, device="cpu").returns
    assert returns.shape == (2,) and np.all(returns >= 1)


def test_the_best_evaluation_is_kept_and_replays_its_score(world, tmp_path):
    cfg = _cfg(world, steps=240, sigma0=1.0)
    train_agent(cfg, tmp_path / "a", progress=False)
    info = json.loads((tmp_path / "a" / "config.json").read_text())
    rows = list(csv.DictReader((tmp_path / "a" / "eval.csv").open()))
    means = [float(r["mean_return"]) for r in rows]
    first_best = int(np.argmax(means))
    assert info["best_step"] == int(rows[first_best]["steps"])
    assert info["best_mean_return"] == pytest.approx(means[first_best])
    assert (tmp_path / "a" / BEST_CONTROLLER_FILE).is_file() and len(rows) >= 3
    best = load_bundle(tmp_path / "a", device="cpu", which="best").agent
    final = load_bundle(tmp_path / "a", device="cpu").agent
    assert isinstance(best, Controller) and best.params().shape == final.params().shape
    # the kept controller plays the evaluation tracks to the score of its row
    again = evaluate_bundle(
        tmp_path / "a", cfg.eval_episodes, cfg.eval_seed, device="cpu", which="best"
    )
    assert again.returns.mean() == pytest.approx(means[first_best])

    (tmp_path / "a" / BEST_CONTROLLER_FILE).unlink()  # a controller trained before it was kept
    with pytest.raises(FileNotFoundError, match="kept no best controller"):
        load_bundle(tmp_path / "a", device="cpu", which="best")


def test_a_shortlist_keeps_the_candidate_best_on_other_tracks(world, tmp_path):
    cfg = _cfg(world, steps=240, sigma0=1.0, shortlist=3, shortlist_episodes=3)
    train_agent(cfg, tmp_path / "a", progress=False)
    out = tmp_path / "a"
    info = json.loads((out / "config.json").read_text())
    rows = list(csv.DictReader((out / "eval.csv").open()))
    assert len(rows) >= 4
    kept = sorted(p.name for p in (out / "evaluated").iterdir())
    assert kept == sorted(evaluated_path(out, int(r["steps"])).name for r in rows)
    choice = list(csv.DictReader((out / CHOICE_CSV).open()))
    means = sorted((float(r["mean_return"]) for r in rows), reverse=True)
    # the three best evaluations (by their evaluation tracks), each on 3 other tracks
    assert [float(r["mean_return"]) for r in choice] == pytest.approx(means[:3])
    chosen = [r for r in choice if r["chosen"] == "True"]
    assert len(chosen) == 1
    scores = [float(r["choice_mean_return"]) for r in choice]
    assert float(chosen[0]["choice_mean_return"]) == max(scores)
    assert info["best_step"] == int(chosen[0]["steps"])
    # its time is an evaluation's: the training seconds end at the last evaluation's
    assert info["train_seconds"] == pytest.approx(float(rows[-1]["seconds"]), abs=0.05)
    assert info["choice"] == {
        "shortlist": 3,
        "episodes": 3,
        "mean_return": pytest.approx(max(scores)),
        "std_return": pytest.approx(float(chosen[0]["choice_std_return"])),
    }
    # the best controller is that candidate: it plays the choosing tracks to its score
    best = load_bundle(out, device="cpu", which="best").agent
    step_file = load_file(str(evaluated_path(out, int(chosen[0]["steps"]))))
    assert np.array_equal(best.params(), np.concatenate([step_file[k].ravel() for k in
                                                         best.shapes()]))  # fmt: skip
    again = evaluate_bundle(out, 3, cfg.eval_seed + CHOICE_SEED_OFFSET, device="cpu", which="best")
    assert again.returns.mean() == pytest.approx(max(scores))
    # --overwrite removes the shortlist's files with the rest of the bundle
    plain = replace(cfg, total_timesteps=60, algo_kwargs=cfg.algo_kwargs | {"shortlist": 0})
    train_agent(plain, out, progress=False, overwrite=True)
    assert not (out / CHOICE_CSV).exists()
    assert len(list((out / "evaluated").iterdir())) == 2  # the start's and step 60's


def test_cmaes_settings_refuse_a_negative_shortlist():
    with pytest.raises(ValueError, match="shortlist must be an integer >= 0"):
        CMAESConfig(shortlist=-1)
    with pytest.raises(ValueError, match="shortlist_episodes must be an integer >= 1"):
        CMAESConfig(shortlist_episodes=0)


def _dream_scoring_spec(world, rollouts):
    """Dreams of the tiny M whose done threshold ends some episodes before the time limit."""
    from stable_baselines3.common.vec_env import VecMonitor

    from envs.dream_env import DreamVecEnv

    memory = load_memory(world[1], device="cpu")[0]
    latents = world[1].parent / "latents"
    probe = DreamVecEnv(memory, latents, gym.spaces.Discrete(2), 8, done_threshold=1.0)
    probe.seed(0)
    probe.reset()
    p_done = [
        info["done_probability"]
        for t in range(25)
        for info in probe.step(np.arange(8) % 2 if t % 3 else np.zeros(8, int))[3]
    ]
    threshold = float(np.quantile(p_done, 0.9))

    def make_env(spec):
        n = int(spec.get("n_envs", 1))
        return VecMonitor(
            DreamVecEnv(
                memory, latents, gym.spaces.Discrete(2), n, done_threshold=threshold,
                max_episode_steps=25,
            )
        )  # fmt: skip

    return {"obs_dim": 4 + 8, "rollouts": rollouts, "hidden": 0, "make_env": make_env}


def test_batched_scoring_in_the_dream_gives_the_per_env_fitnesses(world):
    spec = _dream_scoring_spec(world, rollouts=2)
    n = Controller(12, gym.spaces.Discrete(2)).n_params
    candidates = list(np.random.default_rng(5).normal(0, 3.0, (4, n)))
    per_env = CandidateScorer(spec, workers=1)
    together = BatchedScorer(spec, popsize=4, max_envs=64)  # 8 rollouts, one M step each
    waves = BatchedScorer(spec, popsize=4, max_envs=3)  # 3 waves of at most 3 envs
    try:
        lengths = set()
        for c in candidates:  # the per-env scorer's episodes, one by one
            per_env.controller.set_params(c)
            for r in range(2):
                lengths.add(rollouts(per_env.controller, per_env.venv, 1, 7 + r)[1])
        assert min(lengths) < 25 and len(lengths) > 1  # M's done ends some rollouts early
        fitness, steps = per_env.score(candidates, seed=7)
        assert len(set(fitness)) > 1
        for scorer in (together, waves):  # every candidate meets the same dreams
            got, got_steps = scorer.score(candidates, seed=7)
            assert got_steps == steps
            assert got == pytest.approx(fitness, rel=1e-5, abs=1e-5)
        assert together.score(candidates, seed=8)[0] != pytest.approx(fitness)  # other dreams
    finally:
        for s in (per_env, together, waves):
            s.close()


def test_a_controller_trains_batched_in_the_dream(world, tmp_path):
    cfg = replace(_cfg(world, batched=True, rollouts=2, sigma0=0.5), dream=True)
    r = train_agent(cfg, tmp_path / "a", progress=False)
    assert r.steps_per_second > 0
    info = json.loads((tmp_path / "a" / "config.json").read_text())
    assert info["agent"]["dream"] and info["cmaes"]["batched"]
    returns = evaluate_bundle(tmp_path / "a", n_episodes=2, device="cpu").returns
    assert returns.shape == (2,) and np.all(returns >= 1)  # it acts in the real env
