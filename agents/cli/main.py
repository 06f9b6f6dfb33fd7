"""Entry point of the ``worldvae`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import NoReturn

from agents.cli.agent_commands import add_evaluate_parser, add_train_agent_parser
from agents.cli.compare_commands import add_compare_parser, add_pipeline_parser
from agents.cli.data_commands import add_collect_parser, add_data_parser
from agents.cli.errors import UsageError, describe, details
from agents.cli.memory_commands import add_encode_data_parser, add_train_rnn_parser
from agents.cli.sweep_commands import add_sweep_parser
from agents.cli.vae_commands import add_inspect_parser, add_train_vae_parser
from worldvae import __version__


class _Parser(argparse.ArgumentParser):
    """Refusals become :class:`UsageError`, printed by :func:`main` as one line."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("worldvae").strip()
        where = f"{command}: " if command else ""
        raise UsageError(f"{where}{message} (see: {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="worldvae",
        description="World-models pipeline: collect frames, pretrain a VAE, train and compare "
        "RL agents on pixels and on latents.",
    )
    parser.add_argument("--version", action="version", version=f"worldvae {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure (any position)"
    )
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


def close_progress_bars() -> None:
    """Finish the bars a failed command left open, so that its error line starts a line."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Every failure prints one line, ``worldvae: error: ...``; ``--debug`` adds the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except KeyboardInterrupt:
        close_progress_bars()
        print("\nworldvae: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout left (`| head`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit's flush of stdout fails no more
        return 141
    except Exception as e:  # every failure: one line, the traceback only when asked
        close_progress_bars()
        message, status = describe(e)
        if debug:
            traceback.print_exc()
            if details(e):
                print(details(e), file=sys.stderr)
        print(f"worldvae: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
