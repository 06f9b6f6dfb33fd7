"""``worldvae tune``: search an agent's hyperparameters with Optuna (see :mod:`agents.tuning`)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from agents.agent_config import AgentConfig
from agents.cli.agent_commands import STANDALONE_OBS
from agents.cli.common import (
    add_backend_argument,
    add_cluster_arguments,
    add_frame_arguments,
    add_workers_flags,
    env_choices,
)
from agents.cli.options import add_config_options, config_values, field_help
from agents.tuning import SEARCH_SPACES, TuneConfig, TuneResult
from envs.registry import ENV_ID_HELP


def add_tune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search an agent's hyperparameters with Optuna (pruning, a wall-clock budget, a "
        "study that a re-run continues)",
        description="Each trial trains the agent of --env/--obs/--model for --steps env steps "
        "with hyperparameters sampled by TPE from a small table per algorithm (the others from "
        "agents/hyperparams and --hyperparams), evaluates it every --eval-freq steps on fixed "
        "seeds, and is pruned when an evaluation falls below the median of the earlier trials'. "
        "OUT holds study.db (SQLite: re-running the same command continues the study), "
        "best.yaml (for train-agent --hyperparams), trials.csv, history.png and tb/. Needs the "
        "[tune] extra. See docs/tuning.md.",
    )
    p.add_argument(
        "--obs", required=True, choices=STANDALONE_OBS, help=field_help(AgentConfig, "obs")
    )
    p.add_argument("--env", required=True, help=ENV_ID_HELP)
    p.add_argument(
        "--algo",
        default="ppo",
        choices=tuple(SEARCH_SPACES),
        help="training algorithm whose hyperparameters are searched (default ppo)",
    )
    frames = p.add_argument_group(
        "frames (with --model: taken from the model's env spec; given ones must agree with it)"
    )
    add_frame_arguments(frames)
    agent = p.add_argument_group("each trial's agent (AgentConfig's fields; --steps per trial)")
    p.set_defaults(
        agent_fields=add_config_options(
            agent,
            AgentConfig,
            skip=("obs", "algo", "checkpoint_freq"),
            defaults={"n_envs": None},
        )
    )
    p.add_argument(
        "--hyperparams",
        type=Path,
        default=None,
        help="a YAML file of overrides: the values trials keep, the base of those they search",
    )
    study = p.add_argument_group("the study (TuneConfig's fields)")
    p.set_defaults(tune_fields=add_config_options(study, TuneConfig))
    add_workers_flags(p, ("--workers", "workers"))
    add_cluster_arguments(p, per_run=True)
    add_backend_argument(p)
    p.add_argument(
        "--out", type=Path, default=None, help="study folder (default runs/tune/ENV__OBS__ALGO)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the study in --out with a new one"
    )
    p.add_argument(
        "--allow-env-mismatch", action="store_true", help="accept a model trained on another env"
    )
    p.set_defaults(func=run_tune)


def tune_agent_config(args: argparse.Namespace) -> AgentConfig:
    """Every trial's agent, as ``train-agent`` would resolve it from the same flags."""
    from agents.agent_config import memory_env_given, resolve_config
    from agents.preflight import check_trained_on

    fields = config_values(args, args.agent_fields)
    if fields["n_envs"] is None:  # the hyperparameters' n_envs
        del fields["n_envs"]
    env_given = env_choices(args)
    if fields["memory_dir"]:  # the frames M saw: its env spec
        env_given = memory_env_given(fields["memory_dir"], args.env)
    cfg = resolve_config(
        args.env,
        obs=args.obs,
        algo=args.algo,
        hyperparams_file=args.hyperparams,
        env_given=env_given,
        **fields,
    )
    if cfg.model_dir:
        check_trained_on(cfg.model_dir, cfg.env_id, args.allow_env_mismatch)
    return cfg


def run_tune(args: argparse.Namespace) -> int:
    from agents.tuning import tune

    cfg = tune_agent_config(args)
    settings = TuneConfig(
        **config_values(args, args.tune_fields),
        cluster=args.cluster,
        cpus_per_run=args.cpus_per_run,
        gpus_per_run=args.gpus_per_run,
    )
    out = (
        args.out or Path("runs") / "tune" / f"{cfg.env_id.replace('/', '_')}__{cfg.obs}__{cfg.algo}"
    )
    command = "worldvae " + shlex.join(sys.argv[1:])
    result = tune(cfg, settings, out, overwrite=args.overwrite, command=command)
    print(summary(result, cfg))
    return 0


def summary(result: TuneResult, cfg: AgentConfig) -> str:
    """What a run of ``tune`` prints: the trials, the best one and how to train with it."""
    lines = [
        f"tune: {result.trials} trials ({result.complete} complete, {result.pruned} pruned, "
        f"{result.failed} failed) in {result.seconds:.0f} s; study: {result.out}"
    ]
    if result.best_yaml is None:
        lines.append("no trial is complete yet: re-run the same command to go on")
        return "\n".join(lines)
    lines.append(
        f"best: trial {result.best_number}, mean return {result.best_value:.2f}; "
        f"hyperparameters: {result.best_yaml}"
    )
    model = f" --model {cfg.model_dir}" if cfg.model_dir else ""
    memory = f" --memory {cfg.memory_dir}" if cfg.memory_dir else ""
    lines.append(
        f"train with: worldvae train-agent --env {cfg.env_id} --obs {cfg.obs} --algo {cfg.algo}"
        f"{model}{memory} --hyperparams {result.best_yaml}"
    )
    return "\n".join(lines)
