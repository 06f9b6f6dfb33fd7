"""Streaming frame batches from a dataset whose frames need not fit in memory.

Episodes are read one at a time (in an order shuffled per epoch) into a bounded shuffle
buffer; batches are drawn from the buffer. Peak memory is about
``buffer_frames + longest episode`` frames, whatever the dataset's size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

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
        shard: which shard of a :class:`ShardedFrameStream` this stream reads; with ``seed``
            and ``epoch`` it fixes the order (shard 0 orders as an unsharded stream).
        read_frames: reads one episode's frames (default: from its episode file); a dataset
            of another store passes its own (:meth:`EpisodeDataset.read_frames`).
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
        shard: int = 0,
        read_frames: Callable[[EpisodeInfo], np.ndarray] | None = None,
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
        self.shard = shard
        self.read_frames = read_frames or _read_episode_frames
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
            return self.read_frames(info)
        except CorruptEpisodeError as e:
            if not self.skip_corrupt:
                raise
            logger.warning("skipping %s", e)
            return None

    def iter_batches(self, episodes: Sequence[EpisodeInfo] | None = None) -> Iterator[np.ndarray]:
        """Yield batches from ``episodes`` (default: all of this stream's episodes)."""
        episodes = list(self.episodes if episodes is None else episodes)
        key = [self.seed, self.epoch] + ([self.shard] if self.shard else [])
        rng = np.random.default_rng(key)
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


def _read_episode_frames(info: EpisodeInfo) -> np.ndarray:
    """The frames of an episode file."""
    return read_episode(info.path, keys=("frames",))["frames"]


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


def _nonempty_split(dataset: EpisodeDataset, split: Split) -> tuple[EpisodeInfo, ...]:
    """The episodes of ``split``; raises ValueError when there are none."""
    episodes = dataset.split(split)
    if not episodes:
        raise ValueError(
            f"the {split!r} split of {dataset.root} is empty ({len(dataset.episodes)} episodes "
            "in all); collect more episodes or change val_fraction"
        )
    return episodes


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
    episodes = _nonempty_split(dataset, split)
    stream = FrameStream(
        episodes,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        buffer_frames=buffer_frames,
        drop_last=drop_last,
        skip_corrupt=dataset.skip_corrupt,
        read_frames=dataset.read_frames,
    )
    return _batch_loader(_TorchFrameStream(stream), num_workers, pin_memory, seed), stream


def balance_shards(episodes: Sequence[EpisodeInfo], n_shards: int) -> list[list[EpisodeInfo]]:
    """Split episodes into ``n_shards`` disjoint shards of nearly equal frame counts.

    Longest episodes first, each to the shard with the fewest frames so far (ties: lowest
    shard id). The result depends on the episodes alone, so every rank computes the same split.
    Each shard lists its episodes by index.

    Raises:
        ValueError: fewer episodes than shards.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if len(episodes) < n_shards:
        raise ValueError(
            f"cannot split {len(episodes)} episodes into {n_shards} shards; collect at least "
            f"{n_shards} episodes or use fewer --data-shards"
        )
    shards: list[list[EpisodeInfo]] = [[] for _ in range(n_shards)]
    totals = [0] * n_shards
    for info in sorted(episodes, key=lambda e: (-e.n_frames, e.index)):
        s = min(range(n_shards), key=lambda k: (totals[k], k))
        shards[s].append(info)
        totals[s] += info.n_frames
    return [sorted(shard, key=lambda e: e.index) for shard in shards]


class ShardedFrameStream:
    """Lockstep microbatches from fixed shards of the episodes, for data-parallel training.

    The episodes are split into ``n_shards`` shards (:func:`balance_shards`); every step, each
    shard gives ``batch_size / n_shards`` frames from its own shuffle buffer. This stream yields,
    per step, the microbatches of the shards in ``shard_ids`` (a rank's share), so the ranks of
    a job read disjoint episodes and together see exactly the global batch that one process
    reading all shards would see. An epoch has as many steps as the smallest shard fills.

    Args:
        episodes: the split's episodes (all of them, on every rank).
        n_shards: number of shards; fixed for a run.
        shard_ids: the shards this stream reads (default: all).
        batch_size: global batch size, a multiple of ``n_shards``.
        shuffle, seed, skip_corrupt, read_frames: as for :class:`FrameStream`.
        buffer_frames: shuffle buffer of all shards together; each shard holds its share.
    """

    def __init__(
        self,
        episodes: Sequence[EpisodeInfo],
        n_shards: int,
        shard_ids: Sequence[int] | None = None,
        batch_size: int = 256,
        shuffle: bool = True,
        seed: int = 0,
        buffer_frames: int = 50_000,
        skip_corrupt: bool = False,
        read_frames: Callable[[EpisodeInfo], np.ndarray] | None = None,
    ):
        if batch_size % n_shards:
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of the number of shards ({n_shards})"
            )
        self.shards = balance_shards(episodes, n_shards)
        self.n_shards = n_shards
        self.shard_ids = list(range(n_shards) if shard_ids is None else shard_ids)
        if not self.shard_ids or any(not 0 <= s < n_shards for s in self.shard_ids):
            raise ValueError(f"shard_ids must be among 0..{n_shards - 1}, got {self.shard_ids}")
        self.batch_size = batch_size
        self.micro_batch_size = batch_size // n_shards
        self.streams = [
            FrameStream(
                self.shards[s],
                batch_size=self.micro_batch_size,
                shuffle=shuffle,
                seed=seed,
                buffer_frames=max(buffer_frames // n_shards, self.micro_batch_size),
                drop_last=True,
                skip_corrupt=skip_corrupt,
                shard=s,
                read_frames=read_frames,
            )
            for s in self.shard_ids
        ]
        self.steps_per_epoch = min(
            sum(e.n_frames for e in shard) // self.micro_batch_size for shard in self.shards
        )

    @property
    def episodes(self) -> list[EpisodeInfo]:
        """The episodes this stream reads (its shards'), by index."""
        return sorted((e for s in self.shard_ids for e in self.shards[s]), key=lambda e: e.index)

    @property
    def peak_buffered_frames(self) -> int:
        return sum(s.peak_buffered_frames for s in self.streams)

    def set_epoch(self, epoch: int) -> None:
        for s in self.streams:
            s.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[list[np.ndarray]]:
        """Per step, one uint8 ``(batch_size / n_shards, H, W, C)`` array per shard read.

        Stops early only if a shard runs dry because unreadable episodes were skipped.
        """
        iterators = [iter(s) for s in self.streams]
        for _ in range(self.steps_per_epoch):
            step: list[np.ndarray] = []
            for it in iterators:
                batch = next(it, None)
                if batch is None:
                    return
                step.append(batch)
            yield step


class _TorchShardedStream(IterableDataset):
    """A :class:`ShardedFrameStream` as a torch dataset (one reader; the order is fixed)."""

    def __init__(self, stream: ShardedFrameStream):
        super().__init__()
        self.stream = stream

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        for step in self.stream:
            yield [torch.from_numpy(b) for b in step]


def make_sharded_frame_loader(
    dataset: EpisodeDataset,
    n_shards: int,
    shard_ids: Sequence[int] | None = None,
    split: Split = "train",
    batch_size: int = 256,
    shuffle: bool = True,
    seed: int = 0,
    buffer_frames: int = 50_000,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> tuple[DataLoader, ShardedFrameStream]:
    """A DataLoader yielding, per step, a list of uint8 microbatches ``(B / n_shards, H, W, C)``.

    One list entry per shard in ``shard_ids``. ``num_workers`` may be 0 (read in this process)
    or 1 (read ahead in one background process); more readers would reorder the shards' steps.
    """
    if num_workers > 1:
        raise ValueError(
            f"a sharded loader reads with at most one worker process, got num_workers="
            f"{num_workers}; use --num-workers 1 (each rank reads its own shards)"
        )
    episodes = _nonempty_split(dataset, split)
    stream = ShardedFrameStream(
        episodes,
        n_shards,
        shard_ids,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        buffer_frames=buffer_frames,
        skip_corrupt=dataset.skip_corrupt,
        read_frames=dataset.read_frames,
    )
    return _batch_loader(_TorchShardedStream(stream), num_workers, pin_memory, seed), stream


def _batch_loader(
    batches: IterableDataset, num_workers: int, pin_memory: bool, seed: int
) -> DataLoader:
    """A DataLoader over an iterable that already yields whole batches."""
    return DataLoader(
        batches,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        # Its own generator: a DataLoader otherwise draws a seed from the global torch RNG at
        # every iteration start, which would shift the model's random stream on resume.
        generator=torch.Generator().manual_seed(seed),
    )
