"""Collecting with a trained agent (``--policy agent:RUN``): the actions are the agent's own,
made from the observations its training env made, in the env its config records."""

import json

import numpy as np
import pytest
import torch

from agents import load_bundle, resolve_config, train_agent
from agents.cli.main import main
from agents.collection import AgentPolicySpec
from envs.collector import collect
from worldvae.data import EpisodeDataset
from worldvae.data.episodes import read_episode
from worldvae.vae import Autoencoder, AutoencoderConfig, save_model

OPTIONS = {"frame_size": [40, 40], "max_episode_steps": 30}  # CnnPolicy needs >= 36 pixels
FAST = {"n_steps": 32, "batch_size": 32, "n_epochs": 1}


@pytest.fixture(scope="module")
def agents_dir(tmp_path_factory):
    """A latent agent (2 stacked codes, 1 past action) and a pixel agent (2 stacked frames)."""
    root = tmp_path_factory.mktemp("agents")
    torch.manual_seed(0)
    cfg = AutoencoderConfig(kind="vae", frame_shape=(40, 40, 3), latent_dim=4, channels=(8, 16))
    save_model(Autoencoder(cfg), root / "vae")
    hyperparams = root / "hp.yaml"
    hyperparams.write_text("latent: {frame_stack: 2, action_history: 1}\npixel: {frame_stack: 2}\n")
    for obs in ("latent", "pixel"):
        agent = resolve_config(
            "CartPole-v1", obs, "ppo", str(root / "vae") if obs == "latent" else None, 64,
            seed=1, hyperparams_file=hyperparams, overrides=FAST, n_envs=2, eval_freq=32,
            eval_episodes=1,
            env_given=OPTIONS,
        )  # fmt: skip
        assert agent.obs_options["frame_stack"] == 2
        train_agent(agent, root / obs, progress=False)
    return root


def _replayed_actions(agent_dir, seed: int, n: int) -> list[int]:
    """The first ``n`` actions the agent takes on its own env (as evaluated) from reset(seed)."""
    bundle = load_bundle(agent_dir, device="cpu")
    venv = bundle.make_env(1, 0)
    venv.seed(seed)
    obs, actions = venv.reset(), []
    for _ in range(n):
        action, _ = bundle.agent.predict(obs, deterministic=True)
        actions.append(int(action[0]))
        obs = venv.step(action)[0]
    venv.close()
    return actions


@pytest.mark.slow
@pytest.mark.parametrize("obs", ["latent", "pixel"])
def test_collected_actions_are_the_agents_own(agents_dir, tmp_path, obs):
    spec = AgentPolicySpec(str(agents_dir / obs), deterministic=True)
    collect(tmp_path / "d", spec.env_spec(), n_episodes=2, policy=spec, progress=False)
    data = EpisodeDataset(tmp_path / "d", val_fraction=0.0)
    assert data.manifest.env_spec == spec.env_spec()  # the env the agent was trained on
    assert spec.env_spec().frame_size == (40, 40) and spec.env_spec().max_episode_steps == 30
    params = data.manifest.policy["params"]
    assert data.manifest.policy["name"] == "agent" and len(params.pop("sha256")) == 64
    assert params == {"path": str(agents_dir / obs), "which": "final", "deterministic": True}
    for info in data.episodes:
        ep = read_episode(info.path)
        replay = _replayed_actions(agents_dir / obs, int(ep["seed"]), len(ep["actions"]))
        assert ep["actions"].reshape(-1).tolist() == replay


@pytest.mark.slow
def test_sampled_actions_depend_only_on_the_episode_seed(agents_dir, tmp_path):
    spec = AgentPolicySpec(str(agents_dir / "latent"))
    for out in ("a", "b"):
        collect(
            tmp_path / out, spec.env_spec(), n_episodes=3, policy=spec,
            n_workers=2 if out == "b" else 1, progress=False,
        )  # fmt: skip
    a, b = (EpisodeDataset(tmp_path / o, val_fraction=0.0) for o in ("a", "b"))
    for x, y in zip(a.episodes, b.episodes, strict=True):
        assert np.array_equal(read_episode(x.path)["actions"], read_episode(y.path)["actions"])


@pytest.mark.slow
def test_cli_collects_in_the_agents_env_and_refuses_conflicts(agents_dir, tmp_path, capsys):
    agent = agents_dir / "latent"
    args = ["collect", "--env", "CartPole-v1", "--episodes", "1", "--policy", f"agent:{agent}"]
    assert main([*args, "--out", str(tmp_path / "ok")]) == 0
    manifest = json.loads((tmp_path / "ok" / "manifest.json").read_text())
    assert (
        manifest["frame_shape"] == [40, 40, 3]
        and manifest["env_options"]["max_episode_steps"] == 30
    )

    assert main([*args, "--frame-size", "32", "--out", str(tmp_path / "size")]) == 1
    err = capsys.readouterr().err
    assert "frame_size: recorded [40, 40], given [32, 32]" in err
    assert not (tmp_path / "size").exists()

    assert main([*args[:2], "Acrobot-v1", *args[3:], "--out", str(tmp_path / "env")]) == 1
    assert "trained on CartPole-v1, not Acrobot-v1" in capsys.readouterr().err

    best = ["collect", "--env", "CartPole-v1", "--episodes", "1", "--policy", f"best-agent:{agent}"]
    assert main([*best, "--out", str(tmp_path / "best")]) == 0
    policy = json.loads((tmp_path / "best" / "manifest.json").read_text())["policy"]
    assert policy["params"]["which"] == "best"

    missing = ["collect", "--env", "CartPole-v1", "--episodes", "1", "--policy", "agent:nowhere"]
    assert main([*missing, "--out", str(tmp_path / "none")]) == 1
    assert "nowhere is not an agent directory" in capsys.readouterr().err


def test_a_state_agent_cannot_collect_frames(tmp_path):
    agent = resolve_config(
        "CartPole-v1",
        "state",
        "ppo",
        None,
        32,
        seed=0,
        overrides=FAST,
        n_envs=1,
        eval_freq=32,
        eval_episodes=1,
    )
    train_agent(agent, tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="acts on the env's state vector, not on frames"):
        AgentPolicySpec.parse(f"agent:{tmp_path / 's'}")


def test_sb3_policy_starts_its_frame_stack_as_the_agent_did(agents_dir):
    from envs import make_env
    from envs.policies import SB3Policy

    spec = AgentPolicySpec(str(agents_dir / "pixel"), deterministic=True)
    env = make_env(spec.env_spec())
    actors = [
        spec.build(env.action_space, env.observation_space),
        SB3Policy(str(agents_dir / "pixel" / "agent.zip"), "ppo", 2, True).bind(
            env.observation_space, env.action_space
        ),
    ]
    for actor in actors:
        actor.reset(5)
    obs, _ = env.reset(seed=5)
    for t in range(20):
        a, b = (int(actor.act(obs)) for actor in actors)
        assert a == b
        if t == 0:  # zero frames before the first, as VecFrameStack gave the agent in training
            assert not actors[1].frames[0].any() and np.array_equal(actors[1].frames[1], obs)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            break
