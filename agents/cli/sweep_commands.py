"""``worldvae sweep``: train members of the autoencoder family on one dataset and compare them."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from agents.cli.common import add_workers_flags
from agents.cli.errors import UsageError
from agents.cli.options import add_config_options, bounded
from agents.representation_sweep import (
    PRESETS,
    SweepPreset,
    run_representation_sweep,
    sweep_config,
)
from worldvae.family_sweep import SweepConfig
from worldvae.vae.config import AutoencoderConfig
from worldvae.workers import max_local_workers

# The sweep's flags taken from SweepConfig's fields (--workers is set apart: its cap is the
# machine's); --latent-dim is AutoencoderConfig's and --return-steps SweepPreset's.
GRID_FIELDS = ("kinds", "betas", "seeds", "epochs", "max_steps")


def add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="which autoencoder? train several kinds on one dataset and score them",
        description="Trains each kind (beta-vae once per --beta) with the same data, budget and "
        "seeds, scores each on held-out episodes (reconstruction, KL, active units, probes at "
        "50/500/5000 labels beside pixel, random-encoder and PCA controls, MIG, DCI, anomaly "
        "AUROC, factor traversals), optionally trains a short latent agent per model, and writes "
        "OUT/report/. Re-running resumes run by run. Options left out come from --preset.",
    )
    p.add_argument("--preset", default="representation", choices=["representation", "smoke"])
    p.add_argument("--env", default=None, help="collect from this env instead of the preset's")
    p.add_argument("--data", type=Path, default=None, help="use this dataset (recorded states)")
    p.add_argument("--shifted", type=Path, default=None, help="dataset of shifted frames (AUROC)")
    grid = p.add_argument_group(
        "the grid and its budget (each from its configuration field; each defaults to the preset's)"
    )
    add_config_options(grid, SweepConfig, only=GRID_FIELDS, defaults=dict.fromkeys(GRID_FIELDS))
    add_config_options(grid, AutoencoderConfig, only=("latent_dim",), defaults={"latent_dim": None})
    p.add_argument(
        "--workers",
        type=bounded(int, 1),
        default=None,
        help=f"runs trained at once (1..{max_local_workers()} on this machine)",
    )
    add_workers_flags(p, ("--workers", "workers"))
    add_config_options(grid, SweepPreset, only=("return_steps",), defaults={"return_steps": None})
    p.add_argument("--out", type=Path, default=None, help="default runs/sweep/PRESET__ENV")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a sweep made with other options"
    )
    p.set_defaults(func=run_sweep_command)


def sweep_preset(args: argparse.Namespace) -> SweepPreset:
    """The preset with the options given, every setting checked before anything is written.

    Raises:
        UsageError: a setting the sweep refuses (a model its class refuses, ...).
        ValueError: both ``--env`` and ``--data``.
    """
    preset = PRESETS[args.preset]
    if args.env and args.data:
        raise ValueError("give --env (collect) or --data (an existing dataset), not both")
    changes: dict[str, Any] = {}
    if args.env:
        changes["env_id"] = args.env
    for name in (*GRID_FIELDS, "workers", "return_steps"):
        value = getattr(args, name)
        if value is not None:
            changes[name] = value
    if args.latent_dim is not None:
        changes["model"] = preset.model | {"latent_dim": args.latent_dim}
    try:
        preset = replace(preset, **changes)
        sweep_config(preset, args.data or "data", args.shifted)
    except ValueError as e:
        raise UsageError(f"sweep: {e} (see: worldvae sweep --help)") from None
    return preset


def run_sweep_command(args: argparse.Namespace) -> int:
    preset = sweep_preset(args)
    env = (args.env or preset.env_id) if args.data is None else args.data.name
    out = args.out or Path("runs") / "sweep" / f"{args.preset}__{env.replace('/', '_')}"
    report = run_representation_sweep(
        preset,
        out,
        data=args.data,
        shifted=args.shifted,
        command="worldvae " + shlex.join(sys.argv[1:]),
        overwrite=args.overwrite,
    )
    print(f"report: {report}")
    return 0
