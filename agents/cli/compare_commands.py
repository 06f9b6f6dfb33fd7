"""``worldvae compare`` and ``worldvae pipeline``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

from agents.cli.common import add_backend_argument, add_cluster_arguments, parse_env_kwargs
from agents.cli.options import add_config_options, config_values
from agents.comparison import CompareConfig
from agents.pipeline import PRESETS, Preset
from envs.cluster import uses_ray
from worldvae.rundir import RunDirLock, check_ours

# What the two commands write in --out; a folder holding anything else is refused.
COMPARE_ENTRIES = ("runs", "controls", "results.csv", "results.json", "report")
PIPELINE_ENTRIES = ("data", "vae", "compare", "report", "canonical.json")


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="pixel versus latent agents on the same budget and seeds, with a report"
    )
    p.set_defaults(compare_fields=add_config_options(p, CompareConfig, counts=("seeds",)))
    p.add_argument(
        "--shifted", action="store_true", help="also evaluate zero-shot with domain_randomize=True"
    )
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
    from agents.comparison import run_comparison
    from agents.preflight import check_env_and_model
    from agents.report import write_report
    from worldvae.versions import machine_description

    on_ray = uses_ray(args.cluster)  # a bad value is refused before anything runs
    cfg = CompareConfig(
        **config_values(args, args.compare_fields),
        shifted_env_kwargs={"domain_randomize": True} if args.shifted else None,
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
    p.add_argument("--preset", default="quick", choices=list(PRESETS))
    settings = p.add_argument_group(
        "preset settings (every option field of Preset; each defaults to the preset's)"
    )
    names = [f.name for f in dataclasses.fields(Preset)]
    p.set_defaults(
        preset_fields=add_config_options(
            settings, Preset, counts=("seeds",), defaults=dict.fromkeys(names, None)
        )
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help='set any of the preset\'s settings, e.g. vae_model=\'{"kind": "vae"}\' '
        "(a JSON value; repeatable; the flags above win)",
    )
    p.add_argument("--out", type=Path, default=None, help="default runs/pipeline/PRESET__ENV")
    add_cluster_arguments(p, per_run=True)
    p.set_defaults(func=run_pipeline_command)


def run_pipeline_command(args: argparse.Namespace) -> int:
    from agents.pipeline import run_pipeline

    uses_ray(args.cluster)  # a bad value is refused before anything runs
    preset = args.preset
    given = {k: v for k, v in config_values(args, args.preset_fields).items() if v is not None}
    env = given.get("env_id") or PRESETS[preset].env_id
    out = args.out or Path("runs") / "pipeline" / f"{preset}__{env.replace('/', '_')}"
    check_ours(out, PIPELINE_ENTRIES, "pipeline")
    with RunDirLock(out, "pipeline"):
        report = run_pipeline(
            args.preset,
            out,
            command="worldvae " + shlex.join(sys.argv[1:]),
            settings=parse_env_kwargs(args.set) | given,
            cluster=args.cluster,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
        )
    print(f"done: {report}")
    return 0
