"""World Models' recipe: the preset, C trained after M by each method, every driver scored on
the canonical tracks and in M's dream, M's time budget."""

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from agents import evaluate_bundle
from agents.presets import CanonicalStage, ControllerStage, build_preset, parse_setting
from agents.world_models import score_world_models, train_controllers
from tests.test_world_agents import ENV
from worldvae.envspec import EnvSpec
from worldvae.memory.trainer import MemoryTrainConfig, train_memory
from worldvae.vae.trainer import is_finished

TINY = ControllerStage(
    kinds=("cmaes", "dream-cmaes"),
    max_train_seconds=None,
    total_timesteps=60,
    popsize=2,
    rollouts=1,
    workers=1,
    eval_freq=1_000,
    eval_episodes=1,
    eval_seed=500,
    dream_timesteps=60,
    dream_eval_freq=1_000,
    shortlist=2,
    shortlist_episodes=2,
)


def test_worldmodels_preset_trains_m_and_three_controllers_and_scores_on_gymnasium():
    p = build_preset("worldmodels")
    assert p.controllers.kinds == ("cmaes", "cmaes-hidden", "dream-cmaes")
    assert p.memory.max_seconds == 600.0 and p.memory.patience == 10
    assert p.canonical.backends == ("gymnasium",) and p.canonical.seed == 10_000
    assert p.canonical.sampled  # PPO drivers played by their mode and by sampled actions,
    assert p.canonical.choose_on == 20  # on 20 tracks of their own, and scored the better way
    # each PPO driver kept as the best of its 4 best evaluations on 20 more tracks
    assert p.compare.overrides == {"ppo": {"shortlist": 4, "shortlist_episodes": 20}}
    # the drivers are chosen on other tracks than the canonical ones
    assert p.compare.eval_seed != p.canonical.seed and p.controllers.eval_seed != p.canonical.seed
    assert set(build_preset("carracing").compare.obs_kinds) == {"pixel", "latent", "random", "pca"}


def test_controller_kinds_are_checked_by_name():
    key, value = parse_setting('controllers.kinds=["cmaes","dream-ppo"]')
    assert build_preset("smoke", {key: value}).controllers.kinds == ("cmaes", "dream-ppo")
    with pytest.raises(ValueError, match=r"controllers\.kinds must be one of cmaes, cmaes-hidden"):
        build_preset("smoke", {"controllers.kinds": ["cmaes", "linear"]})
    with pytest.raises(ValueError, match=r"canonical\.backends"):
        build_preset("smoke", {"canonical.backends": []})


def test_controllers_train_once_and_every_driver_is_scored_and_dreamed(world, tmp_path):
    vae, rnn = world
    env = EnvSpec("CartPole-v1", **ENV)
    bundles = train_controllers(TINY, env, vae, rnn, tmp_path / "controllers", progress=False)
    assert list(bundles) == ["cmaes", "dream-cmaes"]
    infos = {k: json.loads((b / "config.json").read_text()) for k, b in bundles.items()}
    assert [i["agent"]["dream"] for i in infos.values()] == [False, True]
    assert all(i["agent"]["eval_seed"] == 500 and i["status"] == "complete" for i in infos.values())
    for info in infos.values():  # each C kept the better of its two best on 2 other tracks
        assert info["choice"]["shortlist"] == 2 and info["choice"]["episodes"] == 2
    stamp = (bundles["cmaes"] / "config.json").stat().st_mtime_ns
    again = train_controllers(TINY, env, vae, rnn, tmp_path / "controllers", progress=False)
    assert again == bundles and (bundles["cmaes"] / "config.json").stat().st_mtime_ns == stamp

    # an unfinished C of other settings (a setting changed since it started) names its folder
    cut = dict(infos["cmaes"], status="training")
    cut["agent"] = dict(cut["agent"], total_timesteps=7)
    (bundles["cmaes"] / "config.json").write_text(json.dumps(cut))
    before = sorted(p.name for p in bundles["cmaes"].iterdir())
    with pytest.raises(
        ValueError, match=r"controller .*cmaes is an unfinished run of other settings.*remove"
    ):
        train_controllers(TINY, env, vae, rnn, tmp_path / "controllers", progress=False)
    assert sorted(p.name for p in bundles["cmaes"].iterdir()) == before  # nothing was changed
    (bundles["cmaes"] / "config.json").write_text(json.dumps(infos["cmaes"]))

    # C trained only in the dream acts in the real env through the same bundle format
    real = evaluate_bundle(bundles["dream-cmaes"], n_episodes=2, device="cpu")
    assert real.returns.shape == (2,) and np.all(real.returns >= 1)

    no_ppo = SimpleNamespace(runs=[], out_dir=tmp_path / "compare")
    settings = CanonicalStage(episodes=2, workers=1, seed=10_000, backends=("gymnasium",))
    section = score_world_models(no_ppo, bundles, tmp_path / "wm", settings, dream_episodes=2)
    drivers = json.loads((tmp_path / "wm" / "drivers.json").read_text())
    dreamed = json.loads((tmp_path / "wm" / "dream.json").read_text())
    assert set(drivers) == set(dreamed) == {"cmaes", "dream-cmaes"}
    scored = drivers["cmaes"]["scores"]["gymnasium"]
    assert len(scored["returns"]) == 2 and drivers["cmaes"]["seed"] == 10_000
    # each C is the mean candidate of its best evaluation on the held-out tracks
    for name, title in (("cmaes", "linear C, CMA-ES (real env)"), ("dream-cmaes", "")):
        best = infos[name]["best_step"]
        assert drivers[name]["which"] == "best" and drivers[name]["step"] == best
        row = f"`{name}` (best, step {best:,}) | {'0 | ' if not title else ''}"
        assert row in section and (not title or f"| V + M + C: {title} | {row}" in section)
    stamps = [(tmp_path / "wm" / f).stat().st_mtime_ns for f in ("drivers.json", "dream.json")]
    assert score_world_models(no_ppo, bundles, tmp_path / "wm", settings, 2) == section
    assert stamps == [
        (tmp_path / "wm" / f).stat().st_mtime_ns for f in ("drivers.json", "dream.json")
    ]


def _zh_comparison(vae, rnn, tmp_path, algo=None, **kw) -> SimpleNamespace:
    """A comparison of one tiny PPO run on [z, h] of CartPole (``tmp_path/compare/runs/zh``),
    ``algo`` added to its PPO hyperparameters."""
    from agents import resolve_config, train_agent

    cfg = resolve_config(
        "CartPole-v1", "latent+h", "ppo", str(vae), 128, seed=0,
        overrides={"n_steps": 64, "batch_size": 64, "n_epochs": 1} | (algo or {}), env_given=ENV,
        memory_dir=str(rnn), n_envs=2, eval_freq=64, eval_episodes=1, **kw,
    )  # fmt: skip
    train_agent(cfg, tmp_path / "compare" / "runs" / "zh", progress=False)
    return SimpleNamespace(runs=[{"run": "zh", "obs": "latent+h"}], out_dir=tmp_path / "compare")


def test_ppo_drivers_are_scored_by_their_mode_and_by_sampled_actions(world, tmp_path):
    vae, rnn = world
    result = _zh_comparison(vae, rnn, tmp_path)
    settings = CanonicalStage(
        episodes=3, workers=1, seed=10_000, backends=("gymnasium",), sampled=True
    )
    section = score_world_models(result, {}, tmp_path / "wm", settings, dream_episodes=2)
    drivers = json.loads((tmp_path / "wm" / "drivers.json").read_text())
    assert set(drivers) == {"ppo-latent+h", "ppo-latent+h-sampled"}
    assert drivers["ppo-latent+h-sampled"]["sampled"] and "sampled" not in drivers["ppo-latent+h"]
    for name, deterministic in (("ppo-latent+h", None), ("ppo-latent+h-sampled", False)):
        which = drivers[name]["which"]
        r = evaluate_bundle(
            tmp_path / "compare" / "runs" / "zh", 3, 10_000, device="cpu",
            deterministic=deterministic, backend="gymnasium", which=which,
        )  # fmt: skip
        assert drivers[name]["scores"]["gymnasium"]["returns"] == r.returns.tolist()
    assert "| V + M: PPO on [z, h], sampled actions | `zh` (" in section
    dreamed = json.loads((tmp_path / "wm" / "dream.json").read_text())
    assert set(dreamed) == {"ppo-latent+h", "ppo-latent+h-sampled"}


def test_a_ppo_driver_is_scored_only_the_way_it_played_better_on_other_tracks(world, tmp_path):
    from agents.world_models import CHOICE_SEED_OFFSET

    vae, rnn = world
    result = _zh_comparison(vae, rnn, tmp_path, eval_seed=300)
    settings = CanonicalStage(
        episodes=2, workers=1, seed=10_000, backends=("gymnasium",), sampled=True, choose_on=3
    )
    section = score_world_models(result, {}, tmp_path / "wm", settings, dream_episodes=1)
    chose = json.loads((tmp_path / "wm" / "actions.json").read_text())["ppo-latent+h"]
    assert chose["tracks"] == 3 and chose["seed"] == 300 + CHOICE_SEED_OFFSET
    means = {}
    for way, deterministic in (("mode", None), ("sampled", False)):
        r = evaluate_bundle(
            tmp_path / "compare" / "runs" / "zh", 3, 300 + CHOICE_SEED_OFFSET, device="cpu",
            deterministic=deterministic, which=chose["which"],
        )  # fmt: skip
        means[way] = float(r.returns.mean())
    assert means == {"mode": chose["mode"], "sampled": chose["sampled"]}
    drivers = json.loads((tmp_path / "wm" / "drivers.json").read_text())
    assert list(drivers) == ["ppo-latent+h"]  # one way scored, not both
    assert bool(drivers["ppo-latent+h"].get("sampled")) == (means["sampled"] > means["mode"])
    assert "Each PPO driver was scored one way only" in section
    assert f"{chose['mode']:.1f} by its mode, {chose['sampled']:.1f} sampled" in section
    # re-run: the choice and the scores are kept, nothing is played again
    stamps = [(tmp_path / "wm" / f).stat().st_mtime_ns for f in ("actions.json", "drivers.json")]
    assert score_world_models(result, {}, tmp_path / "wm", settings, 1) == section
    assert stamps == [
        (tmp_path / "wm" / f).stat().st_mtime_ns for f in ("actions.json", "drivers.json")
    ]
    # the choice flips either way: the driver is scored again the new way, never the kept one
    bundle = tmp_path / "compare" / "runs" / "zh"
    for winner in ("sampled", "mode", "sampled"):
        kept = json.loads((tmp_path / "wm" / "actions.json").read_text())
        loser = "mode" if winner == "sampled" else "sampled"
        kept["ppo-latent+h"] |= {winner: 10.0, loser: 0.0}
        (tmp_path / "wm" / "actions.json").write_text(json.dumps(kept))
        score_world_models(result, {}, tmp_path / "wm", settings, 1)
        entry = json.loads((tmp_path / "wm" / "drivers.json").read_text())["ppo-latent+h"]
        assert bool(entry.get("sampled")) == (winner == "sampled")
        r = evaluate_bundle(
            bundle, 2, 10_000, device="cpu", backend="gymnasium", which=chose["which"],
            deterministic=False if winner == "sampled" else None,
        )  # fmt: skip
        assert entry["scores"]["gymnasium"]["returns"] == r.returns.tolist()
    with pytest.raises(ValueError, match=r"set canonical\.sampled=true with it"):
        CanonicalStage(episodes=2, sampled=False, choose_on=3)


def test_a_shortlisted_ppo_driver_chooses_its_actions_on_the_tracks_after_its_shortlist(
    world, tmp_path
):
    from agents.world_models import CHOICE_SEED_OFFSET

    vae, rnn = world
    shortlist = {"shortlist": 2, "shortlist_episodes": 2}
    result = _zh_comparison(vae, rnn, tmp_path, algo=shortlist, eval_seed=300)
    bundle = tmp_path / "compare" / "runs" / "zh"
    info = json.loads((bundle / "config.json").read_text())
    assert info["choice"]["seed"] == 300 + CHOICE_SEED_OFFSET
    settings = CanonicalStage(
        episodes=1, workers=1, seed=10_000, backends=("gymnasium",), sampled=True, choose_on=3
    )
    score_world_models(result, {}, tmp_path / "wm", settings, dream_episodes=1)
    chose = json.loads((tmp_path / "wm" / "actions.json").read_text())["ppo-latent+h"]
    # not the 2 tracks its mode was chosen on: the 3 after them
    assert chose["seed"] == 300 + CHOICE_SEED_OFFSET + 2
    assert chose["step"] == info["best"]["steps"] == info["choice"]["steps"]
    r = evaluate_bundle(bundle, 3, chose["seed"], device="cpu", which="best")
    assert float(r.returns.mean()) == chose["mode"]


def test_second_round_is_driven_by_the_zh_policy_merged_and_trains_m_once(world, tmp_path):
    from agents.pipeline import PipelineRun, check_before_collecting, second_round_stage
    from worldvae.data import EpisodeDataset
    from worldvae.data.latents import LatentDataset

    vae, rnn = world
    data = rnn.parent / "data"  # the fixture's first round: 3 CartPole episodes
    result = _zh_comparison(vae, rnn, tmp_path)
    settings = {
        "env.env_id": "CartPole-v1", "env.frame_size": 16, "collect.n_workers": 1,
        "memory.model": {"hidden_size": 8, "n_gaussians": 2}, "memory.epochs": 1,
        "memory.batch_size": 4, "controllers.kinds": ["cmaes"],
        "controllers.second_round_frames": 40, "compare.obs_kinds": ["latent", "latent+h"],
    }  # fmt: skip
    preset = build_preset("smoke", settings)
    env = EnvSpec("CartPole-v1", frame_size=16)
    run = PipelineRun(preset, "smoke", tmp_path / "out", env, progress=False)
    m2 = second_round_stage(run, data, vae, result)

    assert m2 == tmp_path / "out" / "rnn12" and is_finished(m2)
    second = EpisodeDataset(tmp_path / "out" / "data2")
    assert second.n_frames() >= 40
    policy = second.manifest.policy
    assert policy["params"]["which"] == "best" and policy["params"]["path"].endswith("zh")
    assert second.manifest.seed == preset.collect.seed + 1  # other episodes than round one's
    first = EpisodeDataset(data)
    merged = EpisodeDataset(tmp_path / "out" / "data12")
    assert len(merged.episodes) == len(first.episodes) + len(second.episodes)
    latents = LatentDataset(tmp_path / "out" / "latents12")
    assert len(latents.episodes) == len(merged.episodes)
    assert (
        latents.manifest.model_sha256
        == json.loads((tmp_path / "compare" / "runs" / "zh" / "config.json").read_text())[
            "model_sha256"
        ]
    )  # the same V
    stamp = (m2 / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    assert second_round_stage(run, data, vae, result) == m2  # done: nothing is redone
    assert (m2 / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(EpisodeDataset(tmp_path / "out" / "data2").episodes) == len(second.episodes)

    # controllers trained with the first M are refused with the second, and the other way round
    tiny = replace(TINY, kinds=("cmaes",))
    train_controllers(tiny, env, vae, rnn, tmp_path / "out" / "controllers", progress=False)
    with pytest.raises(ValueError, match=r"trained with another M than .*rnn12; remove"):
        train_controllers(tiny, env, vae, m2, tmp_path / "out" / "controllers", progress=False)
    # a second round that grew after the merge is refused, naming what to remove
    grown = replace(preset, controllers=replace(preset.controllers, second_round_frames=200))
    with pytest.raises(ValueError, match=r"holds .* episodes, its sources .*remove data12"):
        second_round_stage(replace(run, preset=grown), data, vae, result)

    no_zh = build_preset("smoke", settings | {"compare.obs_kinds": ["latent"]})
    with pytest.raises(ValueError, match=r"add latent\+h to compare\.obs_kinds"):
        check_before_collecting(no_zh, env)


def test_the_dream_cs_other_ms_are_trained_once_and_a_c_of_another_dream_is_refused(
    world, tmp_path
):
    from agents.controller.kinds import CONTROLLER_KINDS
    from agents.pipeline import PipelineRun, dream_members_stage
    from agents.world_models import controller_title

    vae, rnn = world
    latents = rnn.parent / "latents"  # the fixture's M was trained on these
    settings = {
        "env.env_id": "CartPole-v1", "env.frame_size": 16,
        "memory.model": {"hidden_size": 8, "n_gaussians": 2}, "memory.epochs": 1,
        "memory.batch_size": 4, "controllers.kinds": ["cmaes", "dream-cmaes"],
        "controllers.dream_members": 2, "controllers.dream_penalty": 0.5,
    }  # fmt: skip
    preset = build_preset("smoke", settings)
    env = EnvSpec("CartPole-v1", frame_size=16)
    run = PipelineRun(preset, "smoke", tmp_path / "out", env, progress=False)
    members = dream_members_stage(run, latents)
    assert members == [tmp_path / "out" / "dream_memory" / k for k in ("1", "2")]
    seeds = [json.loads((m / "config.json").read_text())["train"]["seed"] for m in members]
    assert all(is_finished(m) for m in members) and seeds == [
        preset.memory.seed + k for k in (1, 2)
    ]
    stamp = (members[1] / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    assert dream_members_stage(run, latents) == members  # done: nothing is redone
    assert (members[1] / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns == stamp
    alone = build_preset("smoke", settings | {"controllers.dream_members": 0,
                                              "controllers.dream_penalty": 0})  # fmt: skip
    assert dream_members_stage(replace(run, preset=alone), latents) == []
    with pytest.raises(ValueError, match=r"dream_members trains more Ms for a dream-trained C"):
        build_preset("smoke", settings | {"controllers.kinds": ["cmaes"]})
    # members trained on other latents (a second round turned on after them) are refused
    with pytest.raises(ValueError, match=r"trained on .*latents, the controllers' M on .*12"):
        dream_members_stage(run, latents.parent / "latents12")

    stage = replace(TINY, dream_members=2, dream_penalty=0.5)
    out = tmp_path / "out" / "controllers"
    bundles = train_controllers(stage, env, vae, rnn, out, progress=False, dream_members=members)
    real, dream = (json.loads((bundles[k] / "config.json").read_text()) for k in TINY.kinds)
    assert real["agent"]["dream_ensemble"] == [] and real["agent"]["dream_penalty"] == 0.0
    assert dream["agent"]["dream_ensemble"] == [str(m.resolve()) for m in members]
    assert dream["agent"]["dream_penalty"] == 0.5 and len(dream["dream_ensemble_sha256"]) == 2
    titles = {k: controller_title(k, b) for k, b in bundles.items()}
    assert titles == {
        "cmaes": CONTROLLER_KINDS["cmaes"].title,
        "dream-cmaes": f"{CONTROLLER_KINDS['dream-cmaes'].title}, 3 Ms, disagreement penalty 0.5",
    }
    with pytest.raises(
        ValueError, match=r"dream-cmaes was trained in another dream \(the penalty\)"
    ):
        train_controllers(replace(stage, dream_penalty=2.0), env, vae, rnn, out, progress=False,
                          dream_members=members)  # fmt: skip
    with pytest.raises(ValueError, match=r"another dream \(its Ms\); remove"):
        train_controllers(stage, env, vae, rnn, out, progress=False, dream_members=members[::-1])
    with pytest.raises(ValueError, match=r"another dream \(tau\)"):
        train_controllers(replace(stage, temperature=1.3), env, vae, rnn, out, progress=False,
                          dream_members=members)  # fmt: skip
    with pytest.raises(ValueError, match=r"another dream \(its population or rollouts\)"):
        train_controllers(replace(stage, dream_popsize=4), env, vae, rnn, out, progress=False,
                          dream_members=members)  # fmt: skip
    with pytest.raises(ValueError, match=r"dream_members is 2 but 0 other Ms were given"):
        train_controllers(stage, env, vae, rnn, out, progress=False)
    with pytest.raises(ValueError, match=r"set controllers\.dream_members too"):
        build_preset("smoke", {"controllers.dream_penalty": 1.0})


def test_memory_time_budget_ends_the_run_after_a_validated_epoch(world, tmp_path):
    rnn = world[1]
    latents = rnn.parent / "latents"  # the fixture encodes its episodes there
    cfg = MemoryTrainConfig(
        model={"hidden_size": 8, "n_gaussians": 2}, epochs=50, batch_size=4, max_seconds=1e-6
    )
    r = train_memory(latents, tmp_path / "rnn", cfg, progress=False)
    assert r.epochs_done == 1 and r.stopped_early
    rows = (tmp_path / "rnn" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header and the one validated epoch
    assert (tmp_path / "rnn" / "checkpoints" / "best" / "model.safetensors").is_file()


def test_the_dream_ends_at_the_real_envs_time_limit_in_agent_steps():
    from agents.agent_config import resolve_config
    from agents.environments import dream_max_steps

    def limit(env_id, **given):
        return dream_max_steps(resolve_config(env_id, "pixel", env_given=given))

    assert limit("CarRacing-v3", frame_skip=2) == 500  # 1000 frames, each action twice
    assert limit("CarRacing-v3", frame_skip=3) == 334
    assert limit("CartPole-v1") == 500
    assert limit("CartPole-v1", max_episode_steps=99, frame_skip=2) == 50


def test_cmaes_stops_at_its_time_budget(world, tmp_path):
    from agents import train_agent
    from tests.test_world_agents import _cfg

    cfg = _cfg(world, steps=10**7, algo="cmaes", max_train_seconds=0.5)
    r = train_agent(cfg, tmp_path / "c", progress=False)
    info = json.loads((tmp_path / "c" / "config.json").read_text())
    assert info["status"] == "complete" and 0 < info["steps"] < 10**7
    assert r.train_seconds < 5


def test_the_dream_cs_cma_es_has_its_own_population_and_scores_batched(world):
    from agents.controller.kinds import CONTROLLER_KINDS
    from agents.world_models import controller_config

    vae, rnn = world
    stage = replace(TINY, dream_popsize=64, dream_rollouts=16, dream_batch_envs=256)
    env = EnvSpec("CartPole-v1", **ENV)
    real = controller_config(CONTROLLER_KINDS["cmaes"], stage, env, vae, rnn).algo_kwargs
    dream = controller_config(CONTROLLER_KINDS["dream-cmaes"], stage, env, vae, rnn).algo_kwargs
    assert (real["popsize"], real["rollouts"]) == (2, 1) and not real.get("batched")
    assert (dream["popsize"], dream["rollouts"]) == (64, 16)
    assert dream["batched"] and dream["batch_envs"] == 256  # one M step for every rollout
    # the dream C has its own budget in dream steps and evaluates on its own schedule
    grown = replace(stage, dream_timesteps=5_000, dream_eval_freq=700)
    cfgs = {k: controller_config(CONTROLLER_KINDS[k], grown, env, vae, rnn) for k in TINY.kinds}
    assert (cfgs["cmaes"].total_timesteps, cfgs["cmaes"].eval_freq) == (60, 1_000)
    assert (cfgs["dream-cmaes"].total_timesteps, cfgs["dream-cmaes"].eval_freq) == (5_000, 700)
    # unset, the dream takes the stage's population; on a Ray cluster its actors score
    plain = controller_config(CONTROLLER_KINDS["dream-cmaes"], TINY, env, vae, rnn, "ray")
    assert (plain.algo_kwargs["popsize"], plain.algo_kwargs["rollouts"]) == (2, 1)
    assert not plain.algo_kwargs.get("batched") and plain.algo_kwargs["cluster"] == "ray"
    with pytest.raises(ValueError, match="dream_rollouts"):
        build_preset("worldmodels", {"controllers.dream_rollouts": 0})
    with pytest.raises(ValueError, match=r"dream_popsize sets the CMA-ES of a dream-trained C"):
        build_preset(
            "worldmodels", {"controllers.kinds": ["cmaes"], "controllers.dream_popsize": 8}
        )


def test_a_cma_es_run_resumes_across_where_its_candidates_are_scored(world, tmp_path):
    from agents.agent_training import _same_run
    from agents.controller.kinds import CONTROLLER_KINDS
    from agents.world_models import controller_config

    vae, rnn = world
    env = EnvSpec("CartPole-v1", **ENV)
    kind = CONTROLLER_KINDS["dream-cmaes"]
    before = controller_config(kind, TINY, env, vae, rnn, "ray").to_dict()  # per-env scorers
    now = controller_config(kind, TINY, env, vae, rnn)  # batched, in this process
    assert before["algo_kwargs"] != now.algo_kwargs
    assert _same_run(before, now, tmp_path)  # an unfinished run of before resumes batched
    bigger = controller_config(kind, replace(TINY, dream_popsize=8), env, vae, rnn)
    assert not _same_run(before, bigger, tmp_path)  # another population is another run
    # the shortlist chooses once training ends: a run resumes with another
    listed = controller_config(kind, replace(TINY, shortlist=3), env, vae, rnn)
    assert _same_run(before, listed, tmp_path)


def test_the_recipe_s_cma_es_controllers_take_its_shortlist(world):
    from agents.controller.kinds import CONTROLLER_KINDS
    from agents.world_models import controller_config

    vae, rnn = world
    env = EnvSpec("CartPole-v1", **ENV)
    stage = replace(TINY, shortlist=3, shortlist_episodes=7)
    for name in ("cmaes", "dream-cmaes"):
        kwargs = controller_config(CONTROLLER_KINDS[name], stage, env, vae, rnn).algo_kwargs
        assert (kwargs["shortlist"], kwargs["shortlist_episodes"]) == (3, 7)
    assert build_preset("worldmodels").controllers.shortlist == 4
    none = replace(TINY, shortlist=0)
    plain = controller_config(CONTROLLER_KINDS["cmaes"], none, env, vae, rnn).algo_kwargs
    assert "shortlist" not in plain  # 0: the best choosing evaluation's
    with pytest.raises(ValueError, match="shortlist_episodes"):
        build_preset("worldmodels", {"controllers.shortlist_episodes": 0})
