"""Data-parallel training steps: 2 gloo ranks give the weights of 1 process at the same global
batch (CPU, float tolerance), and a non-finite loss stops every rank together."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp_mp
from safetensors.torch import load_file, save_file

from worldvae.distributed import DistContext, sharded_backward, wrap_for_ranks
from worldvae.vae import Autoencoder, AutoencoderConfig

STEPS, BATCH, SHARDS, SEED = 3, 8, 2, 7


def _model() -> Autoencoder:
    torch.manual_seed(0)
    return Autoencoder(
        AutoencoderConfig(kind="vae", frame_shape=(16, 16, 3), latent_dim=4, channels=(8, 16))
    )


def _global_batch(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.randint(0, 256, (BATCH, 16, 16, 3), dtype=torch.uint8, generator=g)


def _train(ctx: DistContext, shard_ids: list[int], poison_step: int | None = None) -> Autoencoder:
    """STEPS AdamW steps; this process computes the microbatches of ``shard_ids``."""
    torch.set_num_threads(1)
    model = _model()
    loss_fn = wrap_for_ranks(model, ctx, torch.device("cpu"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    per = BATCH // SHARDS
    for step in range(STEPS):
        frames = _global_batch(step)
        micro = [frames[s * per : (s + 1) * per] for s in shard_ids]
        if step == poison_step and ctx.rank == 1:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        opt.zero_grad(set_to_none=True)
        result = sharded_backward(loss_fn, micro, step, shard_ids, SEED, ctx, torch.device("cpu"))
        if not result.finite:
            raise FloatingPointError(f"rank {ctx.rank}: non-finite loss at step {step}")
        opt.step()
    return model


def _rank_main(rank: int, world: int, port: int, out: str, poison: bool) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world, backend="gloo")
    per_rank = SHARDS // world
    shard_ids = list(range(rank * per_rank, (rank + 1) * per_rank))
    try:
        try:
            model = _train(ctx, shard_ids, poison_step=1 if poison else None)
            save_file(model.state_dict(), str(Path(out) / f"rank{rank}.safetensors"))
        except FloatingPointError as e:  # every rank stops at the same step
            (Path(out) / f"rank{rank}.stopped").write_text(str(e))
        dist.barrier()  # no rank closes its connections while the other still reads (as the trainer)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(tmp_path: Path, poison: bool = False) -> None:
    tmp_mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path), poison), nprocs=2, join=True)


def test_two_gloo_ranks_equal_one_process_at_the_same_global_batch(tmp_path):
    one = _train(DistContext(), list(range(SHARDS))).state_dict()
    _spawn(tmp_path)
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert got.keys() == one.keys()
        for k in one:
            torch.testing.assert_close(got[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    moved = any(not torch.equal(one[k], _model().state_dict()[k]) for k in one)
    assert moved  # the steps did train


@pytest.mark.slow  # about 7 s: two spawned ranks
def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    _spawn(tmp_path, poison=True)
    assert "non-finite loss at step 1" in (tmp_path / "rank0.stopped").read_text()
    assert "non-finite loss at step 1" in (tmp_path / "rank1.stopped").read_text()


def test_sharded_backward_refuses_a_shard_count_mismatch():
    model = _model()
    with pytest.raises(ValueError, match="one per shard"):
        sharded_backward(
            model.training_loss,
            [_global_batch(0)],
            0,
            [0, 1],
            SEED,
            DistContext(),
            torch.device("cpu"),
        )
