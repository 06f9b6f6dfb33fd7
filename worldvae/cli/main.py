"""Entry point of the ``worldvae`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from worldvae import __version__
from worldvae.cli.agent_commands import add_evaluate_parser, add_train_agent_parser
from worldvae.cli.compare_commands import add_compare_parser, add_pipeline_parser
from worldvae.cli.data_commands import add_collect_parser, add_data_parser
from worldvae.cli.memory_commands import add_encode_data_parser, add_train_rnn_parser
from worldvae.cli.sweep_commands import add_sweep_parser
from worldvae.cli.vae_commands import add_inspect_parser, add_train_vae_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldvae",
        description="World-models pipeline: collect frames, pretrain a VAE, train and compare "
        "RL agents on pixels and on latents.",
    )
    parser.add_argument("--version", action="version", version=f"worldvae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_collect_parser(sub)
    add_data_parser(sub)
    add_train_vae_parser(sub)
    add_inspect_parser(sub)
    add_encode_data_parser(sub)
    add_train_rnn_parser(sub)
    add_train_agent_parser(sub)
    add_evaluate_parser(sub)
    add_compare_parser(sub)
    add_pipeline_parser(sub)
    add_sweep_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\nworldvae: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as e:
        print(f"worldvae: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
