"""Data-parallel training across processes started by ``torchrun``.

``torchrun --nproc-per-node N -m worldvae train-vae ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment. Each
copy calls :func:`init_distributed`, which joins the process group (gloo on the CPU, NCCL on
CUDA) and returns a :class:`DistContext`; a plain ``python -m worldvae`` run gets a context of
one rank and touches no process group at all.

The trainer's data order is a function of ``(seed, epoch, data_shards)`` alone: the training
episodes are split into ``data_shards`` fixed shards, each step takes ``batch_size /
data_shards`` frames from every shard, and each rank reads a contiguous block of
``data_shards / world_size`` shards (:func:`shards_of_rank`). Any number of ranks that divides
``data_shards`` therefore trains on the same global batches, and a run can resume on another
number of ranks.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the training processes.

    Attributes:
        rank: this process's global rank, ``0 <= rank < world_size``.
        world_size: number of processes training together (1 without torchrun).
        local_rank: rank on this node; picks the CUDA device ``cuda:local_rank``.
        backend: ``"gloo"`` or ``"nccl"`` when a process group is up, else None.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and pictures; the others only train."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum ``values`` (any shape) over ranks; the input is not modified."""
        if not self.is_distributed:
            return values.clone()
        out = values.detach().clone().to(self.collective_device)
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.to(values.device)

    def all_true(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank (one tiny all-reduce)."""
        return self.all_true_each([flag])[0]

    def all_true_each(self, flags: list[bool]) -> list[bool]:
        """Each flag AND-ed over ranks, all in one all-reduce (every rank passes as many)."""
        if not self.is_distributed:
            return list(flags)
        t = torch.tensor([int(f) for f in flags], dtype=torch.int32, device=self.collective_device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return [bool(v) for v in t.tolist()]

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (picklable builtins only: numbers, dicts, lists)."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.collective_device)
        return box[0]

    @property
    def collective_device(self) -> torch.device:
        """NCCL exchanges CUDA tensors, gloo CPU tensors."""
        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True inside a process started by ``torchrun`` (or any launcher setting its variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join the process group that ``torchrun`` prepared, or return a one-rank context.

    Args:
        device: the trainer's device option. ``"auto"`` and ``"cuda"`` mean NCCL with one GPU
            per process (``cuda:LOCAL_RANK``) when CUDA is present; ``"cpu"`` means gloo.
        timeout_s: how long a collective waits for a missing rank before failing (a dead rank
            then ends the job instead of hanging it).

    Raises:
        ValueError: more processes on a node than it has GPUs, or a CUDA device asked for
            without CUDA.
    """
    if not launched_by_torchrun():
        return DistContext()
    world_size = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available() and not device.startswith("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA but torch sees no CUDA device; use --device cpu "
            "(gloo) or run on a CUDA machine"
        )
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"local rank {local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                "start at most that many processes per node (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def shutdown_distributed(ctx: DistContext) -> None:
    """Leave the process group (a no-op for a one-rank context)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed(device: str = "auto") -> Iterator[DistContext]:
    """:func:`init_distributed` for the length of a ``with`` block."""
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        shutdown_distributed(ctx)


def resolve_rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """``cuda`` -> ``cuda:LOCAL_RANK`` for an NCCL context; anything else unchanged."""
    if ctx.backend == "nccl" and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def check_data_shards(data_shards: int, world_size: int, batch_size: int) -> None:
    """Raise a ValueError naming the fix unless the shards split evenly over ranks and batch."""
    if data_shards < 1:
        raise ValueError(f"data_shards must be >= 1, got {data_shards}")
    if data_shards % world_size:
        raise ValueError(
            f"data_shards={data_shards} does not split over {world_size} ranks; use a multiple "
            f"of the number of ranks (--data-shards {world_size}, or e.g. {2 * world_size} to "
            "keep the option of resuming on more ranks)"
        )
    if batch_size % data_shards:
        raise ValueError(
            f"batch_size={batch_size} does not split over data_shards={data_shards}; each shard "
            f"gives batch_size / data_shards frames per step; use a batch size that is a "
            f"multiple of {data_shards}"
        )


def shards_of_rank(data_shards: int, world_size: int, rank: int) -> list[int]:
    """The contiguous block of shard ids that ``rank`` reads: ``data_shards / world_size`` ids."""
    if data_shards % world_size or not 0 <= rank < world_size:
        raise ValueError(
            f"cannot give rank {rank} of {world_size} a share of {data_shards} shards; "
            "data_shards must be a multiple of the number of ranks"
        )
    per = data_shards // world_size
    return list(range(rank * per, (rank + 1) * per))


def microbatch_seed(seed: int, step: int, shard: int) -> int:
    """Seed of the random draws (noise, masks, reparameterisation) of one shard's microbatch.

    Fixed by ``(seed, step, shard)`` so that a shard's draws do not depend on which rank
    computes it, nor on how many ranks there are.
    """
    return int(np.random.SeedSequence([seed, step, shard]).generate_state(1, np.uint64)[0] >> 1)


class LossModule(torch.nn.Module):
    """A model's ``training_loss(frames, step)`` as ``forward``, so that DDP can wrap it.

    ``loss_fn`` replaces the model's own method (e.g. its ``torch.compile`` version).
    """

    def __init__(self, model: torch.nn.Module, loss_fn: Any = None):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn or model.training_loss

    def forward(self, frames: torch.Tensor, step: int) -> Any:
        return self.loss_fn(frames, step)  # type: ignore[operator]


def wrap_for_ranks(
    model: torch.nn.Module, ctx: DistContext, device: torch.device, compile: bool = False
) -> Any:
    """What a training step calls: DDP over :class:`LossModule` under torchrun, else the
    model's own ``training_loss``. Both take ``(frames, step)`` and return ``(loss, metrics)``.

    ``compile`` compiles the model's ``training_loss`` (inside DDP, so that DDP's
    ``no_sync`` still reaches the wrapper).
    """
    own: Any = model.training_loss
    loss_fn = torch.compile(own) if compile else own
    if not ctx.is_distributed:
        return loss_fn
    return torch.nn.parallel.DistributedDataParallel(
        LossModule(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None
    )


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block with the torch RNG seeded to ``seed``, then restore the outer state."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@dataclass
class ShardedStep:
    """What :func:`sharded_backward` did: metrics averaged over this rank's microbatches, and
    whether every rank's losses were finite (if not, ``bad_loss`` is this rank's first bad
    value or nan, and no gradient was reduced)."""

    metrics: dict[str, torch.Tensor]
    finite: bool
    bad_loss: float = float("nan")


def sharded_backward(
    loss_fn: Any,
    micro: list[torch.Tensor],
    step: int,
    shard_ids: list[int],
    seed: int | None,
    ctx: DistContext,
    device: torch.device,
    amp: Any = None,
) -> ShardedStep:
    """Forward and backward over this rank's microbatches of one global batch.

    ``micro[j]`` is shard ``shard_ids[j]``'s uint8 ``(B / data_shards, H, W, C)`` microbatch;
    its random draws come from :func:`microbatch_seed` ``(seed, step, shard)`` (``seed=None``:
    from the global torch RNG, as an unsharded run draws them), and its loss
    is divided by the number of microbatches. Under DDP the gradients are all-reduced only on
    the last microbatch (``no_sync`` before it) and averaged over ranks, so the gradient is
    the mean over all ``data_shards`` microbatches whatever the number of ranks. The finite
    check is agreed by every rank before the last backward, so either all ranks reduce or
    none does (none waits at a collective the others skipped).

    Args:
        loss_fn: from :func:`wrap_for_ranks`; ``loss_fn(frames, step) -> (loss, metrics)``.
        amp: a context manager factory for autocast (None: full precision).
    """
    k = len(micro)
    if k != len(shard_ids) or k == 0:
        raise ValueError(f"got {k} microbatches for shards {shard_ids}; give one per shard")
    ddp = loss_fn if isinstance(loss_fn, torch.nn.parallel.DistributedDataParallel) else None
    totals: dict[str, torch.Tensor] = {}
    finite, bad_loss = True, float("nan")
    for j, batch in enumerate(micro):
        last = j == k - 1
        with ddp.no_sync() if ddp is not None and not last else _nothing():
            draws = (
                _nothing()
                if seed is None
                else seeded(microbatch_seed(seed, step, shard_ids[j]), device)
            )
            with draws, (amp or _nothing)():
                loss, metrics = loss_fn(batch, step)
            if finite and not bool(torch.isfinite(loss)):
                finite, bad_loss = False, float(loss.detach())
            if last:
                finite = ctx.all_true(finite)
            if not finite:
                continue  # no backward: under DDP every rank skips the reduction together
            (loss / k if k > 1 else loss).backward()
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + value.detach().float() / k
    return ShardedStep(totals, finite, bad_loss)


@contextmanager
def _nothing() -> Iterator[None]:
    yield
