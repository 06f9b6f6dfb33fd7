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
from worldvae.rundir import entries

logger = logging.getLogger(__name__)


def episode_path(root: str | Path, index: int) -> Path:
    """Where episode ``index`` of the dataset at ``root`` lives."""
    return Path(root) / EPISODES_DIR / episode_filename(index)


def open_dataset_dir(
    root: str | Path, manifest: Manifest, overwrite: bool = False
) -> dict[int, int]:
    """Create or check the dataset folder ``root`` for a collection described by ``manifest``.

    A folder of the same settings is resumed: its complete episodes are kept (every member's
    checksum verified; a corrupt one is deleted, to be written again) and returned as
    ``{index: n_frames}``. Temporaries of a killed writer are removed.

    Raises:
        ValueError: ``root`` holds a dataset of other settings (unless ``overwrite``), or
            files that are not a dataset's.
    """
    out = Path(root)
    episodes_dir = out / EPISODES_DIR
    if (out / MANIFEST_NAME).exists():
        old, new = Manifest.load(out).identity(), manifest.identity()
        if overwrite:
            shutil.rmtree(episodes_dir, ignore_errors=True)
        elif old != new:
            diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
            raise ValueError(
                f"{out} holds a dataset collected with other settings {diff} (old, new); "
                "re-run with the same settings to resume, choose another --out, or pass "
                "--overwrite to replace it"
            )
    elif entries(out) and not overwrite:
        raise ValueError(
            f"{out} exists, is not empty and is not a worldvae dataset; choose another --out"
        )
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
    each source's directory, policy, seed and episode count. ``out`` is built in a temporary
    folder beside it and renamed into place (:func:`worldvae.atomic.atomic_dir`), so a killed
    merge leaves the previous ``out``, or none.

    Raises:
        ValueError: fewer than two distinct sources; sources of different env id, env options,
            frame shape, state names or format (the key and both values named); ``out``
            inside a source or holding one; ``out`` existing without ``overwrite``, or
            holding something other than a dataset.
        CorruptEpisodeError: a source episode fails its checksums.
    """
    roots = [Path(s).resolve() for s in sources]
    target = Path(out)
    recover_dir(target)
    if len(set(roots)) != len(roots):
        raise ValueError("a dataset is given twice; list each dataset once")
    if len(roots) < 2:
        raise ValueError("merging needs at least two datasets")
    resolved = target.resolve()
    for root in roots:
        if resolved == root or resolved in root.parents or root in resolved.parents:
            raise ValueError(
                f"--out {target} is, holds or lies inside the dataset {root}; choose a folder "
                "apart from the datasets"
            )
    if target.exists():
        if not overwrite:
            raise ValueError(f"{target} exists; choose another --out or pass --overwrite")
        if entries(target) and not (target / MANIFEST_NAME).is_file():
            raise ValueError(
                f"{target} is not a worldvae dataset; --overwrite replaces only a dataset"
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
    with atomic_dir(target) as tmp:
        return _link_episodes(roots, manifests, tmp)


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
