"""``worldvae compare`` and ``worldvae pipeline``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from agents.config import SB3_ALGORITHMS
from envs.cluster import uses_ray
from worldvae.cli.common import add_backend_argument, add_cluster_arguments, parse_env_kwargs
from worldvae.cli.options import bounded
from worldvae.rundir import RunDirLock, check_ours

# What the two commands write in --out; a folder holding anything else is refused.
COMPARE_ENTRIES = ("runs", "controls", "results.csv", "results.json", "report")
PIPELINE_ENTRIES = ("data", "vae", "compare", "report", "canonical.json")


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="pixel versus latent agents on the same budget and seeds, with a report"
    )
    p.add_argument("--env", required=True)
    p.add_argument("--model", default=None, help="VAE model or run directory (arms with a model)")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the VAE's dataset, for the pca arm and the probes (default: read from the VAE run)",
    )
    p.add_argument("--memory", default=None, help="M's run directory (for the latent+h arm)")
    p.add_argument("--algo", default="ppo", choices=SB3_ALGORITHMS)
    p.add_argument("--steps", type=bounded(int, 1, 10**11), default=50_000)
    p.add_argument(
        "--seeds", type=bounded(int, 1, 1000), default=3, help="number of seeds (>= 3 recommended)"
    )
    p.add_argument(
        "--obs",
        default="pixel,latent",
        help="comma list of arms: pixel, latent, encoder, random (untrained encoder), pca, state, latent+h (needs --memory)",
    )
    p.add_argument(
        "--stochastic-eval", action="store_true", help="evaluate the sampled policy, not its mode"
    )
    p.add_argument("--eval-freq", type=bounded(int, 1, 10**11), default=5_000)
    p.add_argument("--eval-episodes", type=bounded(int, 1, 100_000), default=5)
    p.add_argument("--final-episodes", type=bounded(int, 1, 100_000), default=10)
    p.add_argument(
        "--vae-frames",
        type=bounded(int, 0, 10**12),
        default=0,
        help="frames spent on the VAE's data",
    )
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument(
        "--shifted", action="store_true", help="also evaluate zero-shot with domain_randomize=True"
    )
    p.add_argument(
        "--workers",
        type=bounded(int, 1, 256),
        default=1,
        help="runs trained in parallel processes",
    )
    p.add_argument("--hyperparams", type=Path, default=None)
    add_backend_argument(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--allow-env-mismatch",
        action="store_true",
        help="accept a model trained on another env",
    )
    add_cluster_arguments(p, per_run=True)
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from agents.arms import get_arm
    from agents.comparison import CompareConfig, run_comparison
    from agents.preflight import check_env_and_model
    from agents.report import write_report
    from worldvae.versions import machine_description

    on_ray = uses_ray(args.cluster)  # a bad value is refused before anything runs
    cfg = CompareConfig(
        env_id=args.env,
        model_dir=args.model,
        data_dir=str(args.data) if args.data else None,
        deterministic_eval=not args.stochastic_eval,
        memory_dir=args.memory,
        algo=args.algo,
        obs_kinds=tuple(args.obs.split(",")),
        seeds=tuple(range(args.seeds)),
        total_timesteps=args.steps,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        final_eval_episodes=args.final_episodes,
        vae_frames=args.vae_frames,
        threshold=args.threshold,
        shifted_env_kwargs={"domain_randomize": True} if args.shifted else None,
        workers=args.workers,
        hyperparams_file=str(args.hyperparams) if args.hyperparams else None,
        env_options={"backend": args.backend},
    )
    # before the first agent trains, not after the pixel ones
    needs_model = any(get_arm(obs).model == "vae" for obs in cfg.obs_kinds)
    check_env_and_model(
        cfg.env_id,
        cfg.agent_config("pixel", cfg.seeds[0]).env_options,
        cfg.model_dir if needs_model else None,
        args.allow_env_mismatch,
    )
    check_ours(args.out, COMPARE_ENTRIES, "compare")
    with RunDirLock(args.out, "compare"):
        if on_ray:
            from agents.ray_runs import run_comparison_on_ray

            result = run_comparison_on_ray(
                cfg, args.out, args.cluster, args.cpus_per_run, args.gpus_per_run
            )
        else:
            result = run_comparison(cfg, args.out)
        report = write_report(
            result,
            args.out / "report",
            "worldvae " + shlex.join(sys.argv[1:]),
            machine=machine_description(),
        )
    print(f"report: {report}")
    return 0


def add_pipeline_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="the main job: collect -> train VAE -> compare -> report",
        description="Presets: smoke (a minute or two), quick (default; under 30 minutes on 2 "
        "CPU cores), carracing (CarRacing-v3 on envpool, within the hour on 2 CPU cores), "
        "full (GPU-machine scale on CarRacing-v3). Re-running resumes every stage.",
    )
    p.add_argument("--preset", default="quick", choices=["smoke", "quick", "carracing", "full"])
    p.add_argument("--env", default=None, help="run the preset on another env")
    p.add_argument(
        "--algo",
        default=None,
        choices=SB3_ALGORITHMS,
        help="override the preset's",
    )
    p.add_argument("--obs", default=None, help="comma list of arms (default: the preset's)")
    p.add_argument(
        "--seeds",
        type=bounded(int, 1, 1000),
        default=None,
        help="number of seeds (default: the preset's)",
    )
    p.add_argument(
        "--backend",
        default=None,
        choices=["auto", "gymnasium", "envpool"],
        help="env backend (default: the preset's)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one of the preset's settings, e.g. max_train_seconds=240 (repeatable)",
    )
    p.add_argument("--out", type=Path, default=None, help="default runs/pipeline/PRESET__ENV")
    add_cluster_arguments(p, per_run=True)
    p.set_defaults(func=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    from agents.pipeline import PRESETS, run_pipeline

    uses_ray(args.cluster)  # a bad value is refused before anything runs
    preset = args.preset
    env = args.env or PRESETS[preset].env_id
    out = args.out or Path("runs") / "pipeline" / f"{preset}__{env.replace('/', '_')}"
    check_ours(out, PIPELINE_ENTRIES, "pipeline")
    with RunDirLock(out, "pipeline"):
        report = run_pipeline(
            args.preset,
            out,
            args.env,
            command="worldvae " + shlex.join(sys.argv[1:]),
            algo=args.algo,
            obs_kinds=tuple(args.obs.split(",")) if args.obs else None,
            seeds=tuple(range(args.seeds)) if args.seeds else None,
            backend=args.backend,
            settings=parse_env_kwargs(args.set),
            cluster=args.cluster,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
        )
    print(f"done: {report}")
    return 0
