"""Writing an episode dataset: the folder's layout is owned here, the collectors only schedule.

A dataset folder holds ``manifest.json`` and ``episodes/ep_XXXXXXX.npz``, one file per episode
(:mod:`worldvae.data.episodes` defines a file's members). :func:`open_dataset_dir` creates or
checks the folder for a collection and says which episodes are already complete (a re-run
resumes); :func:`write_dataset_episode` writes episode ``index`` atomically (a temporary file,
then a rename), so a killed writer leaves no partial episode under a final name. Local worker
processes and Ray tasks write through the same function, which is why their datasets are equal.
:class:`EpisodeWriter` runs that function on a thread of its own, so that a collector's worker
plays the next episode while the last one is compressed and written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from worldvae.atomic import atomic_dir, recover_dir, remove_stale_temporaries
from worldvae.data.codecs import codec_of_format
from worldvae.data.episodes import (
    CorruptEpisodeError,
    Episode,
    check_episode,
    read_episode,
    verify_episode,
)
from worldvae.data.episodes import write_episode as _write_file
from worldvae.data.manifest import (
    EPISODES_DIR,
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    episode_filename,
    episode_index,
    is_episode_name,
    list_episode_files,
)
from worldvae.rundir import (
    ForeignDirError,
    RunDirLock,
    check_folder,
    entries,
    foreign_entries,
    remove_owned,
)

logger = logging.getLogger(__name__)

MOSAIC_NAME = "mosaic.png"  # written by ``worldvae data info``
DATASET_ENTRIES = (MANIFEST_NAME, EPISODES_DIR, MOSAIC_NAME)  # all a dataset folder holds


class ForeignDatasetError(ForeignDirError, ValueError):
    """A folder to be written as a dataset holds what no worldvae command wrote there; nothing
    in it is written or deleted."""


def episode_path(root: str | Path, index: int) -> Path:
    """Where episode ``index`` of the dataset at ``root`` lives."""
    return Path(root) / EPISODES_DIR / episode_filename(index)


def dataset_foreign_entries(root: str | Path) -> list[str]:
    """What the folder ``root`` holds that a dataset does not: entries other than
    :data:`DATASET_ENTRIES` at its root, and ``episodes/NAME`` for what ``episodes/`` holds
    besides episode files (temporaries of a killed writer and the lock file are a dataset's)."""
    out = Path(root)
    foreign = foreign_entries(out, DATASET_ENTRIES)
    episodes_dir = out / EPISODES_DIR
    if episodes_dir.is_dir():
        foreign += [
            f"{EPISODES_DIR}/{name}"
            for name in foreign_entries(episodes_dir, ())
            if not is_episode_name(name)
        ]
    elif episodes_dir.exists() or episodes_dir.is_symlink():
        foreign.append(EPISODES_DIR)  # a file where the episodes' folder goes
    return foreign


def check_dataset_folder(root: str | Path) -> None:
    """Refuse ``root`` as a dataset to write unless it is new, empty, or holds only what a
    dataset holds. Writes nothing.

    Raises:
        ForeignDirError: ``root`` is a file, or lies under one.
        ForeignDatasetError: ``root`` holds entries that no worldvae command wrote there (named,
            up to five); ``--overwrite`` does not change that.
    """
    out = Path(root)
    check_folder(out)
    foreign = dataset_foreign_entries(out)
    if not foreign:
        return
    shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
    if (out / MANIFEST_NAME).is_file():
        raise ForeignDatasetError(
            f"{out} is a worldvae dataset but also holds {shown}, which a dataset does not; "
            "nothing was changed (--overwrite removes only a dataset's own files): move them "
            "out of it or choose another --out"
        )
    raise ForeignDatasetError(
        f"{out} is not empty and is not a worldvae dataset (it holds {shown}); nothing was "
        "changed, and --overwrite replaces only a dataset: choose an empty or new --out"
    )


def _remove_dataset_files(root: Path) -> None:
    """Delete a dataset's own files in ``root`` (its episodes, manifest and mosaic) and nothing
    else; the caller has checked that ``root`` holds nothing foreign."""
    episodes_dir = root / EPISODES_DIR
    if episodes_dir.is_dir():
        remove_owned(episodes_dir, [n for n in entries(episodes_dir) if is_episode_name(n)])
        remove_stale_temporaries(episodes_dir)
    remove_owned(root, [MANIFEST_NAME, MOSAIC_NAME])


def open_dataset_dir(
    root: str | Path, manifest: Manifest, overwrite: bool = False
) -> dict[int, int]:
    """Create or check the dataset folder ``root`` for a collection described by ``manifest``.

    A folder of the same settings is resumed: its complete episodes are kept (every member's
    checksum verified; a corrupt one is deleted, to be written again) and returned as
    ``{index: n_frames}``; it keeps its episode format (``format_version``: one of format 1
    goes on in zlib). Temporaries of a killed writer are removed. ``overwrite`` deletes
    the dataset's own files (episodes, manifest, mosaic) and nothing else. The caller holds
    the folder's :class:`~worldvae.rundir.RunDirLock`.

    Raises:
        ForeignDatasetError: ``root`` holds files that are not a dataset's (even with
            ``overwrite``; nothing is changed).
        ValueError: ``root`` holds a dataset of other settings, of an episode format newer
            than this code knows, or a dataset's files without its manifest (unless
            ``overwrite``).
    """
    out = Path(root)
    episodes_dir = out / EPISODES_DIR
    check_dataset_folder(out)
    if (out / MANIFEST_NAME).exists():
        previous = Manifest.load(out)
        if not overwrite:  # a re-run goes on in the dataset's own episode format
            codec_of_format(previous.format_version)  # refuses a format of newer code
            manifest = replace(manifest, format_version=previous.format_version)
        old, new = previous.identity(), manifest.identity()
        if overwrite:
            _remove_dataset_files(out)
        elif old != new:
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            raise ValueError(
                f"{out} holds a dataset collected with other settings {diff} (old, new); "
                "re-run with the same settings to resume, choose another --out, or pass "
                "--overwrite to replace it"
            )
    elif entries(out):
        if not overwrite:
            raise ValueError(
                f"{out} holds a dataset's files ({', '.join(entries(out))}) but no "
                f"{MANIFEST_NAME}; choose another --out, or pass --overwrite to replace them"
            )
        _remove_dataset_files(out)
    episodes_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(episodes_dir)
    manifest.save(out)
    done: dict[int, int] = {}
    for path in list_episode_files(out):
        try:
            verify_episode(path)  # every member's CRC, frames included, not only the rewards
            check_episode(path, manifest.frame_shape, manifest.state_names)
            done[episode_index(path)] = len(read_episode(path, keys=("rewards",))["rewards"]) + 1
        except CorruptEpisodeError as e:
            logger.warning("re-collecting: %s", e)
            path.unlink()  # written again: an episode is a pure function of its seed
    return done


def dataset_codec(root: str | Path) -> str:
    """The codec of the format of the dataset at ``root`` (see :mod:`worldvae.data.codecs`):
    its manifest's ``format_version``, or the current format where it has no manifest yet."""
    if not (Path(root) / MANIFEST_NAME).is_file():
        return codec_of_format(FORMAT_VERSION)
    return codec_of_format(Manifest.load(root).format_version)


def write_dataset_episode(
    root: str | Path,
    index: int,
    episode: Episode,
    compress: bool = True,
    codec: str | None = None,
) -> int:
    """Write ``episode`` as episode ``index`` of the dataset at ``root``, atomically; return
    its number of frames (``T + 1``). ``codec`` None: that of the dataset's format, read from
    its manifest."""
    if compress and codec is None:
        codec = dataset_codec(root)
    _write_file(episode_path(root, index), episode, compress=compress, codec=codec or "none")
    return episode.length + 1


class EpisodeWriteError(RuntimeError):
    """Writing an episode failed on an :class:`EpisodeWriter`'s thread; raised where the
    episodes are submitted, chained to the writer's own exception."""


_STOP = object()  # tells the writer's thread that no more episodes come


class EpisodeWriter:
    """Writes the episodes of the dataset at ``root``, on a thread of its own by default.

    Compressing and writing an episode (zstd, zlib and file writes release the GIL) then
    overlaps with playing the next one. At most ``max_pending`` episodes wait in its queue:
    :meth:`submit` blocks while it is full, so memory stays bounded and a slow disk slows the
    player instead of piling episodes up. Each episode is written by
    :func:`write_dataset_episode` (a temporary file, then a rename) and only then reported to
    ``on_written(index, n_frames)`` (called on the writer's thread): a process killed meanwhile
    loses the queued episodes and leaves no partial file, and a re-run writes them again.

    The first failure stops the writer (the episodes queued after it are dropped): :meth:`check`,
    the next :meth:`submit` and :meth:`close` raise :class:`EpisodeWriteError`, naming the
    episode and the error. With ``background=False`` :meth:`submit` writes at once, in the
    caller's thread, and reports the same way.

    Example:
        >>> with EpisodeWriter("data", on_written=print) as writer:  # doctest: +SKIP
        ...     writer.submit(0, episode)
        0 201
    """

    def __init__(
        self,
        root: str | Path,
        *,
        compress: bool = True,
        codec: str | None = None,
        background: bool = True,
        max_pending: int = 2,
        on_written: Callable[[int, int], Any] | None = None,
    ):
        if max_pending < 1:
            raise ValueError(f"EpisodeWriter needs max_pending >= 1, got {max_pending}")
        self.root = Path(root)
        self.compress = compress
        self.codec = (codec or dataset_codec(root)) if compress else "none"
        self.on_written = on_written
        self._error: EpisodeWriteError | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
            self._thread.start()

    def _write(self, index: int, episode: Episode) -> None:
        try:
            n_frames = write_dataset_episode(self.root, index, episode, self.compress, self.codec)
            if self.on_written is not None:
                self.on_written(index, n_frames)
        except Exception as e:
            self._error = EpisodeWriteError(
                f"writing episode {index} to {episode_path(self.root, index)} failed: "
                f"{type(e).__name__}: {e}"
            )
            raise self._error from e

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is None:
                with contextlib.suppress(EpisodeWriteError):  # kept in _error for the caller
                    self._write(*item)

    def check(self) -> None:
        """Raise the writer's failure, if it had one.

        Raises:
            EpisodeWriteError: naming the episode that failed and why.
        """
        if self._error is not None:
            raise self._error

    def submit(self, index: int, episode: Episode) -> None:
        """Write ``episode`` as episode ``index``: queue it (blocking while ``max_pending``
        episodes wait), or write it now without a thread.

        Raises:
            EpisodeWriteError: this or an earlier episode failed to be written.
        """
        self.check()
        if self._thread is None:
            self._write(index, episode)
        else:
            self._queue.put((index, episode))

    def close(self) -> None:
        """Write every episode submitted, stop the thread, and raise the writer's failure.

        Raises:
            EpisodeWriteError: an episode failed to be written.
        """
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self.check()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(EpisodeWriteError):  # an error is already on its way
            self.close()  # let the writer finish what it can; that error goes on


# format_version is not among them: readers tell each file's format apart, so rounds of
# data collected before and after a format change merge (the merge records the newest)
MERGE_KEYS = ("env_id", "env_options", "frame_shape", "state_names")


def merge_datasets(
    sources: Sequence[str | Path], out: str | Path, overwrite: bool = False
) -> Manifest:
    """Join datasets of the same frames into one at ``out``: World Models' rounds of data
    (a first round from a random policy, a second from the first agent) train one V.

    The episodes of each source, in order, become episodes ``0..N-1`` of ``out`` (hard links
    where the filesystem allows, copies otherwise; each file keeps the seed it was reset
    with). The manifest's policy is ``{"name": "merged", "params": {"sources": [...]}}``,
    each source's directory, policy, seed and episode count. ``out`` is locked
    (:class:`~worldvae.rundir.RunDirLock`: a collection or merge writing it refuses this one,
    and the other way round), built in a temporary folder beside it and renamed into place
    (:func:`worldvae.atomic.atomic_dir`), so a killed merge leaves the previous ``out``, or
    none. ``overwrite`` replaces only a dataset holding nothing but a dataset's own files.

    Raises:
        ValueError: fewer than two distinct sources; sources of different env id, env options,
            frame shape, state names or format (the key and both values named); ``out``
            inside a source or holding one, or a symbolic link; ``out`` holding a dataset
            without ``overwrite``.
        ForeignDatasetError: ``out`` holds something other than a dataset's files (also a
            ValueError).
        ForeignDirError: ``out`` is a file.
        RunDirBusyError: another process is writing ``out``.
        CorruptEpisodeError: a source episode fails its checksums.
    """
    roots = [Path(s).resolve() for s in sources]
    target = Path(out)
    if len(set(roots)) != len(roots):
        raise ValueError("a dataset is given twice; list each dataset once")
    if len(roots) < 2:
        raise ValueError("merging needs at least two datasets")
    if not target.exists() and not target.is_symlink():
        recover_dir(target)  # a merge killed between its two renames: the previous one back
    if target.is_symlink():  # renaming the link would leave the folder it names behind
        raise ValueError(
            f"--out {target} is a symbolic link (to {os.readlink(target)}); a merge replaces "
            "its folder whole: give the folder itself or a new path"
        )
    check_folder(target)
    resolved = target.resolve()
    for root in roots:
        if resolved == root or resolved in root.parents or root in resolved.parents:
            raise ValueError(
                f"--out {target} is, holds or lies inside the dataset {root}; choose a folder "
                "apart from the datasets"
            )
    manifests = [Manifest.load(r) for r in roots]
    first = manifests[0].identity()
    for root, m in zip(roots[1:], manifests[1:], strict=True):
        other = m.identity()
        for key in MERGE_KEYS:
            if other.get(key) != first.get(key):
                raise ValueError(
                    f"{roots[0]} and {root} hold different frames ({key}: {first.get(key)!r} "
                    f"against {other.get(key)!r}); merge datasets collected with the same env "
                    "options"
                )
    with RunDirLock(target, "data merge"):
        recover_dir(target)  # the lock is ours: what is left beside it is a killed merge's
        old = target.with_name(f".{target.name}.old")
        if old.is_symlink():  # left by a merge into a link: only the link goes, not its folder
            old.unlink()
        _claim_merge_target(target, overwrite)
        return _replace_with_merge(target, roots, manifests)


def _claim_merge_target(target: Path, overwrite: bool) -> None:
    """Refuse ``target`` unless it is new, empty, or (with ``overwrite``) a dataset holding
    only a dataset's own files. Writes nothing."""
    if not entries(target):
        return
    check_dataset_folder(target)
    if not overwrite:
        raise ValueError(
            f"{target} exists and holds a dataset; choose another --out or pass --overwrite "
            "to replace it"
        )


def _replace_with_merge(target: Path, roots: list[Path], manifests: list[Manifest]) -> Manifest:
    """Build the merge in a temporary folder and rename it onto ``target``. The new folder is
    locked before it is renamed in, so no other writer takes it before this merge is done."""
    new_lock: RunDirLock | None = None
    try:
        with atomic_dir(target) as tmp:
            new_lock = RunDirLock(tmp, "data merge").acquire()
            return _link_episodes(roots, manifests, tmp)
    finally:
        if new_lock is not None:
            new_lock.release()


def _link_episodes(roots: list[Path], manifests: list[Manifest], tmp: Path) -> Manifest:
    """The sources' episodes renumbered into ``tmp``, and its manifest."""
    (tmp / EPISODES_DIR).mkdir()
    sources_info, index = [], 0
    for root, m in zip(roots, manifests, strict=True):
        files = list_episode_files(root)
        for path in files:
            verify_episode(path)
            check_episode(path, m.frame_shape, m.state_names)
            dest = episode_path(tmp, index)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
            index += 1
        sources_info.append(
            {"path": str(root), "policy": m.policy, "seed": m.seed, "episodes": len(files)}
        )
    if index == 0:
        raise ValueError(f"the datasets {', '.join(map(str, roots))} hold no episode")
    base = manifests[0]
    merged = Manifest(
        env_id=base.env_id,
        env_options=base.env_options,
        frame_shape=base.frame_shape,
        policy={"name": "merged", "params": {"sources": sources_info}},
        seed=base.seed,
        versions=base.versions,
        format_version=max(m.format_version for m in manifests),
        state_names=base.state_names,
    )
    merged.save(tmp)
    return merged
