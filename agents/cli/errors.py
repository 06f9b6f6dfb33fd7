"""Turning every failure of a command into one line: ``worldvae: error: ...``.

The traceback is shown only with ``--debug``. Each message names the problem and, where one
is known, the fix.
"""

from __future__ import annotations

import argparse
import errno
from typing import Any


class UsageError(Exception):
    """A command line that argparse refused (unknown option, value out of range, ...)."""


def one_line(text: str) -> str:
    """Collapse a multi-line message into one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _install_hint(e: BaseException) -> str:
    text = str(e)
    if "pip install" in text:
        return ""
    for module, extra in (("ale_py", "atari"), ("minigrid", "minigrid"), ("envpool", "fast")):
        if module in text:
            return f"; install it with: pip install 'worldvae[{extra}]'"
    if "mujoco" in text:
        return "; install it with: pip install 'gymnasium[mujoco]'"
    if "Box2D" in text or "box2d" in text:
        return "; install it with: pip install 'gymnasium[box2d]'"
    return ""


def _is_disk_full(e: BaseException) -> bool:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left on device" in text or "os error 28" in text


def describe(e: BaseException) -> tuple[str, int]:
    """The one-line message and exit status for an exception escaping a command."""
    if isinstance(e, UsageError):
        return one_line(str(e)), 2
    if _is_disk_full(e):
        where = getattr(e, "filename", None)
        place = f" writing {where}" if where else ""
        return (
            f"disk full{place}: free some space (or choose an --out on another disk) and re-run "
            "the same command; finished work is kept",
            1,
        )
    if isinstance(e, MemoryError):
        return (
            f"out of memory{': ' + one_line(str(e)) if str(e) else ''}; lower --frame-size, "
            "--batch-size, --n-envs or --workers",
            1,
        )
    module_missing = isinstance(e, ImportError) or type(e).__name__ == "DependencyNotInstalled"
    if module_missing:
        return f"a dependency is missing: {one_line(str(e))}{_install_hint(e)}", 1
    try:
        import yaml

        if isinstance(e, yaml.YAMLError):
            return f"invalid YAML: {one_line(str(e))}", 1
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        pass
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError)):
        return one_line(str(e)) or type(e).__name__, 1
    return (
        f"{type(e).__name__}: {one_line(str(e))} (an unexpected failure: run again with "
        "--debug for the traceback and report it)",
        1,
    )


def details(e: BaseException) -> Any:
    """Extra text an exception carries for ``--debug`` (a worker's own traceback)."""
    return getattr(e, "details", None)


def interrupted(args: argparse.Namespace | None, what: str = "interrupted") -> str:
    """The line after Ctrl-C (``what``: how the command stopped): the command to run next to
    go on where this one stopped.

    A command with ``--resume`` (train-vae, train-rnn) continues only with it, and not with
    ``--overwrite`` (which starts afresh); the others continue when run again as they were,
    without ``--overwrite``.
    """
    if args is None:
        return what
    if hasattr(args, "resume"):
        if getattr(args, "overwrite", False):
            return f"{what}; re-run the command with --resume instead of --overwrite to continue"
        if not args.resume:
            return f"{what}; re-run the same command with --resume to continue"
    elif getattr(args, "overwrite", False):
        return f"{what}; re-run the command without --overwrite to continue where it stopped"
    return f"{what}; re-run the same command to continue"
