"""``worldvae train-vae`` and ``worldvae inspect``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldvae.models.config import KINDS


def add_train_vae_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-vae",
        help="train an autoencoder (beta-VAE by default) on a collected dataset",
        description="Train on the dataset's train split, validate each epoch, keep the best "
        "and last checkpoints. Interrupted runs continue with --resume.",
    )
    p.add_argument("--data", required=True, type=Path, help="dataset directory")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--kind", default="beta-vae", choices=KINDS)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--channels", default="32,64,128,256", help="encoder conv channels")
    p.add_argument("--likelihood", default="mse", choices=["mse", "bernoulli"])
    p.add_argument("--beta", type=float, default=1.0)
    p.add_argument("--free-bits", type=float, default=0.0, help="KL floor per dimension (nats)")
    p.add_argument("--capacity-max", type=float, default=0.0, help="controlled capacity C (nats)")
    p.add_argument("--capacity-steps", type=int, default=100_000)
    p.add_argument("--noise", default="gaussian", choices=["gaussian", "masking"], help="dae noise")
    p.add_argument("--topk", type=int, default=8, help="units kept by kind topk")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=5, help="early stopping, in epochs")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable episode files")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.set_defaults(func=run_train_vae)


def run_train_vae(args: argparse.Namespace) -> int:
    from worldvae.training import TrainConfig, train_autoencoder

    model = {
        "kind": args.kind,
        "latent_dim": args.latent_dim,
        "channels": [int(c) for c in args.channels.split(",")],
        "likelihood": args.likelihood,
        "beta": args.beta,
        "free_bits": args.free_bits,
        "capacity_max": args.capacity_max,
        "capacity_steps": args.capacity_steps,
        "noise": args.noise,
        "topk": args.topk,
    }
    cfg = TrainConfig(
        model=model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        val_fraction=args.val_fraction,
        patience=args.patience,
        max_steps=args.max_steps,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        num_workers=args.num_workers,
        skip_corrupt=args.skip_corrupt,
    )
    r = train_autoencoder(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
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
        "--out", type=Path, default=None, help="output directory (default MODEL/inspect)"
    )
    p.add_argument("--frames", type=int, default=2048)
    p.add_argument(
        "--quantile", type=float, default=0.99, help="threshold quantile of validation scores"
    )
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    from worldvae.atomic import write_json
    from worldvae.data import EpisodeDataset
    from worldvae.diagnostics import inspect_model
    from worldvae.models import load_model

    model = load_model(args.model, device=args.device)
    dataset = EpisodeDataset(args.data)
    shifted = EpisodeDataset(args.shifted, val_fraction=0.0) if args.shifted else None
    out = args.out or args.model / "inspect"
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
