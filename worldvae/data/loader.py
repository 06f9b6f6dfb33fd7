"""Streaming frame batches from a dataset whose frames need not fit in memory.

Episodes are read one at a time (in an order shuffled per epoch) into a bounded shuffle
buffer; batches are drawn from the buffer. Peak memory is about
``buffer_frames + longest episode`` frames, whatever the dataset's size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from worldvae.data.dataset import EpisodeDataset, EpisodeInfo, Split
from worldvae.data.episodes import CorruptEpisodeError, read_episode

logger = logging.getLogger(__name__)


class FrameStream:
    """Iterate uint8 frame batches ``(B, H, W, C)`` over some episodes.

    Args:
        episodes: episode files to read.
        batch_size: frames per batch.
        shuffle: shuffle episode order and frames (within the buffer).
        seed: with ``epoch``, fixes the order; the same seed and epoch give the same batches.
        buffer_frames: frames held for shuffling; bounds memory.
        drop_last: drop the final short batch.
        skip_corrupt: log and skip unreadable episodes instead of raising.
    """

    def __init__(
        self,
        episodes: Sequence[EpisodeInfo],
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        buffer_frames: int = 50_000,
        drop_last: bool = False,
        skip_corrupt: bool = False,
    ):
        if batch_size < 1 or buffer_frames < 1:
            raise ValueError("batch_size and buffer_frames must be positive")
        self.episodes = list(episodes)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_frames = max(buffer_frames, batch_size)
        self.drop_last = drop_last
        self.skip_corrupt = skip_corrupt
        self.epoch = 0
        self.peak_buffered_frames = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = sum(e.n_frames for e in self.episodes)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _frames(self, info: EpisodeInfo) -> np.ndarray | None:
        try:
            return read_episode(info.path, keys=("frames",))["frames"]
        except CorruptEpisodeError as e:
            if not self.skip_corrupt:
                raise
            logger.warning("skipping %s", e)
            return None

    def iter_batches(self, episodes: Sequence[EpisodeInfo] | None = None) -> Iterator[np.ndarray]:
        """Yield batches from ``episodes`` (default: all of this stream's episodes)."""
        episodes = list(self.episodes if episodes is None else episodes)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            episodes = [episodes[i] for i in rng.permutation(len(episodes))]
        pool: np.ndarray | None = None
        b = self.batch_size
        for info in episodes:
            frames = self._frames(info)
            if frames is None:
                continue
            pool = frames if pool is None else np.concatenate([pool, frames])
            self.peak_buffered_frames = max(self.peak_buffered_frames, len(pool))
            if len(pool) < self.buffer_frames:
                continue
            if self.shuffle:
                pool = pool[rng.permutation(len(pool))]
            # Emit about half the buffer; the rest mixes with the next episodes.
            n_emit = (len(pool) - self.buffer_frames // 2) // b * b
            for start in range(0, n_emit, b):
                yield pool[start : start + b]
            pool = pool[n_emit:].copy()
        if pool is None or len(pool) == 0:
            return
        if self.shuffle:
            pool = pool[rng.permutation(len(pool))]
        for start in range(0, len(pool), b):
            batch = pool[start : start + b]
            if len(batch) < b and self.drop_last:
                break
            yield batch

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_batches()


class _TorchFrameStream(IterableDataset):
    """Splits a :class:`FrameStream`'s episodes across DataLoader workers."""

    def __init__(self, stream: FrameStream):
        super().__init__()
        self.stream = stream

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        episodes = self.stream.episodes
        if info is not None:
            episodes = episodes[info.id :: info.num_workers]
        for batch in self.stream.iter_batches(episodes):
            yield torch.from_numpy(batch)


def make_frame_loader(
    dataset: EpisodeDataset,
    split: Split = "train",
    batch_size: int = 256,
    shuffle: bool = True,
    seed: int = 0,
    buffer_frames: int = 50_000,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, FrameStream]:
    """A torch DataLoader of uint8 frame batches ``(B, H, W, C)`` plus its stream.

    Call ``stream.set_epoch(e)`` before each epoch for a fresh, reproducible order. With
    ``num_workers > 0`` each worker reads a disjoint share of the episodes and holds its own
    buffer, so memory is about ``num_workers * buffer_frames`` frames.
    """
    episodes = dataset.split(split)
    if not episodes:
        raise ValueError(
            f"the {split!r} split of {dataset.root} is empty ({len(dataset.episodes)} episodes "
            "in all); collect more episodes or change val_fraction"
        )
    stream = FrameStream(
        episodes,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        buffer_frames=buffer_frames,
        drop_last=drop_last,
        skip_corrupt=dataset.skip_corrupt,
    )
    loader = DataLoader(
        _TorchFrameStream(stream),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Its own generator: a DataLoader otherwise draws a seed from the global torch RNG at
        # every iteration start, which would shift the model's random stream on resume.
        generator=torch.Generator().manual_seed(seed),
    )
    return loader, stream
