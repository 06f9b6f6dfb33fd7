"""Writing an episode dataset: the folder's layout is owned here, the collectors only schedule.

A dataset folder holds ``manifest.json`` and ``episodes/ep_XXXXXXX.npz``, one file per episode
(:mod:`worldvae.data.episodes` defines a file's members). :func:`open_dataset_dir` creates or
checks the folder for a collection and says which episodes are already complete (a re-run
resumes); :func:`write_dataset_episode` writes episode ``index`` atomically (a temporary file,
then a rename), so a killed writer leaves no partial episode under a final name. Local worker
processes and Ray tasks write through the same function, which is why their datasets are equal.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from worldvae.atomic import atomic_dir, recover_dir, remove_stale_temporaries
from worldvae.data.episodes import CorruptEpisodeError, Episode, read_episode, verify_episode
from worldvae.data.episodes import write_episode as _write_file
from worldvae.data.manifest import (
    EPISODES_DIR,
    MANIFEST_NAME,
    Manifest,
    episode_filename,
    episode_index,
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
_EPISODE_NAME = re.compile(r"ep_\d+\.npz")


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
            if not _EPISODE_NAME.fullmatch(name)
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
        remove_owned(episodes_dir, [n for n in entries(episodes_dir) if _EPISODE_NAME.fullmatch(n)])
        remove_stale_temporaries(episodes_dir)
    remove_owned(root, [MANIFEST_NAME, MOSAIC_NAME])


def open_dataset_dir(
    root: str | Path, manifest: Manifest, overwrite: bool = False
) -> dict[int, int]:
    """Create or check the dataset folder ``root`` for a collection described by ``manifest``.

    A folder of the same settings is resumed: its complete episodes are kept (every member's
    checksum verified; a corrupt one is deleted, to be written again) and returned as
    ``{index: n_frames}``. Temporaries of a killed writer are removed. ``overwrite`` deletes
    the dataset's own files (episodes, manifest, mosaic) and nothing else. The caller holds
    the folder's :class:`~worldvae.rundir.RunDirLock`.

    Raises:
        ForeignDatasetError: ``root`` holds files that are not a dataset's (even with
            ``overwrite``; nothing is changed).
        ValueError: ``root`` holds a dataset of other settings, or a dataset's files without
            its manifest (unless ``overwrite``).
    """
    out = Path(root)
    episodes_dir = out / EPISODES_DIR
    check_dataset_folder(out)
    if (out / MANIFEST_NAME).exists():
        old, new = Manifest.load(out).identity(), manifest.identity()
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
    for path in sorted(episodes_dir.glob("ep_*.npz")):
        try:
            verify_episode(path)  # every member's CRC, frames included, not only the rewards
            done[episode_index(path)] = len(read_episode(path, keys=("rewards",))["rewards"]) + 1
        except CorruptEpisodeError as e:
            logger.warning("re-collecting: %s", e)
            path.unlink()  # written again: an episode is a pure function of its seed
    return done


def write_dataset_episode(
    root: str | Path, index: int, episode: Episode, compress: bool = True
) -> int:
    """Write ``episode`` as episode ``index`` of the dataset at ``root``, atomically; return
    its number of frames (``T + 1``)."""
    _write_file(episode_path(root, index), episode, compress=compress)
    return episode.length + 1


MERGE_KEYS = ("env_id", "env_options", "frame_shape", "state_names", "format_version")


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
        files = sorted((root / EPISODES_DIR).glob("ep_*.npz"))
        for path in files:
            verify_episode(path)
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
        format_version=base.format_version,
        state_names=base.state_names,
    )
    merged.save(tmp)
    return merged
