"""``worldvae train-agent`` and ``worldvae evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.agent_config import AgentConfig
from agents.cli.common import (
    add_backend_argument,
    add_frame_arguments,
    add_workers_flags,
    env_choices,
)
from agents.cli.options import add_config_options, bounded, config_values, field_help
from envs.registry import ENV_ID_HELP
from worldvae.workers import max_local_workers

# The arms an agent trains on alone; random and pca need the encoders a comparison derives.
STANDALONE_OBS = ("pixel", "latent", "encoder", "latent+h")


def add_train_agent_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-agent",
        help="train an SB3 agent on pixels, on VAE latents, or through the pretrained encoder",
        description="Hyperparameters come from agents/hyperparams (defaults, then the env's own "
        "file, then --hyperparams). The agent directory holds the SB3 zip, the resolved "
        "config, the model it was trained on, and periodic evaluations (eval.csv).",
    )
    p.add_argument(
        "--obs", required=True, choices=STANDALONE_OBS, help=field_help(AgentConfig, "obs")
    )
    frames = p.add_argument_group(
        "frames (with --model: taken from the model's env spec; given ones must agree with it)"
    )
    p.add_argument("--env", required=True, help=ENV_ID_HELP)
    add_frame_arguments(frames)
    agent = p.add_argument_group("agent (every option field of AgentConfig)")
    p.set_defaults(
        agent_fields=add_config_options(
            agent, AgentConfig, skip=("obs",), defaults={"n_envs": None}
        )
    )
    p.add_argument("--hyperparams", type=Path, default=None, help="a YAML file of overrides")
    p.add_argument("--finetune", action="store_true", help="encoder mode: train the encoder too")
    p.add_argument("--subproc", action="store_true", help="run envs in subprocesses")
    add_backend_argument(p)
    p.add_argument(
        "--out", type=Path, default=None, help="agent directory (default runs/agents/RUN_NAME)"
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="accept a model trained on another env",
    )
    p.set_defaults(func=run_train_agent)


def run_train_agent(args: argparse.Namespace) -> int:
    from agents.agent_config import memory_env_given, resolve_config
    from agents.agent_training import train_agent
    from agents.preflight import check_trained_on

    fields = config_values(args, args.agent_fields)
    if fields["n_envs"] is None:  # the hyperparameters' n_envs
        del fields["n_envs"]
    env_given = env_choices(args)
    env_id, memory = args.env, fields["memory_dir"]
    if memory:  # the frames M saw: its env spec
        env_given = memory_env_given(memory, env_id)
    for member in fields.get("dream_ensemble") or ():  # refuses an M of another env
        memory_env_given(member, env_id)
    cfg = resolve_config(
        env_id, obs=args.obs, hyperparams_file=args.hyperparams, env_given=env_given, **fields
    )
    if args.obs == "encoder" and args.finetune:
        cfg = type(cfg).from_dict(
            cfg.to_dict() | {"obs_options": cfg.obs_options | {"freeze": False}}
        )
    if cfg.model_dir:  # the rest is checked by train_agent before it writes anything
        check_trained_on(cfg.model_dir, cfg.env_id, args.allow_env_mismatch)
    out = args.out or Path("runs") / "agents" / cfg.run_name
    r = train_agent(cfg, out, overwrite=args.overwrite, subprocess_envs=args.subproc)
    print(
        f"trained {cfg.run_name}: final eval return {r.final_mean_return:.2f}, {r.steps_per_second:.0f} env-steps/s; agent: {r.path}"
    )
    return 0


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluation of an agent directory on seeded episodes")
    p.add_argument("agent", type=Path)
    p.add_argument("--episodes", type=bounded(int, 1, 100_000), default=10)
    p.add_argument(
        "--seed", type=int, default=None, help="first episode seed (default: the agent's eval seed)"
    )
    p.add_argument(
        "--video",
        type=video_path,
        default=None,
        metavar="PATH",
        help="film the first episode: PATH.mp4 or PATH.gif, the env as it renders (not the "
        "agent's smaller observation) with the return written on each frame",
    )
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--backend",
        default=None,
        choices=["gymnasium", "envpool"],
        help="play on this backend instead of the one the agent trained on (e.g. gymnasium's "
        "own CarRacing-v3 tracks, to compare with published scores)",
    )
    p.add_argument(
        "--workers",
        type=bounded(int, 1),
        default=1,
        help=f"processes sharing the episodes (1..{max_local_workers()} on this machine)",
    )
    add_workers_flags(p, ("--workers", "workers"))
    p.add_argument(
        "--which",
        default="final",
        choices=["final", "best"],
        help="the policy at the end of training, or the one of its best periodic evaluation "
        "(default final)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--stochastic",
        dest="deterministic",
        action="store_false",
        default=None,
        help="sample the policy's actions (seeded) instead of its mode (default: as the "
        "agent's periodic evaluations did, its mode unless trained with --stochastic-eval)",
    )
    mode.add_argument(
        "--deterministic",
        dest="deterministic",
        action="store_true",
        help="the policy's mode action",
    )
    p.set_defaults(func=run_evaluate)


def video_path(text: str) -> Path:
    """``--video``'s argument: a path ending in ``.mp4`` or ``.gif``."""
    from worldvae.video import check_video_path

    try:
        return check_video_path(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run_evaluate(args: argparse.Namespace) -> int:
    from agents.evaluation import evaluate_bundle

    r = evaluate_bundle(
        args.agent,
        args.episodes,
        args.seed,
        args.video,
        args.device,
        deterministic=args.deterministic,
        backend=args.backend,
        workers=args.workers,
        which=args.which,
    )
    where = f" on {args.backend}" if args.backend else ""
    if args.deterministic is False:
        where += ", sampled actions"
    print(f"{args.agent}: return {r.mean:.2f} +- {r.std:.2f} over {len(r.returns)} episodes{where}")
    if r.video:
        print(f"video: {r.video}")
    return 0
