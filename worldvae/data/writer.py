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
import shutil
from pathlib import Path

from worldvae.atomic import remove_stale_temporaries
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
