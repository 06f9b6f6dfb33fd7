"""The command line is generated from the config dataclasses: one default, range and help
text per field, every field reachable, and the documented flag names kept."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, replace

import pytest

from agents.agent_config import AgentConfig
from agents.cli.main import build_parser, main
from agents.cli.options import add_config_options, config_values
from agents.comparison import CompareConfig
from agents.presets import FLAT_SETTINGS, PRESETS, build_preset
from envs.collector import CollectConfig
from worldvae.config_fields import option
from worldvae.envspec import EnvSpec

# Fields set through their own flags (--env with the env spec's flags, --backend, --shifted,
# --hyperparams, --finetune, --set): dictionaries or a spec, not one value.
DICT_FIELDS = {
    "env",
    "env_given",
    "obs_options",
    "algo_kwargs",
    "overrides",
    "shifted_env_kwargs",
    "vae_model",
    "memory_model",
}
# command -> (its dataclass, the defaults the command line gives instead of the dataclass's)
COMMANDS = {
    "collect": (CollectConfig, {}),
    "train-agent": (AgentConfig, {"n_envs": None, "obs": dataclasses.MISSING}),
    "compare": (CompareConfig, {}),
}


def _subparser(command: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]


def _actions(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _subparser(command)._actions}


def _default(f: dataclasses.Field) -> object:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_field_of_a_commands_config_is_a_flag_with_its_default_and_help(command):
    cls, cli_defaults = COMMANDS[command]
    actions = _actions(command)
    for f in dataclasses.fields(cls):
        if f.name in DICT_FIELDS:
            continue
        assert "help" in f.metadata, f"{cls.__name__}.{f.name} is not declared with option()"
        assert f.name in actions, f"{command}: no flag sets {cls.__name__}.{f.name}"
        action = actions[f.name]
        want = cli_defaults.get(f.name, _default(f))
        if want is dataclasses.MISSING:
            assert action.required, f"{command} {action.option_strings}"
        else:
            assert action.default == want, f"{command} {action.option_strings}"
        assert action.help is not None and action.help.startswith(f.metadata["help"])
        assert f.metadata["choices"] is None or tuple(action.choices or ()) in (
            tuple(f.metadata["choices"]),
            ("pixel", "latent", "encoder", "latent+h"),  # train-agent's arms that train alone
        )


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_text_comes_from_the_field_metadata(command, capsys):
    cls, _ = COMMANDS[command]
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            assert " ".join(f.metadata["help"].split()) in shown, f.name


def test_the_documented_flag_names_reach_their_fields():
    args = build_parser().parse_args(
        ["compare", "--env", "CartPole-v1", "--model", "m", "--data", "d", "--memory", "mm",
         "--steps", "100", "--seeds", "4", "--obs", "pixel,latent+h", "--final-episodes", "3",
         "--stochastic-eval", "--hyperparams", "h.yaml", "--out", "o"]
    )  # fmt: skip
    cfg = CompareConfig(**config_values(args, args.compare_fields))
    assert (cfg.env_id, cfg.model_dir, cfg.data_dir, cfg.memory_dir) == (
        "CartPole-v1",
        "m",
        "d",
        "mm",
    )
    assert cfg.total_timesteps == 100 and cfg.seeds == (0, 1, 2, 3)
    assert cfg.obs_kinds == ("pixel", "latent+h") and cfg.final_eval_episodes == 3
    assert cfg.deterministic_eval is False and cfg.hyperparams_file == "h.yaml"
    args = build_parser().parse_args(
        ["collect", "--env", "CartPole-v1", "--frames", "50", "--workers", "2", "--no-compress",
         "--no-record-state", "--out", "o"]
    )  # fmt: skip
    assert config_values(args, args.collect_fields) == {
        "n_episodes": None, "n_frames": 50, "n_workers": 2, "policy": "random", "seed": 0,
        "compress": False, "record_state": False,
    }  # fmt: skip


def test_fields_unreachable_before_reach_the_compare_config():
    args = build_parser().parse_args(
        ["compare", "--env", "CartPole-v1", "--eval-seed", "7", "--n-envs", "2",
         "--max-train-seconds", "30", "--subproc", "--no-probe", "--out", "o"]
    )  # fmt: skip
    cfg = CompareConfig(**config_values(args, args.compare_fields))
    assert cfg.eval_seed == 7 and cfg.n_envs == 2 and cfg.max_train_seconds == 30.0
    assert cfg.subprocess_envs is True and cfg.probe is False
    assert cfg.agent_config("pixel", 0).eval_seed == 7


def test_fields_unreachable_before_reach_the_agent_config(tmp_path, monkeypatch, capsys):
    import agents.agent_training

    trained = []

    def fake_train(cfg, out, **kwargs):
        trained.append(cfg)
        return argparse.Namespace(final_mean_return=0.0, steps_per_second=1.0, path=out)

    monkeypatch.setattr(agents.agent_training, "train_agent", fake_train)
    argv = ["train-agent", "--env", "CartPole-v1", "--obs", "pixel", "--eval-seed", "123",
            "--stochastic-eval", "--steps", "64", "--n-envs", "1", "--frame-size", "16",
            "--crop", "0,2,0,0", "--frame-skip", "3", "--max-episode-steps", "50",
            "--out", str(tmp_path / "a")]  # fmt: skip
    assert main(argv) == 0
    (cfg,) = trained
    assert cfg.eval_seed == 123 and cfg.deterministic_eval is False
    assert cfg.total_timesteps == 64 and cfg.n_envs == 1
    assert isinstance(cfg.env, EnvSpec) and cfg.env.backend != "auto"
    assert cfg.env.replace(backend="auto") == EnvSpec(
        "CartPole-v1", frame_size=16, crop=(0, 2, 0, 0), frame_skip=3, max_episode_steps=50
    )


ENV_SPEC_FLAGS = ("crop", "grayscale", "frame_skip", "max_episode_steps")


@pytest.mark.parametrize("command", ["collect", "train-agent"])
def test_the_frame_flags_are_the_env_spec_fields_and_default_to_not_given(command):
    actions = _actions(command)
    fields = {f.name: f for f in dataclasses.fields(EnvSpec)}
    for name in ENV_SPEC_FLAGS:
        action = actions[name]
        assert action.default is None, f"{command} {action.option_strings}"
        assert action.help is not None and action.help.startswith(fields[name].metadata["help"])
    assert actions["frame_size"].default is None
    assert actions["backend"].default == "auto"


def test_every_preset_setting_is_a_flag_and_beats_set(tmp_path, monkeypatch):
    import agents.pipeline

    calls = []
    monkeypatch.setattr(
        agents.pipeline, "run_pipeline", lambda preset, *a, **kw: calls.append(preset) or "r"
    )
    argv = ["pipeline", "--preset", "smoke", "--agent-steps", "100", "--vae-epochs", "1",
            "--seeds", "2", "--stochastic-eval", "--canonical-max-seconds", "9",
            "--crop", "0,2,0,0", "--frame-size", "32", "--set", "agent_steps=7",
            "--set", "compare.total_timesteps=8", "--set", "compare.workers=2",
            "--out", str(tmp_path / "p")]  # fmt: skip
    assert main(argv) == 0
    (preset,) = calls
    assert preset.compare.total_timesteps == 100 and preset.vae.epochs == 1
    assert preset.compare.seeds == (0, 1) and preset.compare.deterministic_eval is False
    assert preset.canonical.max_seconds == 9.0 and preset.compare.workers == 2
    assert preset.env.crop == (0, 2, 0, 0) and preset.env.frame_size == (32, 32)
    assert preset.vae.batch_size == PRESETS["smoke"].vae.batch_size  # the rest: the preset's


def test_every_pipeline_flag_sets_its_dotted_key_with_the_fields_range_and_help():
    actions = _actions("pipeline")
    flags = {flag for a in actions.values() for flag in a.option_strings}
    for flag, key in FLAT_SETTINGS.values():
        if flag is None:
            continue
        assert flag in flags and key in actions, flag
        action = actions[key]
        assert action.default is None, flag  # not given: the preset's
        section, name = key.split(".")
        cls = type(getattr(PRESETS["quick"], section))
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        assert action.help is not None and action.help.endswith(f"[{key}]")
        if "help" in f.metadata and flag != "--frame-size":
            assert action.help.startswith(f.metadata["help"]), flag
        assert f.metadata.get("choices") is None or tuple(action.choices or ()) == tuple(
            f.metadata["choices"]
        )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["pipeline", "--agent-steps", "0"], "--agent-steps"),
        (["pipeline", "--crop", "1,2,3"], "--crop"),
        (["collect", "--env", "E", "--episodes", "1", "--crop", "1,2,3", "--out", "o"], "--crop"),
        (
            ["collect", "--env", "E", "--episodes", "1", "--frame-skip", "0", "--out", "o"],
            "--frame-skip",
        ),
        (["train-agent", "--env", "E", "--obs", "pixel", "--frame-size", "4"], "--frame-size"),
        (["pipeline", "--vae-precision", "fp8"], "--vae-precision"),
        (["pipeline", "--frame-size", "4"], "--frame-size"),
        (["pipeline", "--set", "vae.epochs=0"], "vae.epochs must be >= 1, got 0"),
        (["compare", "--env", "CartPole-v1", "--eval-seed", "-1", "--out", "o"], "--eval-seed"),
        (["train-agent", "--env", "E", "--obs", "pixel", "--temperature", "0"], "--temperature"),
        (["collect", "--env", "E", "--out", "o"], "--episodes"),  # one budget is required
    ],
)
def test_ranges_of_generated_flags_are_checked_at_parse_time(argv, flag, capsys):
    assert main(argv) == 2
    assert flag in capsys.readouterr().err


def test_the_config_dataclasses_check_their_ranges():
    with pytest.raises(ValueError, match="total_timesteps must be >= 1"):
        replace(PRESETS["smoke"].compare, total_timesteps=0)
    with pytest.raises(ValueError, match=r"compare\.total_timesteps must be >= 1, got 0"):
        build_preset("smoke", {"agent_steps": 0})
    with pytest.raises(ValueError, match="seeds must hold 1 to 1000 values"):
        CompareConfig("CartPole-v1", seeds=())
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        CollectConfig(n_episodes=1, n_workers=0)
    with pytest.raises(ValueError, match="exactly one of n_episodes or n_frames"):
        CollectConfig()
    # the same quantity keeps one range: the pipeline's agents stage is CompareConfig's fields
    from agents.presets import CompareStage

    stage = {f.name: f.metadata for f in dataclasses.fields(CompareStage)}
    compare = {f.name: f.metadata for f in dataclasses.fields(CompareConfig)}
    for name, meta in stage.items():
        if "help" in meta:
            assert (meta["low"], meta["high"]) == (compare[name]["low"], compare[name]["high"])


@dataclass(frozen=True)
class _Example:
    name: str = option(help="required: no default")
    steps: int = option(10, "steps", 1, 100, flag="--n")
    fast: bool = option(False, "go fast")
    checks: bool = option(True, "run the checks")
    record: bool | None = option(None, "record (default: when known)")
    kinds: tuple[str, ...] = option(("a", "b"), "kinds")
    box: tuple[int, int] | None = option(None, "a box", 0, 9)
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds", 0, 99, max_len=50)


def test_add_config_options_builds_each_kind_of_field():
    p = argparse.ArgumentParser()
    names = add_config_options(p, _Example, counts=("seeds",))
    assert names == [f.name for f in dataclasses.fields(_Example)]
    args = p.parse_args(["--name", "x"])
    assert config_values(args, names) == {
        "name": "x", "steps": 10, "fast": False, "checks": True, "record": None,
        "kinds": ("a", "b"), "box": None, "seeds": (0, 1, 2),
    }  # fmt: skip
    args = p.parse_args(["--name", "x", "--n", "5", "--fast", "--no-checks", "--no-record",
                         "--kinds", "c", "--box", "1,2", "--seeds", "4"])  # fmt: skip
    assert config_values(args, names) == {
        "name": "x", "steps": 5, "fast": True, "checks": False, "record": False,
        "kinds": ("c",), "box": (1, 2), "seeds": (0, 1, 2, 3),
    }  # fmt: skip
    for bad in (["--n", "0"], ["--box", "1,2,3"], ["--box", "1,10"], ["--seeds", "51"], []):
        with pytest.raises(SystemExit):
            p.parse_args(bad if not bad else ["--name", "x", *bad])
