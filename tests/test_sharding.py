"""Episode shards for data-parallel training: disjoint, complete, the same global batches."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import write_synthetic_dataset
from worldvae.data import EpisodeDataset
from worldvae.data.loader import (
    FrameStream,
    ShardedFrameStream,
    balance_shards,
    make_frame_loader,
    make_sharded_frame_loader,
)
from worldvae.distributed import check_data_shards, microbatch_seed, shards_of_rank


def _ids(batch: np.ndarray) -> set[tuple[int, int]]:
    """(episode, step) of each synthetic frame."""
    return {(int(f[0, 0, 0]), int(f[0, 1, 0])) for f in batch}


@pytest.fixture
def dataset(tmp_path) -> EpisodeDataset:
    return EpisodeDataset(write_synthetic_dataset(tmp_path / "ds", n_episodes=13), val_fraction=0)


@pytest.mark.parametrize(("n_shards", "world_size"), [(2, 2), (4, 2), (6, 3), (4, 4)])
def test_rank_sharding_covers_every_episode_once(dataset, n_shards, world_size):
    episodes = dataset.split("train")
    seen: list[int] = []
    frames: set[tuple[int, int]] = set()
    for rank in range(world_size):
        stream = ShardedFrameStream(
            episodes, n_shards, shards_of_rank(n_shards, world_size, rank), batch_size=12
        )
        seen += [e.index for e in stream.episodes]
        rank_frames = [f for step in stream for batch in step for f in _ids(batch)]
        assert len(rank_frames) == len(set(rank_frames))  # no frame twice within a rank
        assert not frames & set(rank_frames)  # nor across ranks
        frames |= set(rank_frames)
    assert sorted(seen) == sorted(e.index for e in episodes)
    # An epoch is as many whole global batches as the smallest shard fills.
    assert len(frames) == stream.steps_per_epoch * 12
    smallest = min(sum(e.n_frames for e in shard) for shard in stream.shards)
    assert stream.steps_per_epoch == smallest // (12 // n_shards)


def test_balance_shards_is_even_and_deterministic(dataset):
    shards = balance_shards(dataset.episodes, 4)
    sizes = [sum(e.n_frames for e in s) for s in shards]
    assert max(sizes) - min(sizes) <= max(e.n_frames for e in dataset.episodes)
    assert shards == balance_shards(tuple(reversed(dataset.episodes)), 4)
    with pytest.raises(ValueError, match="collect at least 20 episodes"):
        balance_shards(dataset.episodes, 20)


def test_ranks_together_see_the_single_process_batches(dataset):
    """The union of the ranks' microbatches at each step is the one-process global batch."""
    episodes = dataset.split("train")
    one = ShardedFrameStream(episodes, 4, batch_size=8, seed=3)
    ranks = [
        ShardedFrameStream(episodes, 4, shards_of_rank(4, 2, r), batch_size=8, seed=3)
        for r in (0, 1)
    ]
    for s in [one, *ranks]:
        s.set_epoch(2)
    steps = list(one)
    per_rank = [list(r) for r in ranks]
    assert len(steps) == len(one) == len(per_rank[0]) == len(per_rank[1]) > 0
    for t, step in enumerate(steps):
        joined = per_rank[0][t] + per_rank[1][t]
        for a, b in zip(step, joined, strict=True):
            np.testing.assert_array_equal(a, b)


def test_one_shard_orders_like_the_plain_stream(dataset):
    episodes = dataset.split("train")
    plain = FrameStream(episodes, batch_size=8, seed=1, drop_last=True, buffer_frames=50)
    sharded = ShardedFrameStream(episodes, 1, batch_size=8, seed=1, buffer_frames=50)
    for s in (plain, sharded):
        s.set_epoch(1)
    a = list(plain)
    b = [step[0] for step in sharded]
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_sharded_loader_yields_tensor_lists_and_epochs_differ(dataset):
    loader, stream = make_sharded_frame_loader(dataset, 2, [1], batch_size=8, seed=0)
    stream.set_epoch(0)
    first = [step[0].clone() for step in loader]
    stream.set_epoch(1)
    second = [step[0] for step in loader]
    assert first[0].shape == (4, 16, 16, 3) and first[0].dtype.is_floating_point is False
    assert len(first) == len(stream)
    assert not all(bool((x == y).all()) for x, y in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="at most one worker"):
        make_sharded_frame_loader(dataset, 2, num_workers=2)
    plain, _ = make_frame_loader(dataset, batch_size=8)
    assert next(iter(plain)).shape == (8, 16, 16, 3)


def test_data_shard_checks_name_the_fix():
    check_data_shards(4, 2, 128)
    with pytest.raises(ValueError, match="--data-shards 2"):
        check_data_shards(3, 2, 128)
    with pytest.raises(ValueError, match="multiple of 4"):
        check_data_shards(4, 2, 30)
    with pytest.raises(ValueError, match="multiple of the number of ranks"):
        shards_of_rank(3, 2, 0)
    assert shards_of_rank(6, 3, 2) == [4, 5]
    assert microbatch_seed(0, 5, 1) == microbatch_seed(0, 5, 1) != microbatch_seed(0, 5, 2)
