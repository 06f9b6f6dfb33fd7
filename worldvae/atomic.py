"""Atomic file writes: write to a temporary file beside the target, then rename.

A process killed mid-write leaves at most a ``*.tmp`` file (ignored and cleaned by readers),
never a half-written target.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched.
    The temporary name keeps the target's extension (``.npz``, ``.png`` ...) so that
    writers which choose a format by extension behave.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f"{TMP_SUFFIX}{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``target`` when the block succeeds."""
    with atomic_path(target) as tmp, open(tmp, mode) as f:
        yield f


def write_json(target: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_open(target, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> int:
    """Delete temporary files left by a killed writer in ``directory``; return how many."""
    n = 0
    for p in Path(directory).glob(f".*{TMP_SUFFIX}*"):
        p.unlink(missing_ok=True)
        n += 1
    return n
