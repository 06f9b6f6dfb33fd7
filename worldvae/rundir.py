"""Run folders: one writer at a time, and nothing removed that is not recognisably ours.

Every command that writes a folder holds :class:`RunDirLock` on it for its whole life. The lock
is an advisory ``fcntl.flock`` on ``FOLDER/.worldvae.lock``: the operating system releases it
when the process exits or is killed, so a stale lock never blocks a re-run, and a second writer
is refused with the holder's PID instead of silently mixing its files with the first one's.

Example:
    >>> with RunDirLock("runs/vae", "train-vae"):  # doctest: +SKIP
    ...     train()
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".worldvae.lock"


class RunDirBusyError(RuntimeError):
    """Another live process holds the folder's lock."""


class ForeignDirError(FileExistsError):
    """A folder holds files that the command did not write; it is left untouched."""


def _holder(lock_path: Path) -> str:
    try:
        text = lock_path.read_text().split()
    except OSError:
        return "unknown"
    return text[0] if text else "unknown"


class RunDirLock:
    """Exclusive advisory lock on a run folder, created if needed.

    Args:
        path: the folder (made with its parents when missing).
        command: who holds it (written beside the PID, for people reading the lock file).

    On leaving the block through an exception, a lock file this lock created is removed, and so
    are the folders it created when they are empty, so a command rejected before it wrote
    anything leaves nothing behind.

    Raises:
        RunDirBusyError: another process holds the lock (the message names its PID).
    """

    def __init__(self, path: str | os.PathLike[str], command: str):
        self.path = Path(path)
        self.command = command
        self._fd: int | None = None
        self._created: list[Path] = []
        self._new_lock_file = False

    def acquire(self) -> RunDirLock:
        if sys.platform == "win32":  # pragma: no cover - advisory locks are POSIX here
            self.path.mkdir(parents=True, exist_ok=True)
            return self
        import fcntl

        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        self.path.mkdir(parents=True, exist_ok=True)
        self._created = missing  # deepest first
        lock_path = self.path / LOCK_NAME
        self._new_lock_file = not lock_path.exists()
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise
            raise RunDirBusyError(
                f"{self.path} is in use by another worldvae process (PID {_holder(lock_path)}); "
                "wait for it to finish, stop it, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {self.command}\n".encode())
        self._fd = fd
        return self

    def release(self, failed: bool = False) -> None:
        if self._fd is None:
            return
        if failed and self._new_lock_file:  # a refused command leaves no trace
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        if failed and self._created and only_lock_file(self.path):
            for p in self._created:  # remove only the folders this lock made, deepest first
                try:
                    p.rmdir()
                except OSError:
                    break
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release(failed=exc_type is not None)


def entries(path: str | os.PathLike[str]) -> list[str]:
    """Names in ``path`` other than the lock file (empty when ``path`` does not exist)."""
    p = Path(path)
    if not p.is_dir():
        return []
    return sorted(e.name for e in p.iterdir() if e.name != LOCK_NAME)


def only_lock_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder that holds nothing but (at most) the lock file."""
    return Path(path).is_dir() and not entries(path)


def foreign_entries(path: str | os.PathLike[str], ours: Iterable[str]) -> list[str]:
    """Names in ``path`` that are not in ``ours`` (what a command would not have written)."""
    known = set(ours)
    return [n for n in entries(path) if n not in known and not (n.startswith(".") and ".tmp" in n)]


def check_ours(path: str | os.PathLike[str], ours: Iterable[str], what: str) -> None:
    """Refuse a folder that holds anything the command ``what`` does not write.

    Raises:
        ForeignDirError: naming up to five foreign entries and the fix.
    """
    foreign = foreign_entries(path, ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise ForeignDirError(
            f"{path} is not empty and is not a {what} folder (it holds {shown}); nothing was "
            "changed: choose an empty or new --out"
        )


def check_folder(path: str | os.PathLike[str], flag: str = "--out") -> None:
    """Refuse a ``path`` that is, or lies under, something other than a folder (a file, a
    broken link), before a lock would try to create a folder there.

    Raises:
        ForeignDirError: naming the path, what is in the way, and the fix.
    """
    p = Path(path)
    for q in (p, *p.parents):
        if q.is_dir():
            return
        if q.exists() or q.is_symlink():
            what = "exists" if q == p else f"lies under {q}, which exists"
            raise ForeignDirError(
                f"{p} {what} and is not a folder (a file or a broken link); nothing was "
                f"changed: choose another {flag}"
            )


def remove_owned(path: str | os.PathLike[str], names: Iterable[str]) -> None:
    """Delete only the listed entries of ``path`` (files or folders); keep everything else."""
    for name in names:
        p = Path(path) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
