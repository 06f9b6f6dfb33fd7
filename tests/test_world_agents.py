"""Agents on [z, h]: in the real env, inside the dream, and World Models' CMA-ES controller."""

import csv
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from agents import evaluate_bundle, load_bundle, resolve_config, train_agent
from agents.agent_training import bundle_env
from agents.controller.cmaes import LinearController

FAST = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}
ENV = {"frame_size": 16}  # the env spec's fields chosen explicitly


def _cfg(world, steps=64, algo="ppo", **kw):
    vae, rnn = world
    hp = {"env_given": ENV, "n_envs": 2, "eval_freq": 64, "eval_episodes": 2, "device": "cpu"}
    overrides = FAST if algo == "ppo" else {"popsize": 4, "rollouts": 1, "workers": 1}
    return resolve_config(
        "CartPole-v1",
        "latent+h",
        algo,
        str(vae),
        steps,
        seed=1,
        overrides=overrides,
        memory_dir=str(rnn),
        **(hp | kw),
    )


def test_latent_h_agent_trains_and_its_bundle_round_trips(world, tmp_path):
    r = train_agent(_cfg(world), tmp_path / "agent", progress=False)
    assert np.isfinite(r.final_mean_return)
    info = json.loads((tmp_path / "agent" / "config.json").read_text())
    assert info["memory_sha256"] and (tmp_path / "agent" / "memory" / "model.safetensors").is_file()
    bundle = load_bundle(tmp_path / "agent", device="cpu")
    venv = bundle.make_env(1, 0)
    assert venv.observation_space.shape == (4 + 8,)
    venv.close()
    r1 = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    r2 = evaluate_bundle(tmp_path / "agent", n_episodes=2, device="cpu")
    np.testing.assert_array_equal(r1.returns, r2.returns)
    (tmp_path / "agent" / "memory" / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match=r"memory model .* changed"):
        load_bundle(tmp_path / "agent", device="cpu")


def test_agent_trained_in_the_dream_is_scored_in_the_real_env(world, tmp_path):
    cfg = _cfg(world, dream=True, dream_temperature=1.2)
    assert cfg.run_name == "CartPole-v1__latent+h-dream__ppo__1"
    r = train_agent(cfg, tmp_path / "agent", progress=False)
    rows = (tmp_path / "agent" / "eval.csv").read_text().splitlines()
    assert rows[-1].startswith("64,") and r.final_mean_return >= 1.0  # CartPole pays 1 per step
    with pytest.raises(ValueError, match="needs obs='latent\\+h'"):
        resolve_config("CartPole-v1", "latent", "ppo", str(world[0]), 64, dream=True)


def test_cmaes_controller_trains_in_the_dream(world, tmp_path):
    r = train_agent(_cfg(world, steps=60, algo="cmaes", dream=True), tmp_path / "a", progress=False)
    a = load_bundle(tmp_path / "a", device="cpu").agent
    assert isinstance(a, LinearController) and a.weight.shape == (2, 4 + 8)
    assert r.steps_per_second > 0
    returns = evaluate_bundle(tmp_path / "a", n_episodes=2, device="cpu").returns
    assert returns.shape == (2,) and np.all(returns >= 1)


@pytest.mark.slow
def test_cmaes_population_in_processes_equals_in_process(world, tmp_path):
    one = train_agent(
        _cfg(world, steps=60, algo="cmaes", dream=True), tmp_path / "a", progress=False
    )
    cfg = _cfg(world, steps=60, algo="cmaes", dream=True)
    two = type(cfg).from_dict(cfg.to_dict() | {"algo_kwargs": cfg.algo_kwargs | {"workers": 2}})
    train_agent(two, tmp_path / "b", progress=False)
    a = load_bundle(tmp_path / "a", device="cpu").agent
    b = load_bundle(tmp_path / "b", device="cpu").agent
    assert isinstance(a, LinearController) and a.weight.shape == (2, 4 + 8)
    np.testing.assert_array_equal(a.params(), b.params())
    assert one.steps_per_second > 0
    r = evaluate_bundle(tmp_path / "a", n_episodes=2, device="cpu")
    assert r.returns.shape == (2,) and np.all(r.returns >= 1)


@pytest.mark.slow  # about 20 s: a local Ray and two small CMA-ES runs
def test_cmaes_population_on_ray_actors_equals_local_processes(world, tmp_path):
    ray = pytest.importorskip("ray")
    cfg = _cfg(world, steps=60, algo="cmaes", dream=True)
    local = type(cfg).from_dict(cfg.to_dict() | {"algo_kwargs": cfg.algo_kwargs | {"workers": 2}})
    on_ray = type(cfg).from_dict(
        cfg.to_dict() | {"algo_kwargs": cfg.algo_kwargs | {"workers": 2, "cluster": "ray"}}
    )
    train_agent(local, tmp_path / "local", progress=False)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        train_agent(on_ray, tmp_path / "ray", progress=False)
    finally:
        if started:
            ray.shutdown()
    a = load_bundle(tmp_path / "local", device="cpu").agent
    b = load_bundle(tmp_path / "ray", device="cpu").agent
    np.testing.assert_array_equal(a.params(), b.params())

    def returns(run):  # (steps, mean_return) of each evaluation; the seconds differ
        import csv

        with (tmp_path / run / "eval.csv").open() as f:
            return [(r["steps"], r["mean_return"]) for r in csv.DictReader(f)]

    assert returns("ray") == returns("local") and len(returns("ray")) >= 2


def test_cmaes_settings_are_checked():
    from agents.controller.cmaes import CMAESConfig

    with pytest.raises(ValueError, match="workers must be >= 1"):
        CMAESConfig(workers=0)
    with pytest.raises(ValueError, match="--cluster takes"):
        CMAESConfig(cluster="")


def test_compare_gives_the_latent_h_arm_its_memory(world):
    from agents.comparison import CompareConfig

    vae, rnn = world
    cfg = CompareConfig(env_id="CartPole-v1", model_dir=str(vae), memory_dir=str(rnn))
    arm = cfg.agent_config("latent+h", seed=0)
    assert arm.memory_dir == str(rnn) and arm.model_dir == str(vae)
    assert cfg.agent_config("latent", seed=0).memory_dir is None


class _Interrupt(Exception):
    pass


def test_cmaes_resumes_to_the_same_controller_as_an_uninterrupted_run(world, tmp_path):
    cfg = _cfg(world, steps=60, algo="cmaes", dream=True, checkpoint_freq=1, eval_freq=16)
    train_agent(cfg, tmp_path / "whole", progress=False)
    assert not (tmp_path / "whole" / "checkpoints").exists()  # removed once complete
    generations = []

    def stop_after_three(n: int) -> None:
        generations.append(n)
        if len(generations) == 3:
            raise _Interrupt  # as a kill right after the third generation's checkpoint

    with pytest.raises(_Interrupt):
        train_agent(cfg, tmp_path / "cut", progress=False, on_steps=stop_after_three)
    state = json.loads((tmp_path / "cut" / "checkpoints" / "last" / "state.json").read_text())
    assert len(state["fitness"]) == 3 and state["counters"]["num_timesteps"] == sum(generations)
    np.random.seed(123)  # whatever else drew from numpy's global stream does not matter
    np.random.rand(5)
    r = train_agent(cfg, tmp_path / "cut", progress=False)
    a = load_bundle(tmp_path / "whole", device="cpu").agent
    b = load_bundle(tmp_path / "cut", device="cpu").agent
    np.testing.assert_array_equal(a.params(), b.params())
    best_a, best_b = (
        load_bundle(tmp_path / d, device="cpu", which="best").agent for d in ("whole", "cut")
    )
    np.testing.assert_array_equal(best_a.params(), best_b.params())  # the same best kept
    whole = (tmp_path / "whole" / "eval.csv").read_text().splitlines()
    cut = (tmp_path / "cut" / "eval.csv").read_text().splitlines()
    strip = [",".join(x.split(",")[:1] + x.split(",")[3:]) for x in whole]  # drop the seconds
    assert strip == [",".join(x.split(",")[:1] + x.split(",")[3:]) for x in cut]
    assert r.final_mean_return == float(whole[-1].split(",")[3])


def test_a_run_resumed_from_before_candidates_were_kept_shortlists_what_it_has(world, tmp_path):
    """A run whose early evaluations kept no candidate (begun before they were kept) still
    shortlists on resume: the rows that kept one, and the best row from the best file."""
    cfg = _cfg(world, steps=60, algo="cmaes", dream=True, checkpoint_freq=1, eval_freq=16)
    cfg = replace(cfg, algo_kwargs=cfg.algo_kwargs | {"shortlist": 3, "shortlist_episodes": 2})
    generations = []

    def stop_after_three(n: int) -> None:
        generations.append(n)
        if len(generations) == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_agent(cfg, tmp_path / "cut", progress=False, on_steps=stop_after_three)
    state = json.loads((tmp_path / "cut" / "checkpoints" / "last" / "state.json").read_text())
    early = {int(r["steps"]) for r in state["rows"]}
    best_early = max(state["rows"], key=lambda r: r["mean_return"])
    shutil.rmtree(tmp_path / "cut" / "evaluated")  # as a run begun before they were kept
    train_agent(cfg, tmp_path / "cut", progress=False)
    info = json.loads((tmp_path / "cut" / "config.json").read_text())
    rows = list(csv.DictReader((tmp_path / "cut" / "eval.csv").open()))
    choice = list(csv.DictReader((tmp_path / "cut" / "choice.csv").open()))
    listed = {int(r["steps"]) for r in choice}
    later = [r for r in rows if int(r["steps"]) not in early]
    assert later and info["choice"]["shortlist"] == 3 and len(choice) == min(3, len(rows))
    for r in choice:  # a candidate of an early row only for the best row
        assert int(r["steps"]) not in early or float(r["mean_return"]) == max(
            float(x["mean_return"]) for x in rows
        )
    best = max(rows, key=lambda r: float(r["mean_return"]))
    if int(best["steps"]) in early:
        assert int(best_early["steps"]) in listed
    assert info["best_step"] in listed


def test_dream_ensemble_is_copied_into_the_bundle_and_a_copy_of_m_dreams_what_m_does(
    world, tmp_path
):
    """A C trained in a dream of M and a copy of M (``--dream-memory``) learns what the same
    run with M alone learns: the ensemble reaches the CMA-ES scorers through the bundle."""
    _, rnn = world
    alone = _cfg(world, steps=60, algo="cmaes", dream=True)
    pair = _cfg(world, steps=60, algo="cmaes", dream=True, dream_ensemble=(str(rnn),))
    train_agent(alone, tmp_path / "alone", progress=False)
    train_agent(pair, tmp_path / "pair", progress=False)
    info = json.loads((tmp_path / "pair" / "config.json").read_text())
    assert info["agent"]["dream_ensemble"] == [str(rnn.resolve())]
    assert len(info["dream_ensemble_sha256"]) == 1
    assert (tmp_path / "pair" / "dream_memory" / "1" / "model.safetensors").is_file()
    a = load_bundle(tmp_path / "alone", device="cpu").agent
    b = load_bundle(tmp_path / "pair", device="cpu").agent
    np.testing.assert_allclose(a.params(), b.params(), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match=r"--dream-memory .* needs --dream"):
        _cfg(world, steps=60, algo="cmaes", dream_ensemble=(str(rnn),))
    with pytest.raises(ValueError, match="--dream-penalty weighs the disagreement"):
        _cfg(world, steps=60, algo="cmaes", dream=True, dream_penalty=1.0)
    (tmp_path / "pair" / "dream_memory" / "1" / "model.safetensors").write_bytes(b"changed")
    spec = {"cfg": pair.to_dict(), "bundle": str(tmp_path / "pair"), "dream": True}
    with pytest.raises(ValueError, match=r"dream ensemble member .* changed"):
        bundle_env(spec)
