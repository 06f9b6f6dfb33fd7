import json
import re
from dataclasses import replace

import cv2
import pytest

from agents.cli.main import main
from agents.comparison import CompareConfig
from agents.pipeline import run_pipeline
from agents.presets import FLAT_SETTINGS, PRESETS, build_preset, dotted_key, parse_setting
from envs.collector import CollectConfig
from worldvae.memory.trainer import MemoryTrainConfig
from worldvae.vae.trainer import TrainConfig


@pytest.mark.slow
def test_smoke_pipeline_produces_every_artifact_and_resumes(tmp_path):
    out = tmp_path / "smoke"
    report = run_pipeline("smoke", out, progress=False)
    files = {p.name for p in (out / "report").iterdir()}
    assert {
        "report.md",
        "curves.png",
        "results.csv",
        "results.json",
        "vae_reconstructions.png",
        "vae_traversals.png",
        "best_agent.gif",
    } <= files
    assert cv2.imread(str(out / "report" / "curves.png")) is not None
    text = report.read_text()
    assert (
        "| pixel |" in text and "| latent |" in text and "worldvae pipeline --preset smoke" in text
    )
    results = json.loads((out / "report" / "results.json").read_text())
    assert len(results["runs"]) == 4 and set(results["summary"]) == {"pixel", "latent"}
    agent_zips = sorted((out / "compare" / "runs").glob("*/agent.zip"))
    stamps = [p.stat().st_mtime_ns for p in agent_zips]
    vae_stamp = (out / "vae" / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    episodes = sorted(p.name for p in (out / "data" / "episodes").iterdir())

    run_pipeline("smoke", out, progress=False)  # everything is already there: nothing is redone
    assert [p.stat().st_mtime_ns for p in agent_zips] == stamps
    assert (
        out / "vae" / "checkpoints" / "best" / "model.safetensors"
    ).stat().st_mtime_ns == vae_stamp
    assert sorted(p.name for p in (out / "data" / "episodes").iterdir()) == episodes
    timings = json.loads((out / "report" / "timings.json").read_text())
    assert len(timings) == 2 and timings[1]["train_vae"] < 1.0
    assert "compare / train" in timings[0] and timings[1]["compare / train"] < 1.0
    # the report's stage times add the invocations: the first run's training is not lost
    text = report.read_text()
    assert "Summed over the 2 invocations" in text
    total = round(timings[0]["train_vae"] + timings[1]["train_vae"], 1)
    assert f"- train_vae: {total:,.0f} s" in text


@pytest.mark.slow
def test_a_latent_h_arm_gets_its_memory_model_trained_by_the_pipeline(tmp_path):
    out = tmp_path / "world"
    settings = {"compare.obs_kinds": ["latent", "latent+h"], "compare.seeds": [0]}
    settings |= {"memory.epochs": 1, "memory.seq_len": 8}
    settings |= {"memory.model": {"hidden_size": 16, "n_gaussians": 2}}
    report = run_pipeline("smoke", out, settings=settings, progress=False)
    assert (out / "rnn" / "checkpoints" / "best" / "model.safetensors").is_file()
    assert sorted((out / "latents" / "episodes").iterdir())
    results = json.loads((out / "report" / "results.json").read_text())
    assert set(results["summary"]) == {"latent", "latent+h"}
    info = json.loads(next((out / "compare" / "runs").glob("*latent+h*/config.json")).read_text())
    assert info["memory_sha256"]
    assert "| latent+h |" in report.read_text()
    assert "](m_dream.gif)" in report.read_text() and (out / "report" / "m_dream.gif").is_file()
    from agents.pipeline import PIPELINE_ENTRIES
    from worldvae.rundir import foreign_entries

    assert foreign_entries(out, PIPELINE_ENTRIES) == []  # the command may run there again
    m_stamp = (out / "rnn" / "checkpoints" / "best" / "model.safetensors").stat().st_mtime_ns
    run_pipeline("smoke", out, settings=settings, progress=False)  # M is not trained again
    assert (
        out / "rnn" / "checkpoints" / "best" / "model.safetensors"
    ).stat().st_mtime_ns == m_stamp


# The presets' values when every setting was one flat field of the preset.
FLAT_VALUES = {
    "smoke": {
        "env_id": "MiniGrid-Empty-5x5-v0", "frame_size": 40, "collect_frames": 1200,
        "collect_policy": "random", "max_episode_steps": None, "crop": None, "frame_skip": 1,
        "vae_model": {"kind": "beta-vae", "latent_dim": 8, "channels": [16, 32, 64]},
        "vae_epochs": 2, "vae_batch_size": 64, "agent_steps": 512, "seeds": [0, 1],
        "n_envs": 2, "eval_freq": 256, "eval_episodes": 2, "final_eval_episodes": 3,
        "overrides": {"ppo": {"n_steps": 128, "batch_size": 64, "n_epochs": 2}},
        "shifted_env_kwargs": None, "workers": 1, "subprocess_envs": False, "algo": "ppo",
        "obs_kinds": ["pixel", "latent"], "deterministic_eval": True, "backend": "auto",
        "vae_precision": "auto", "vae_max_seconds": None, "max_train_seconds": None,
        "memory_model": {}, "memory_epochs": 10, "memory_batch_size": 32, "memory_seq_len": 32,
        "canonical_episodes": 0, "canonical_max_seconds": None, "eval_workers": 2,
    },
    "quick": {
        "env_id": "MiniGrid-Empty-5x5-v0", "frame_size": 40, "collect_frames": 20000,
        "collect_policy": "random", "max_episode_steps": None, "crop": None, "frame_skip": 1,
        "vae_model": {"kind": "beta-vae", "latent_dim": 16, "channels": [16, 32, 64]},
        "vae_epochs": 10, "vae_batch_size": 128, "agent_steps": 30000, "seeds": [0, 1, 2, 3, 4],
        "n_envs": None, "eval_freq": 2500, "eval_episodes": 1, "final_eval_episodes": 3,
        "overrides": {"ppo": {"n_envs": 4, "n_steps": 128, "batch_size": 128, "n_epochs": 4,
                              "learning_rate": 0.00025}},
        "shifted_env_kwargs": None, "workers": 3, "subprocess_envs": False, "algo": "ppo",
        "obs_kinds": ["pixel", "latent", "random", "pca", "state"], "deterministic_eval": True,
        "backend": "auto", "vae_precision": "auto", "vae_max_seconds": None,
        "max_train_seconds": None, "memory_model": {}, "memory_epochs": 10,
        "memory_batch_size": 32, "memory_seq_len": 32, "canonical_episodes": 0,
        "canonical_max_seconds": None, "eval_workers": 2,
    },
    "carracing": {
        "env_id": "CarRacing-v3", "frame_size": 64, "collect_frames": 20000,
        "collect_policy": "brownian", "max_episode_steps": None, "crop": [0, 12, 0, 0],
        "frame_skip": 2, "vae_model": {"kind": "beta-vae", "latent_dim": 32}, "vae_epochs": 5,
        "vae_batch_size": 128, "agent_steps": 2000000, "seeds": [0, 1, 2, 3, 4], "n_envs": 8,
        "eval_freq": 10000, "eval_episodes": 2, "final_eval_episodes": 5, "overrides": {},
        "shifted_env_kwargs": None, "workers": 2, "subprocess_envs": False, "algo": "ppo",
        "obs_kinds": ["pixel", "latent", "random", "pca"], "deterministic_eval": True,
        "backend": "envpool",
        "vae_precision": "auto", "vae_max_seconds": 420.0, "max_train_seconds": 300.0,
        "memory_model": {}, "memory_epochs": 10, "memory_batch_size": 32, "memory_seq_len": 32,
        "canonical_episodes": 100, "canonical_max_seconds": 900.0, "eval_workers": 2,
    },
    "full": {
        "env_id": "CarRacing-v3", "frame_size": 64, "collect_frames": 10000000,
        "collect_policy": "brownian", "max_episode_steps": None, "crop": [0, 12, 0, 0],
        "frame_skip": 2, "vae_model": {"kind": "beta-vae", "latent_dim": 32}, "vae_epochs": 10,
        "vae_batch_size": 1024, "agent_steps": 1000000, "seeds": [0, 1, 2, 3, 4],
        "n_envs": None, "eval_freq": 50000, "eval_episodes": 10, "final_eval_episodes": 50,
        "overrides": {}, "shifted_env_kwargs": {"domain_randomize": True}, "workers": 1,
        "subprocess_envs": True, "algo": "ppo", "obs_kinds": ["pixel", "latent", "random", "pca"],
        "deterministic_eval": True, "backend": "auto", "vae_precision": "auto",
        "vae_max_seconds": None, "max_train_seconds": None, "memory_model": {},
        "memory_epochs": 10, "memory_batch_size": 32, "memory_seq_len": 32,
        "canonical_episodes": 0, "canonical_max_seconds": None, "eval_workers": 2,
    },
}  # fmt: skip


def _setting(preset, key):
    value = preset
    for part in dotted_key(key).split("."):
        value = getattr(value, part)
    return value


def _json(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", sorted(FLAT_VALUES))
def test_presets_build_the_stage_configs_they_built_as_flat_settings(name):
    preset, flat = PRESETS[name], FLAT_VALUES[name]
    assert set(flat) == set(FLAT_SETTINGS)
    for key, value in flat.items():
        got = _setting(preset, key)
        if key == "frame_size":
            value = [value, value]
        assert _json(got) == value, key
    # every other setting is its stage config's default, as the pipeline used to build them
    c = preset.collect
    assert c == CollectConfig(n_frames=c.n_frames, n_workers=2, policy=c.policy)
    v = preset.vae
    assert v == TrainConfig(model=v.model, epochs=v.epochs, batch_size=v.batch_size,
                            precision=v.precision, max_seconds=v.max_seconds)  # fmt: skip
    m = preset.memory
    assert m == MemoryTrainConfig(model=m.model, epochs=m.epochs, batch_size=m.batch_size,
                                  seq_len=m.seq_len)  # fmt: skip
    for algo in ("ppo", "a2c"):  # the overrides of the algorithm run, none for another
        cfg = replace(preset.compare, algo=algo).config("E", "V", "D", 1, {}, None)
        assert cfg.overrides == flat["overrides"].get(algo, {})
        for field in ("threshold", "hyperparams_file", "probe"):
            assert getattr(cfg, field) == getattr(CompareConfig("E"), field)
        # CarRacing's drivers are chosen on other tracks than the canonical ones (10000 on)
        default_seed = CompareConfig("E").eval_seed
        assert cfg.eval_seed == (20_000 if name == "carracing" else default_seed)


def test_the_agents_stage_is_every_compare_config_field_but_those_filled_at_run_time():
    from agents.presets import RUN_TIME_FIELDS, CompareStage

    stage = {f.name for f in CompareStage.__dataclass_fields__.values()}
    assert stage | set(RUN_TIME_FIELDS) == set(CompareConfig.__dataclass_fields__)
    assert not stage & set(RUN_TIME_FIELDS)


def test_dotted_settings_set_fields_and_merge_into_dictionaries():
    items = ["vae.epochs=3", "env.frame_size=32", "compare.seeds=[0,1,2]",
             "vae.model.latent_dim=4", 'vae.model={"kind": "vae"}', "collect.policy=brownian",
             "compare.overrides.ppo.n_steps=64", "env.env_kwargs.max_steps=9"]  # fmt: skip
    preset = build_preset("smoke", [parse_setting(item) for item in items])
    smoke = PRESETS["smoke"]
    assert preset.vae.epochs == 3 and preset.env.frame_size == (32, 32)
    assert preset.compare.seeds == (0, 1, 2) and preset.collect.policy == "brownian"
    # merged: the preset's other model keys stay
    assert preset.vae.model == {"kind": "vae", "latent_dim": 4, "channels": [16, 32, 64]}
    assert preset.compare.overrides == {"ppo": {**smoke.compare.overrides["ppo"], "n_steps": 64}}
    assert preset.env.env_kwargs == {"max_steps": 9}
    assert PRESETS["smoke"] == smoke  # the preset itself is unchanged
    # null removes a key from a dictionary (JSON merge patch); a section takes an object
    preset = build_preset("smoke", [("vae.model.channels", None), ("vae", {"batch_size": 32})])
    assert preset.vae.model == {"kind": "beta-vae", "latent_dim": 8}
    assert preset.vae.batch_size == 32
    # the flat names of the flags are the dotted keys
    flat = build_preset("smoke", {"agent_steps": 64, "vae_model": {"latent_dim": 4}})
    dotted = build_preset("smoke", {"compare.total_timesteps": 64, "vae.model.latent_dim": 4})
    assert flat == dotted
    # exactly one collection budget: both changed together
    episodes = build_preset("smoke", {"collect.n_frames": None, "collect.n_episodes": 5})
    assert (episodes.collect.n_frames, episodes.collect.n_episodes) == (None, 5)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("vae.epoch=3", r"unknown vae setting 'vae.epoch'; did you mean vae.epochs\? \(known: "
         r"model, epochs, batch_size"),
        ("vea.epochs=3", r"unknown preset setting 'vea.epochs'; did you mean vae.epochs\?"),
        ("vae.model.latnt_dim=3", r"unknown vae.model key .*did you mean vae.model.latent_dim"),
        ("vae.epochs=3x", r"--set vae.epochs: '3x' is not a JSON value"),
        ("vae.model={kind: vae}", r"--set vae.model: .* is not a JSON value"),
        ('vae.epochs="3"', r'vae.epochs must be an integer, got "3"'),
        ("compare.seeds=3", r"compare.seeds must be a list \(each an integer\), got 3"),
        ("vae.epochs=0", r"vae.epochs must be >= 1, got 0"),
        ("vae.model.latent_dim=0", r"vae.model.latent_dim must be >= 1, got 0"),
        ("env.frame_size=4", r"env.frame_size must be >= 8"),
        ("env.backend=envpol", r"env.backend: must be one of auto, envpool, gymnasium"),
        ("compare.algo=ppo2", r"compare.algo must be one of ppo"),
        ("collect.n_episodes=5", r"preset section collect: give exactly one of n_episodes"),
        ("vae.epochs.x=1", r"vae.epochs is not a dictionary"),
    ],
)  # fmt: skip
def test_a_bad_setting_is_refused_naming_it_before_anything_is_written(
    item, message, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(["pipeline", "--preset", "smoke", "--set", item, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("worldvae: error: pipeline: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_canonical_score_plays_both_backends_in_chunks_and_reuses_its_scores(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import numpy as np

    import agents.canonical
    from agents.presets import CanonicalStage

    runs = tmp_path / "compare" / "runs"
    for run, best in (("latent_0", 5.0), ("latent_1", 9.0)):
        (runs / run).mkdir(parents=True)
        info = {"best": {"mean_return": best, "steps": 300}, "final_mean_return": 1.0, "steps": 512}
        (runs / run / "config.json").write_text(json.dumps(info))
        (runs / run / "best_agent.zip").write_text("")
    calls = []

    def fake_evaluate(bundle, n, seed, **kw):
        calls.append((bundle.name, n, seed, kw["backend"], kw["which"]))
        return SimpleNamespace(returns=np.arange(seed, seed + n, dtype=float))

    monkeypatch.setattr(agents.canonical, "evaluate_bundle", fake_evaluate)
    result = SimpleNamespace(
        out_dir=tmp_path / "compare",
        runs=[{"obs": "latent", "run": "latent_0"}, {"obs": "latent", "run": "latent_1"},
              {"obs": "pixel", "run": "pixel_0"}],
        config=SimpleNamespace(eval_seed=100),
    )  # fmt: skip
    path = tmp_path / "canonical.json"
    section = agents.canonical.canonical_score(
        result, path, CanonicalStage(episodes=25, workers=2, seed=100)
    )
    assert [c[1:3] for c in calls if c[3] == "envpool"] == [(20, 100), (5, 120)]  # 10 a process
    assert {c[0] for c in calls} == {"latent_1"} and {c[4] for c in calls} == {"best"}
    saved = json.loads(path.read_text())
    assert saved["scores"]["gymnasium"]["returns"] == [float(s) for s in range(100, 125)]
    assert "`latent_1`, the policy of its best evaluation during training (step 300)" in section
    assert "| gymnasium CarRacing-v3 (the published scores' env) | 25 | 112.0 +- 7.2 |" in section
    calls.clear()  # scored already: nothing is played again, the same section comes back
    again = agents.canonical.canonical_score(
        result, path, CanonicalStage(episodes=25, workers=2, seed=100)
    )
    assert not calls and again == section
    (runs / "latent_1" / "best_agent.zip").write_text("trained again")  # same name and step
    agents.canonical.canonical_score(result, path, CanonicalStage(episodes=25, workers=2, seed=100))
    assert {c[0] for c in calls} == {"latent_1"}, "a re-trained policy must be played again"
