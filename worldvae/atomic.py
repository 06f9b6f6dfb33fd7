"""Atomic file writes: write to a temporary file beside the target, then rename.

A process killed mid-write leaves at most a ``*.tmp`` file (ignored and cleaned by readers),
never a half-written target.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting, then restore at once
    os.umask(mask)
    return mask


def usual_mode(path: str | os.PathLike[str], directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666/0777 less the umask).

    ``mkstemp``/``mkdtemp`` create private (0600/0700) files, which would make datasets and
    models unreadable to a group on shared storage.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


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
    usual_mode(tmp)
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


def _old_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` whole.

    The previous ``target`` is first renamed to ``.NAME.old`` and removed once the new one is in
    place, so a kill between the two renames leaves ``.NAME.old``, which :func:`recover_dir`
    puts back. On an exception the temporary folder is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        usual_mode(tmp, directory=True)
        yield tmp
        old = _old_name(target)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(target: str | os.PathLike[str]) -> bool:
    """Undo a replacement by :func:`atomic_dir` that a kill interrupted; True if it did.

    When ``target`` is missing but its previous version ``.NAME.old`` is there, the previous
    version is renamed back (the interrupted write is lost, the one before it is kept). Stale
    temporary folders beside ``target`` are removed.
    """
    target = Path(target)
    old = _old_name(target)
    for stale in target.parent.glob(f".{target.name}.*{TMP_SUFFIX}"):
        shutil.rmtree(stale, ignore_errors=True)
    if not target.exists() and old.is_dir():
        os.replace(old, target)
        return True
    if target.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return False


def torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` that reports a full disk as ``OSError(ENOSPC)`` naming the file.

    torch reports a failed write as an internal assertion (``enforce fail at
    inline_container.cc``), which says nothing of the cause.
    """
    import errno

    import torch

    try:
        torch.save(obj, path)
    except RuntimeError as e:
        free = shutil.disk_usage(Path(path).parent).free
        if "inline_container" in str(e) and free < 64 * 2**20:
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from e
        raise
