"""``worldvae sweep``: train members of the autoencoder family on one dataset and compare them."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from agents.cli.options import number_list


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
    p.add_argument("--kinds", default=None, help="comma list, e.g. ae,dae,vae,beta-vae")
    p.add_argument(
        "--beta", type=number_list(float), default=None, help="betas for beta-vae, e.g. 1,4,16"
    )
    p.add_argument("--seeds", type=number_list(int), default=None, help="training seeds, e.g. 0,1")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="cap on training steps per run")
    p.add_argument("--workers", type=int, default=None, help="runs trained at once")
    p.add_argument(
        "--return-steps", type=int, default=None, help="latent PPO steps per model (0: no agents)"
    )
    p.add_argument("--out", type=Path, default=None, help="default runs/sweep/PRESET__ENV")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a sweep made with other options"
    )
    p.set_defaults(func=run_sweep_command)


def run_sweep_command(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from agents.representation_sweep import PRESETS, run_representation_sweep

    preset = PRESETS[args.preset]
    if args.env and args.data:
        raise ValueError("give --env (collect) or --data (an existing dataset), not both")
    changes: dict = {}
    if args.env:
        changes["env_id"] = args.env
    if args.kinds:
        changes["kinds"] = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    for name in ("beta", "seeds", "epochs", "max_steps", "workers", "return_steps"):
        value = getattr(args, name)
        if value is not None:
            changes["betas" if name == "beta" else name] = value
    if args.latent_dim is not None:
        changes["model"] = preset.model | {"latent_dim": args.latent_dim}
    preset = replace(preset, **changes)
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
