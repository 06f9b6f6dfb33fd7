"""``worldvae train-vae`` and ``worldvae inspect``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from agents.cli.minari_commands import add_minari_source_options, data_source, open_data_source
from agents.cli.options import add_config_options, bounded, config_values
from worldvae.vae.config import AutoencoderConfig
from worldvae.vae.trainer import TrainConfig

# what ``worldvae inspect`` writes into its folder (``worldvae.diagnostics.inspect_model``)
INSPECT_ENTRIES = (
    "reconstructions.png",
    "prior_samples.png",
    "traversals.png",
    "interpolation.png",
    "anomalies.png",
    "summary.json",
)


def add_train_vae_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-vae",
        help="train an autoencoder (beta-VAE by default) on a collected dataset",
        description="Train on the dataset's train split, validate each epoch, keep the best "
        "and last checkpoints. Interrupted runs continue with --resume. Data-parallel on N "
        "processes or GPUs: torchrun --nproc-per-node N -m worldvae train-vae ... "
        "(--batch-size is the global batch; see docs/scaling.md).",
    )
    p.add_argument(
        "--data",
        required=True,
        type=data_source,
        help="dataset directory, or minari:NAME (a Minari dataset of image observations, "
        "streamed episode by episode)",
    )
    p.add_argument("--out", required=True, type=Path, help="run directory")
    model = p.add_argument_group("model (every field of AutoencoderConfig)")
    train = p.add_argument_group("training (every field of TrainConfig)")
    p.set_defaults(
        model_fields=add_config_options(model, AutoencoderConfig),
        train_fields=add_config_options(train, TrainConfig),
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    add_minari_source_options(p)
    p.set_defaults(func=run_train_vae)


def run_train_vae(args: argparse.Namespace) -> int:
    from worldvae.distributed import distributed
    from worldvae.vae.trainer import train_autoencoder

    cfg = TrainConfig(
        model=config_values(args, args.model_fields), **config_values(args, args.train_fields)
    )
    data = open_data_source(args, args.data, cfg.val_fraction)
    with distributed(cfg.device) as ctx:
        if not ctx.is_main:  # one copy of the progress and the log lines: rank 0's
            logging.getLogger().setLevel(logging.WARNING)
        r = train_autoencoder(
            data,
            args.out,
            cfg,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=ctx.is_main,
            dist=ctx,
        )
    if not ctx.is_main:
        return 0
    print(
        f"trained {r.epochs_done} epochs ({r.steps} steps, {r.images_per_second:.0f} img/s); "
        f"best validation loss {r.best_val_loss:.2f}; model: {r.run_dir / 'checkpoints' / 'best'}"
    )
    return 0


def add_inspect_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="pictures and numbers of what a model learned")
    p.add_argument("model", type=Path, help="model or run directory")
    p.add_argument(
        "--data", required=True, type=Path, help="dataset (its validation split is used)"
    )
    p.add_argument(
        "--shifted",
        type=Path,
        default=None,
        help="a dataset from another distribution, for anomaly scores",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory, new, empty or an earlier inspect's (default MODEL/inspect)",
    )
    p.add_argument("--frames", type=bounded(int, 1, 1_000_000), default=2048)
    p.add_argument(
        "--quantile",
        type=bounded(float, 0.0, 1.0, low_open=True),
        default=0.99,
        help="threshold quantile of validation scores",
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from worldvae.atomic import write_json
    from worldvae.data import EpisodeDataset
    from worldvae.diagnostics import inspect_model
    from worldvae.records import check_dataset_for_model
    from worldvae.rundir import RunDirLock, check_folder, check_ours
    from worldvae.vae import load_model

    model = load_model(args.model, device=args.device)
    dataset = EpisodeDataset(args.data)
    check_dataset_for_model(args.data, args.model)  # its frames must be the model's
    shifted = EpisodeDataset(args.shifted, val_fraction=0.0) if args.shifted else None
    out = args.out or args.model / "inspect"
    check_folder(out)
    with RunDirLock(out, "inspect"):
        check_ours(out, INSPECT_ENTRIES, "worldvae inspect")  # a re-run rewrites only its own files
        s = inspect_model(
            model, dataset, out, shifted=shifted, n_frames=args.frames, quantile=args.quantile
        )
        if dataset.state_names is not None and dataset.split("val"):
            from worldvae.probes import probe_dataset

            probe = probe_dataset(model.encode, dataset)
            s["probe_r2"] = probe.as_dict()
            cells = ", ".join(
                f"{n} {'n/a' if v is None else f'{v:.2f}'}" for n, v in s["probe_r2"].items()
            )
            print(f"linear probe R^2 on held-out episodes ({probe.n_test} frames): {cells}")
        write_json(out / "summary.json", s)
    print(f"active units {s['active_units']} / {s['latent_dim']}")
    if "kl_per_dim" in s:
        print(f"KL per dim (nats, total {s['kl_total']:.1f}): {json.dumps(s['kl_per_dim'])}")
    a = s["anomaly"]
    print(
        f"anomaly threshold {a['threshold']:.1f} (q={a['quantile']}); flagged in-distribution {a['flagged_in_distribution']:.1%}",
        end="",
    )
    print(f", shifted {a['flagged_shifted']:.1%}" if "flagged_shifted" in a else "")
    for name, path in s["files"].items():
        print(f"{name:16s} {path}")
    return 0
