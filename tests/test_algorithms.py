"""The registry of training algorithms: what ``train-agent`` accepts, how each one trains and
loads, and the errors of algorithms on envs or observations they cannot take."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from agents import load_bundle, resolve_config, train_agent
from agents.agent_config import ALGOS, AgentConfig, algo_class
from agents.algorithms import (
    ALGORITHMS,
    Algorithm,
    get_algorithm,
    sb3_algorithm,
    sb3_algorithm_names,
)
from agents.bundle import policy_name

ROOT = Path(__file__).resolve().parents[1]


def _state_cfg(algo: str, steps: int = 64, **kw):
    """A cheap run: CartPole's state vector, one env, one short evaluation."""
    fields = {"n_envs": 1, "eval_freq": steps, "eval_episodes": 1, "device": "cpu"}
    return resolve_config("CartPole-v1", "state", algo, None, steps, seed=0, **(fields | kw))


def test_train_agent_accepts_exactly_the_registry_names():
    from agents.cli.main import build_parser

    assert tuple(ALGORITHMS) == ALGOS
    train = build_parser()._subparsers._group_actions[0].choices["train-agent"]  # type: ignore[union-attr]
    (algo,) = [a for a in train._actions if a.dest == "algo"]
    assert tuple(algo.choices) == tuple(ALGORITHMS)
    for name in ALGORITHMS:
        assert get_algorithm(name).name == name
    with pytest.raises(ValueError, match="unknown algorithm 'trpo'; choose one of"):
        get_algorithm("trpo")
    with pytest.raises(ValueError, match="unknown algorithm 'trpo'"):
        AgentConfig.from_dict(_state_cfg("ppo").to_dict() | {"algo": "trpo"})


def test_sb3_entries_name_their_class_and_hook_entries_their_hooks():
    import stable_baselines3 as sb3

    from agents.controller.cmaes import load_controller

    assert sb3_algorithm_names() == ("ppo", "a2c", "dqn", "sac", "recurrentppo")
    for name, cls in (("ppo", sb3.PPO), ("a2c", sb3.A2C), ("dqn", sb3.DQN), ("sac", sb3.SAC)):
        assert sb3_algorithm(name) is cls is algo_class(name)
        assert ALGORITHMS[name].is_sb3 and ALGORITHMS[name].train is None
    cmaes = ALGORITHMS["cmaes"]
    assert not cmaes.is_sb3
    assert callable(cmaes.train) and cmaes.load is load_controller
    with pytest.raises(ValueError, match="cmaes is not an SB3 algorithm"):
        cmaes.sb3_class()
    with pytest.raises(ValueError, match="needs either an SB3 class or a train and a load hook"):
        Algorithm("half", "half", train=cmaes.train)


def test_an_optional_sb3_package_that_is_missing_names_its_install():
    missing = Algorithm("fake", "Fake", "no_such_sb3_package", "Fake", extra="contrib")
    with pytest.raises(
        ImportError,
        match=r"--algo fake needs no-such-sb3-package: pip install 'worldvae\[contrib\]'",
    ):
        missing.sb3_class()


def test_a_recurrent_algorithm_gets_lstm_policies():
    assert ALGORITHMS["recurrentppo"].policy("CnnPolicy") == "CnnLstmPolicy"
    assert ALGORITHMS["ppo"].policy("CnnPolicy") == "CnnPolicy"
    assert policy_name(_state_cfg("ppo")) == "MlpPolicy"
    assert policy_name(_state_cfg("recurrentppo")) == "MlpLstmPolicy"


def test_an_sb3_entry_trains_a_few_steps_and_its_bundle_loads(tmp_path):
    cfg = _state_cfg("ppo", overrides={"n_steps": 32, "batch_size": 32, "n_epochs": 1})
    result = train_agent(cfg, tmp_path / "agent", progress=False)
    assert np.isfinite(result.final_mean_return)
    info = json.loads((tmp_path / "agent" / "config.json").read_text())
    assert info["status"] == "complete" and info["steps"] == 64
    assert (tmp_path / "agent" / "agent.zip").is_file()
    assert (tmp_path / "agent" / "best_agent.zip").is_file()
    bundle = load_bundle(tmp_path / "agent", device="cpu", which="best")
    assert type(bundle.agent) is sb3_algorithm("ppo")


def test_cmaes_on_other_observations_than_z_h_is_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"CMA-ES controller\) trains on --obs latent\+h only, got --obs state"
    ):
        train_agent(_state_cfg("cmaes"), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()  # refused before anything was written


def test_sac_on_discrete_actions_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match=r"--algo sac acts in Box .* Discrete\(2\) actions"):
        train_agent(_state_cfg("sac"), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_controller_and_the_registry_import_nothing_that_builds_envs_or_trains():
    """``agent_config`` imports the registry, the registry the controller: neither imports back."""
    above = {
        "agents.agent_config",
        "agents.environments",
        "agents.agent_training",
        "agents.bundle",
        "agents.algorithms",
    }
    for module in ("agents/controller/cmaes.py", "agents/algorithms.py"):
        assert not _imported_modules(ROOT / module) & above, module
