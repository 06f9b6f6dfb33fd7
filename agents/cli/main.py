"""Entry point of the ``worldvae`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import Any, NoReturn

from agents.cli.agent_commands import add_evaluate_parser, add_train_agent_parser
from agents.cli.common import check_worker_counts
from agents.cli.compare_commands import add_compare_parser, add_pipeline_parser
from agents.cli.data_commands import add_collect_parser, add_data_parser
from agents.cli.errors import UsageError, describe, details, interrupted
from agents.cli.memory_commands import add_encode_data_parser, add_train_rnn_parser
from agents.cli.sweep_commands import add_sweep_parser
from agents.cli.tune_commands import add_tune_parser
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
    add_tune_parser(sub)
    return parser


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the command cleans up as for Ctrl-C: worker
    processes stopped, run-folder locks released. Not an ``Exception``, so that no
    ``except Exception`` on the way swallows it."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` (the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    args: argparse.Namespace | None = None
    try:
        with sigterm_raises():
            args = build_parser().parse_args(argv)
            check_worker_counts(args)
            return int(args.func(args))
    except KeyboardInterrupt:
        close_progress_bars()
        print(f"\nworldvae: {interrupted(args)}", file=sys.stderr)
        return 130
    except Terminated:
        close_progress_bars()
        print(f"\nworldvae: {interrupted(args, 'terminated')}", file=sys.stderr)
        return 128 + signal.SIGTERM
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
