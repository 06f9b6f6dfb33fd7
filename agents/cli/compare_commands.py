"""``worldvae compare`` and ``worldvae pipeline``."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import typing
from pathlib import Path
from typing import Any

from agents.cli.common import (
    add_backend_argument,
    add_cluster_arguments,
    add_workers_flags,
    check_local_workers_flag,
)
from agents.cli.errors import UsageError
from agents.cli.options import add_config_options, argument_spec, bounded, config_values
from agents.comparison import CompareConfig
from agents.presets import FLAT_SETTINGS, PRESETS, Preset, build_preset, default_out, parse_setting
from envs.backends import BACKENDS
from envs.cluster import uses_ray
from envs.registry import ENV_ID_HELP
from worldvae.envspec import MAX_FRAME_SIZE, MIN_FRAME_SIZE
from worldvae.rundir import RunDirLock, check_ours

# What the two commands write in --out; a folder holding anything else is refused.
COMPARE_ENTRIES = ("runs", "controls", "results.csv", "results.json", "report")
# How a comparison gets frames large enough for the pixel arm's CNN: they are V's.
COMPARE_FRAMES_FIX = (
    "the pixel arm plays the frames V was trained on: collect and train V with --frame-size "
    "36 or more, or leave pixel out of --obs"
)
# The pipeline's flags whose command-line form is not their field's: the env id (a field
# without option metadata), a square frame side, the backends by name (--seeds is a count).
PIPELINE_FLAG_FORMS: dict[str, dict[str, Any]] = {
    "--env": {"metavar": "ENV", "help": ENV_ID_HELP},
    "--frame-size": {
        "type": bounded(int, MIN_FRAME_SIZE, MAX_FRAME_SIZE),
        "metavar": "FRAME_SIZE",
        "help": "square frame side",
    },
    "--backend": {"choices": BACKENDS},
}


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
    add_workers_flags(p, ("--workers", "workers"))
    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from agents.arms import check_arms, get_arm
    from agents.preflight import check_arms_fit, check_env_and_model
    from agents.ray_runs import run_comparison_on_cluster
    from agents.report import write_report
    from worldvae.versions import machine_description

    uses_ray(args.cluster)  # a bad value is refused before anything runs
    cfg = CompareConfig(
        **config_values(args, args.compare_fields),
        shifted_env_kwargs={"domain_randomize": True} if args.shifted else None,
        env_given={"backend": args.backend},
    )
    # before the first agent trains, not after the pixel ones
    check_arms(cfg.obs_kinds, cfg.env_id, cfg.model_dir, cfg.resolved_data_dir())
    needs_model = any(get_arm(obs).model == "vae" for obs in cfg.obs_kinds)
    pixel = cfg.agent_config("pixel", cfg.seeds[0])
    check_env_and_model(pixel.env, cfg.model_dir if needs_model else None, args.allow_env_mismatch)
    check_arms_fit(pixel, cfg.obs_kinds, cfg.shifted_env_kwargs, COMPARE_FRAMES_FIX)
    check_ours(args.out, COMPARE_ENTRIES, "compare")
    with RunDirLock(args.out, "compare"):
        result = run_comparison_on_cluster(
            cfg, args.out, args.cluster, args.cpus_per_run, args.gpus_per_run
        )
        report = write_report(
            result,
            args.out / "report",
            "worldvae " + shlex.join(sys.argv[1:]),
            machine=machine_description(),
            video=True,
        )
    print(f"report: {report}")
    return 0


def add_pipeline_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pipeline",
        help="the main job: collect -> train VAE -> compare -> report",
        description="Presets: smoke (a minute or two), quick (default; under 30 minutes on 2 "
        "CPU cores), carracing (CarRacing-v3 on envpool, within the hour on 2 CPU cores), "
        "worldmodels (World Models' V, M and C on CarRacing-v3, within two hours on 2 CPU "
        "cores; --cluster scores CMA-ES's population on Ray), full (GPU-machine scale on "
        "CarRacing-v3). Re-running resumes every stage.",
    )
    p.add_argument("--preset", default="quick", choices=list(PRESETS))
    add_pipeline_flags(
        p.add_argument_group(
            "preset settings (each flag sets the dotted key in brackets; each defaults to the "
            "preset's)"
        )
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="set any setting of the preset by its dotted key SECTION.FIELD (SECTION: env, "
        "collect, vae, memory, compare, canonical, controllers), e.g. vae.epochs=3, compare.seeds=[0,1] or "
        "vae.model.latent_dim=8. VALUE is JSON (a bare word for text); an object is merged "
        'into a dictionary setting, so vae.model=\'{"kind": "vae"}\' keeps the preset\'s '
        "other model keys (repeatable; the flags above win)",
    )
    p.add_argument("--out", type=Path, default=None, help="default runs/pipeline/PRESET__ENV")
    add_cluster_arguments(p, per_run=True)
    p.set_defaults(func=run_pipeline_command)


def add_pipeline_flags(group: Any) -> None:
    """A flag for each entry of :data:`agents.presets.FLAT_SETTINGS` with one: its field's
    type, range and help, its value landing in ``args.<dotted key>`` (None: not given)."""
    for flag, key in FLAT_SETTINGS.values():
        if flag is None:  # a dictionary: --set only
            continue
        section, name = key.split(".")
        cls = typing.get_type_hints(Preset)[section]
        f = {f.name: f for f in dataclasses.fields(cls)}[name]
        if "help" in f.metadata:
            hint = typing.get_type_hints(cls)[name]
            spec = argument_spec(cls, f, hint, None, flag == "--seeds")
        else:  # a field without option metadata (the env id): its form is below
            spec = {"default": None}
        spec.update(PIPELINE_FLAG_FORMS.get(flag, {}), dest=key)
        if "type" in spec and "metavar" not in spec and "choices" not in spec:
            spec["metavar"] = flag.removeprefix("--").replace("-", "_").upper()
        spec["help"] = f"{spec['help']} [{key}]"
        group.add_argument(flag, **spec)


def pipeline_settings(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The settings the command line gives, in order: each ``--set``, then each flag given.

    Raises:
        UsageError: a malformed ``--set`` or an unknown key.
    """
    try:
        settings = [parse_setting(item) for item in args.set or []]
    except ValueError as e:
        raise UsageError(f"pipeline: {e} (see: worldvae pipeline --help)") from None
    for flag, key in FLAT_SETTINGS.values():
        value = getattr(args, key) if flag is not None else None
        if value is not None:
            settings.append((key, value))
    return settings


def check_pipeline_workers(preset: Preset, cluster: str) -> None:
    """Refuse more local worker processes than this machine runs, from a flag or ``--set``:
    the final scoring's always (it runs here), the collection's and the comparison's unless
    a Ray cluster runs them.

    Raises:
        UsageError: naming the setting and the cap.
    """
    counts = [("--eval-workers", preset.canonical.workers)]
    if not uses_ray(cluster):
        counts += [
            ("--workers", preset.compare.workers),
            ("collect.n_workers", preset.collect.n_workers),
        ]
    for flag, value in counts:
        check_local_workers_flag("pipeline", flag, value)


def run_pipeline_command(args: argparse.Namespace) -> int:
    from agents.pipeline import PIPELINE_ENTRIES, run_pipeline

    uses_ray(args.cluster)  # a bad value is refused before anything runs
    settings = pipeline_settings(args)
    try:  # every setting checked before anything is written
        preset = build_preset(args.preset, settings)
    except ValueError as e:
        raise UsageError(f"pipeline: {e} (see: worldvae pipeline --help)") from None
    check_pipeline_workers(preset, args.cluster)
    out = args.out or default_out(args.preset, preset)
    check_ours(out, PIPELINE_ENTRIES, "pipeline")
    with RunDirLock(out, "pipeline"):
        report = run_pipeline(
            preset,
            out,
            name=args.preset,
            command="worldvae " + shlex.join(sys.argv[1:]),
            cluster=args.cluster,
            cpus_per_run=args.cpus_per_run,
            gpus_per_run=args.gpus_per_run,
        )
    print(f"done: {report}")
    return 0
