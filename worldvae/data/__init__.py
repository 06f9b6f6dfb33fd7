"""Episode datasets: on-disk format, manifest, split and streaming loader.

The loader (which needs torch) is imported on first use, so collector workers that only
write episodes start quickly.
"""

from typing import Any

from worldvae.data.dataset import EpisodeDataset, EpisodeInfo
from worldvae.data.episodes import (
    CorruptEpisodeError,
    Episode,
    load_episode,
    read_episode,
    write_episode,
)
from worldvae.data.manifest import Manifest, episode_filename, episode_seed

__all__ = [
    "CorruptEpisodeError",
    "Episode",
    "EpisodeDataset",
    "EpisodeInfo",
    "FrameStream",
    "Manifest",
    "episode_filename",
    "episode_seed",
    "load_episode",
    "make_frame_loader",
    "read_episode",
    "write_episode",
]


def __getattr__(name: str) -> Any:
    if name in ("FrameStream", "make_frame_loader"):
        from worldvae.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'worldvae.data' has no attribute {name!r}")
