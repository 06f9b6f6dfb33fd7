"""``worldvae encode-data`` and ``worldvae train-rnn``: the latent dataset and the memory model M."""

from __future__ import annotations

import argparse
from pathlib import Path

from agents.cli.options import add_config_options, bounded, config_values
from worldvae.memory.config import MemoryConfig
from worldvae.memory.trainer import MemoryTrainConfig


def add_encode_data_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode-data",
        help="encode an episode dataset with a VAE into a latent dataset (for train-rnn)",
        description="Each episode's frames are encoded once (posterior mean and log-variance) "
        "and stored with its actions, rewards and ends. Re-running resumes; a directory made "
        "from another dataset or model is refused unless --overwrite.",
    )
    p.add_argument("--data", required=True, type=Path, help="episode dataset directory")
    p.add_argument("--model", required=True, type=Path, help="VAE model or run directory")
    p.add_argument("--out", required=True, type=Path, help="latent dataset directory")
    p.add_argument(
        "--batch-size", type=bounded(int, 1, 1_000_000), default=256, help="frames per encoder call"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-corrupt", action="store_true", help="skip unreadable episode files")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_encode_data)


def run_encode_data(args: argparse.Namespace) -> int:
    from envs.latent_memory import encode_latent_dataset

    r = encode_latent_dataset(
        args.data,
        args.model,
        args.out,
        device=args.device,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        skip_corrupt=args.skip_corrupt,
    )
    print(
        f"encoded {r.new_episodes} new episodes ({r.frames} frames); {r.out_dir} now holds "
        f"{r.total_episodes} episodes"
    )
    return 0


def add_train_rnn_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-rnn",
        help="train the memory model M (an MDN-RNN) on a latent dataset",
        description="M predicts the next latent (a mixture of Gaussians per dimension), the "
        "reward and the done flag from sequence chunks. Keeps best and last checkpoints; "
        "interrupted runs continue with --resume.",
    )
    p.add_argument("--data", required=True, type=Path, help="latent dataset (encode-data)")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    model = p.add_argument_group("memory model (every field of MemoryConfig)")
    train = p.add_argument_group("training (every field of MemoryTrainConfig)")
    p.set_defaults(
        model_fields=add_config_options(
            model, MemoryConfig, skip=("latent_dim", "action_dim", "predict_reward", "predict_done")
        ),
        train_fields=add_config_options(train, MemoryTrainConfig, skip=("sample_latents",)),
    )
    p.add_argument(
        "--no-sample", action="store_true", help="train on posterior means, not sampled latents"
    )
    p.add_argument("--no-reward-head", action="store_true", help="predict no reward")
    p.add_argument("--no-done-head", action="store_true", help="predict no done flag")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_train_rnn)


def run_train_rnn(args: argparse.Namespace) -> int:
    from worldvae.memory.trainer import train_memory

    model = config_values(args, args.model_fields)
    model.update(predict_reward=not args.no_reward_head, predict_done=not args.no_done_head)
    cfg = MemoryTrainConfig(
        model=model,
        sample_latents=not args.no_sample,
        **config_values(args, args.train_fields),
    )
    r = train_memory(args.data, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    print(
        f"trained M: {r.epochs_done} epochs, {r.steps} steps, best validation NLL "
        f"{r.best_val_nll:.2f} nats/step, {r.sequences_per_second:.0f} sequences/s; "
        f"run: {r.run_dir} (images/dream.png, metrics.csv)"
    )
    return 0
