"""Training an autoencoder on an episode dataset, resumable and safe against NaNs.

A run directory holds::

    config.json                 resolved training + model configuration, dataset, versions
    checkpoints/last/           config.json, model.safetensors, trainer_state.{pt,json}
    checkpoints/best/           config.json, model.safetensors (lowest validation loss)
    metrics.csv                 one row per epoch
    images/reconstructions.png  input | output on fixed validation frames, each epoch
    tb/                         TensorBoard: vae/recon, vae/kl, vae/kl_dim/NN, images

On the CPU the same seed gives the same weights whether or not the run was killed and resumed:
the data order is a function of (seed, epoch), the torch RNG state is checkpointed, and a resume
mid-epoch skips the batches already used.

Under ``torchrun`` (see :mod:`worldvae.distributed`) every rank reads its own fixed shards of
the training episodes and DistributedDataParallel averages the gradients; rank 0 alone writes
the run directory. With ``data_shards > 1`` each shard's microbatch draws its noise from a seed
of ``(seed, step, shard)``, so the weights do not depend on the number of ranks, and a run can
resume on any number of ranks that divides ``data_shards``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from worldvae.checkpoints import (
    NonFiniteLossError,
    RunCheckpoints,
    close_epoch,
    is_finished,
    new_trainer_state,
    read_run_config,
    stopped_mid_epoch,
    write_metrics_csv,
)
from worldvae.config_fields import check_ranges, option
from worldvae.data import EpisodeDataset
from worldvae.data.dataset import open_dataset
from worldvae.data.loader import make_frame_loader, make_sharded_frame_loader
from worldvae.data.manifest import Manifest
from worldvae.devices import resolve_device
from worldvae.distributed import (
    DistContext,
    check_data_shards,
    resolve_rank_device,
    sharded_backward,
    shards_of_rank,
    wrap_for_ranks,
)
from worldvae.envspec import EnvSpec, read_env_spec
from worldvae.footprint import autoencoder_bytes, check_fits
from worldvae.images import save_png
from worldvae.precision import autocast, resolve_precision
from worldvae.records import check_dataset_frames, record_path
from worldvae.rundir import RunDirLock
from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import AutoencoderConfig
from worldvae.versions import library_versions

logger = logging.getLogger(__name__)

__all__ = [
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "VAETrainer",
    "is_finished",
    "train_autoencoder",
]
# What a run directory holds; ``--overwrite`` removes these and nothing else.
RUN_ENTRIES = ("config.json", "checkpoints", "metrics.csv", "images", "tb", "inspect")


def _checked_run_config(d: dict[str, Any]) -> dict[str, Any]:
    """A run's ``config.json`` as read, checked (KeyError, TypeError, ValueError if bad)."""
    d["train"].setdefault("data_shards", 1)  # runs written before sharding read one shard
    TrainConfig(**d["train"])
    AutoencoderConfig.from_dict(d["model"])
    return d


def _read_run_config(path: Path) -> dict[str, Any]:
    return read_run_config(path, "train-vae run", _checked_run_config)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``model`` holds everything but ``frame_shape``, which the data decides."""

    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = option(10, "passes over the train split", 1, 100_000)
    batch_size: int = option(128, "frames per step", 1, 1_000_000)
    lr: float = option(1e-3, "peak learning rate (AdamW)", 0.0, 10.0, low_open=True)
    weight_decay: float = option(0.0, "AdamW weight decay", 0.0, 10.0)
    warmup_steps: int = option(100, "linear learning-rate warm-up, in steps", 0, 10**9)
    grad_clip: float = option(100.0, "gradient norm clip (0: off)", 0.0, 1e9)
    val_fraction: float = option(0.1, "share of episodes held out for validation", 0.0, 0.9)
    seed: int = option(0, "seed of the weights and the data order", 0, 2**32 - 1)
    device: str = option("auto", "auto | cpu | cuda[:N]")
    precision: str = option(  # auto: bf16 autocast on CUDA and AMX CPUs, else fp32
        "auto", "training precision", choices=("auto", "fp32", "bf16")
    )
    compile: bool = option(False, "torch.compile the training step")
    num_workers: int = option(0, "DataLoader worker processes", 0, 256)
    buffer_frames: int = option(50_000, "shuffle buffer, in frames", 1, 10**9)
    patience: int = option(5, "early stopping, in epochs without improvement", 1, 100_000)
    checkpoint_every: int = option(  # 0: at the end of each epoch only
        0, "also checkpoint every N steps (0: each epoch only)", 0, 10**9
    )
    log_every: int = option(20, "TensorBoard scalars every N steps", 1, 10**9)
    max_steps: int | None = option(None, "stop after N steps (resumable)", 1, 10**12)
    max_seconds: float | None = option(
        None, "training time budget of one invocation, in seconds; ends the run", 0.0, 1e9
    )
    skip_corrupt: bool = option(False, "skip unreadable episode files")
    # The data order depends on the shards, not on the number of ranks (worldvae.distributed).
    data_shards: int = option(
        0,
        "fixed episode shards, each giving batch_size / data_shards frames a step; a multiple "
        "of the torchrun ranks, and a run resumes on any rank count dividing it (0: one shard "
        "per rank at the start, or the run's own on --resume)",
        0,
        1_000_000,
    )

    def __post_init__(self) -> None:
        check_ranges(self)

    def resume_identity(self) -> dict[str, Any]:
        """Fields that must match to resume (epochs, patience, logging may change)."""
        d = dataclasses.asdict(self)
        for k in (
            "epochs",
            "patience",
            "log_every",
            "num_workers",
            "max_steps",
            "max_seconds",
            "device",
            "compile",
            "model",  # compared as the resolved model config
        ):
            d.pop(k)
        return d


@dataclass
class TrainResult:
    run_dir: Path
    best_val_loss: float
    epochs_done: int
    steps: int
    images_per_second: float
    stopped_early: bool


@dataclass
class _EpochTotals:
    """What one pass over the training stream did (this rank's frames)."""

    loss_sum: float = 0.0
    frames: int = 0
    out_of_time: bool = False


class VAETrainer:
    """Trains one autoencoder into one run directory. Use :func:`train_autoencoder`.

    ``dist`` is this process's place among ``torchrun`` ranks (default: a single process);
    every rank builds a trainer with the same arguments.
    """

    def __init__(
        self,
        data: str | Path | EpisodeDataset,
        run_dir: str | Path,
        config: TrainConfig,
        resume: bool = False,
        overwrite: bool = False,
        dist: DistContext | None = None,
    ):
        self.dist = dist or DistContext()
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.dataset = open_dataset(data, config.val_fraction, config.skip_corrupt)
        self.device = resolve_rank_device(self.dist, resolve_device(config.device))
        self.precision = resolve_precision(config.precision, self.device)
        logger.info(
            "training on %s in %s (--precision %s)", self.device, self.precision, config.precision
        )
        manifest = self.dataset.manifest
        # Which backend made the frames travels with the model (see envs.backends).
        env_spec = manifest.env_spec
        if resume and not overwrite:  # a run continues on the frames it started on
            check_dataset_frames(
                env_spec, str(self.dataset), _recorded_spec(self.run_dir), self.run_dir
            )
        self.data_info = {  # the env spec travels with the model (worldvae.envspec)
            **env_spec.to_dict(),
            "backend": env_spec.backend,
        }
        self.checkpoints = RunCheckpoints(
            self.run_dir, {"data": self.data_info}, writes=self.dist.is_main
        )
        model_cfg = AutoencoderConfig.from_dict(
            {**config.model, "frame_shape": self.dataset.frame_shape}
        )
        run_cfg = self._prepare_run_dir(model_cfg, resume, overwrite)
        config = self.cfg  # data_shards resolved
        torch.manual_seed(config.seed)
        self.model = Autoencoder(model_cfg).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer, self.scheduler = self._optimizer()
        # Nothing below draws from the torch RNG that this restores (the loaders seed their own).
        self.state = self.checkpoints.restore(
            self.model, self.optimizer, self.scheduler, new_trainer_state("best_val_loss"), resume
        )
        self.loss_fn = wrap_for_ranks(self.model, self.dist, self.device, compile=config.compile)
        self.sharded = config.data_shards > 1
        self.shard_ids = shards_of_rank(config.data_shards, self.dist.world_size, self.dist.rank)
        self.train_loader, self.train_stream = self._train_loader()
        if len(self.train_stream) == 0:
            raise ValueError(
                f"--batch-size {config.batch_size} is larger than the train split of {data} "
                f"({self.dataset.n_frames('train')} frames); lower --batch-size or collect more"
            )
        self.has_val = bool(self.dataset.split("val"))
        self.fixed_frames = torch.from_numpy(
            self.dataset.sample_frames(8, seed=config.seed, which="val" if self.has_val else "all")
        )
        self.seconds = 0.0  # training time of this invocation
        self.images = 0  # frames trained on in this invocation, all ranks
        self.checkpoints.write_run_config(run_cfg)

    @property
    def last_dir(self) -> Path:
        """``checkpoints/last``: what a resume continues from."""
        return self.checkpoints.last_dir

    @property
    def best_dir(self) -> Path:
        """``checkpoints/best``: the model with the lowest validation loss."""
        return self.checkpoints.best_dir

    def _optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        """AdamW with a linear learning-rate warm-up over ``warmup_steps``."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        warmup = max(1, cfg.warmup_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warmup)
        )
        return optimizer, scheduler

    def _train_loader(self) -> tuple[Any, Any]:
        """One stream of whole batches, or this rank's shards' microbatches when sharded."""
        cfg = self.cfg
        pin = self.device.type == "cuda"
        if not self.sharded:
            return make_frame_loader(
                self.dataset,
                "train",
                batch_size=cfg.batch_size,
                shuffle=True,
                seed=cfg.seed,
                buffer_frames=cfg.buffer_frames,
                drop_last=True,
                num_workers=cfg.num_workers,
                pin_memory=pin,
            )
        if cfg.num_workers > 1:
            logger.info("a sharded run reads with one worker process (--num-workers 1)")
        return make_sharded_frame_loader(
            self.dataset,
            cfg.data_shards,
            self.shard_ids,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            buffer_frames=cfg.buffer_frames,
            num_workers=min(cfg.num_workers, 1),
            pin_memory=pin,
        )

    # ---- run directory ---------------------------------------------------------------------
    def _resolve_data_shards(self, resume: bool, overwrite: bool) -> None:
        """``data_shards=0``: the run's own on resume, else one shard per rank."""
        cfg_path = self.run_dir / "config.json"
        if self.cfg.data_shards == 0:
            stored = None
            if resume and not overwrite and cfg_path.is_file():
                stored = _read_run_config(cfg_path)["train"]["data_shards"]
            shards = int(stored or self.dist.world_size)
            self.cfg = dataclasses.replace(self.cfg, data_shards=shards)
        check_data_shards(self.cfg.data_shards, self.dist.world_size, self.cfg.batch_size)

    def _prepare_run_dir(
        self, model_cfg: AutoencoderConfig, resume: bool, overwrite: bool
    ) -> dict[str, Any]:
        """Check that ``run_dir`` may be written; return the config to write once all is built.

        Nothing is written here: a run refused later in ``__init__`` leaves no file behind.
        Every rank checks; rank 0 alone repairs or removes, once all have looked.
        """
        self._resolve_data_shards(resume, overwrite)
        run_cfg = {
            "train": dataclasses.asdict(self.cfg),
            "model": model_cfg.to_dict(),
            "data": {
                "root": record_path(self.dataset.root),
                "env_id": self.dataset.manifest.env_id,
                "backend": self.data_info["backend"],
                "frames": self.dataset.n_frames(),
            },
            "resolved": {
                "device": str(self.device),
                "precision": self.precision,
                "ranks": self.dist.world_size,
            },
            "versions": library_versions(),
        }

        def same(old: dict[str, Any]) -> bool:
            old_train = TrainConfig(**_checked_run_config(old)["train"]).resume_identity()
            return bool(
                old_train == self.cfg.resume_identity() and old["model"] == model_cfg.to_dict()
            )

        self.checkpoints.prepare(
            resume,
            overwrite,
            same,
            RUN_ENTRIES,
            "train-vae run",
            keep_foreign=True,  # files beside a run's own are kept, and never removed
            sync=self.dist.barrier,
        )
        return run_cfg

    def _save_last(self) -> None:
        self.checkpoints.save_last(self.model, self.optimizer, self.scheduler, self.state)

    def _save_best(self, **info: Any) -> None:
        self.checkpoints.save_best(self.model, {**info, "step": self.state["step"]})

    # ---- steps -------------------------------------------------------------------------------
    def _train_step(self, micro: list[torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        """One optimiser step on this rank's microbatches (one whole batch unless sharded).

        Gradients are averaged over every microbatch of the global batch, whatever the number
        of ranks. Returns the metrics averaged over this rank's microbatches.

        Raises:
            NonFiniteLossError: the loss was NaN/inf on any rank (no update is made).
        """
        step = self.state["step"]
        self.optimizer.zero_grad(set_to_none=True)
        done = sharded_backward(
            self.loss_fn,
            micro,
            step,
            self.shard_ids,
            self.cfg.seed if self.sharded else None,
            self.dist,
            self.device,
            amp=lambda: autocast(self.device, self.precision),
        )
        if not done.finite:
            raise NonFiniteLossError(
                f"the loss became {done.bad_loss} at step {step} (epoch {epoch + 1}); "
                f"the last good checkpoint is kept in {self.last_dir}. Lower --lr, lower beta, "
                "or resume with --resume after changing nothing if the data has a bad batch"
            )
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.state["step"] += 1
        return done.metrics

    def _log_step(self, writer: Any, metrics: dict[str, torch.Tensor], rate: float) -> None:
        s = self.state["step"]
        for k in ("loss", "recon", "kl", "reg"):
            if k in metrics:
                writer.add_scalar(f"vae/{k}", float(metrics[k]), s)
        if "kl_per_dim" in metrics:
            for d, v in enumerate(metrics["kl_per_dim"].tolist()):
                writer.add_scalar(f"vae/kl_dim/{d:02d}", v, s)
        writer.add_scalar("charts/img_per_sec", rate, s)

    def _train_epoch(self, epoch: int, writer: Any, progress: bool) -> _EpochTotals:
        """Train on the rest of epoch ``epoch``; stops early at ``max_steps`` or the budget.

        Under torchrun the ranks agree each step that all still have data and time left, so
        that no rank waits at a collective that another has left.
        """
        cfg = self.cfg
        self.train_stream.set_epoch(epoch)
        skip = self.state["batch_in_epoch"]
        totals = _EpochTotals()
        bar = tqdm(
            total=len(self.train_stream),
            initial=skip,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not progress or not self.dist.is_main,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        try:
            for i, batch in enumerate(self.train_loader):
                if i < skip:
                    continue
                if cfg.max_steps is not None and self.state["step"] >= cfg.max_steps:
                    break
                elapsed = self.seconds + time.perf_counter() - t0
                in_time = not cfg.max_seconds or elapsed < cfg.max_seconds
                has_data, in_time = self.dist.all_true_each([True, in_time])
                if not has_data:
                    break  # another rank's shard ran dry (unreadable episodes skipped)
                if not in_time:
                    totals.out_of_time = True  # this epoch ends here: validated, checkpointed
                    break
                micro = batch if self.sharded else [batch]
                metrics = self._train_step(micro, epoch)
                self.state["batch_in_epoch"] = i + 1
                frames = sum(len(b) for b in micro)
                self.images += frames * self.dist.world_size
                totals.loss_sum += float(metrics["loss"]) * frames
                totals.frames += frames
                bar.update(1)
                if self.state["step"] % cfg.log_every == 0 and writer is not None:
                    rate = self.images / max(self.seconds + time.perf_counter() - t0, 1e-9)
                    self._log_step(writer, metrics, rate)
                    bar.set_postfix(
                        loss=f"{float(metrics['loss']):.1f}", img_s=f"{rate:.0f}", refresh=False
                    )
                if cfg.checkpoint_every and self.state["step"] % cfg.checkpoint_every == 0:
                    self._save_last()
            else:
                self.dist.all_true_each([False, True])  # this rank's data ended: tell the others
        finally:
            bar.close()
            self.seconds += time.perf_counter() - t0
        return totals

    def _validate(self) -> dict[str, float]:
        """Validation means on rank 0, the same numbers on every rank."""
        if not self.dist.is_main:
            return dict(self.dist.broadcast_object(None))
        result = self._validate_here()
        self.dist.broadcast_object(result)
        return result

    def _validate_here(self) -> dict[str, float]:
        if not self.has_val:
            return {}
        loader, _ = make_frame_loader(
            self.dataset,
            "val",
            batch_size=self.cfg.batch_size,
            shuffle=False,
            buffer_frames=self.cfg.buffer_frames,
        )
        sums: dict[str, float] = {}
        n = 0
        self.model.eval()
        with (
            torch.random.fork_rng(devices=[]),
            torch.no_grad(),
            autocast(self.device, self.precision),
        ):
            torch.manual_seed(self.cfg.seed)
            for batch in loader:
                _, metrics = self.model.training_loss(batch)
                for k in ("loss", "recon", "kl"):
                    if k in metrics:
                        sums[k] = sums.get(k, 0.0) + float(metrics[k]) * len(batch)
                n += len(batch)
        self.model.train()
        return {k: v / n for k, v in sums.items()}

    def _write_images(self, writer: Any, step: int) -> None:
        from worldvae.diagnostics import reconstruction_grid

        self.model.eval()
        grid = reconstruction_grid(self.model, self.fixed_frames.numpy())
        self.model.train()
        save_png(self.run_dir / "images" / "reconstructions.png", grid)
        writer.add_image("vae/reconstructions", grid, step, dataformats="HWC")

    def _log_epoch(self, row: dict[str, Any]) -> None:
        self.state["history"].append(row)
        if self.dist.is_main:
            write_metrics_csv(self.run_dir / "metrics.csv", self.state["history"])

    def _end_epoch(self, epoch: int, totals: _EpochTotals, writer: Any) -> bool:
        """Validate, log, draw, checkpoint; True when training should stop (early stop or
        time budget)."""
        loss_sum, frames = totals.loss_sum, totals.frames
        if self.dist.is_distributed:
            both = self.dist.all_reduce_sum(torch.tensor([loss_sum, frames], dtype=torch.float64))
            loss_sum, frames = float(both[0]), int(both[1])
        train_loss = loss_sum / max(frames, 1)
        val = self._validate()
        val_loss = val.get("loss", train_loss)
        improved = close_epoch(self.state, epoch, val_loss, "best_val_loss")
        row = {
            "epoch": epoch + 1,
            "step": self.state["step"],
            "train_loss": train_loss,
            **{f"val_{k}": v for k, v in val.items()},
            "seconds": round(self.seconds, 3),
        }
        self._log_epoch(row)
        if writer is not None:
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, self.state["step"])
            self._write_images(writer, self.state["step"])
        if improved:
            self._save_best(epoch=epoch + 1, val_loss=val_loss)
        self._save_last()
        logger.info(
            "epoch %d: train %.2f, val %s",
            epoch + 1,
            train_loss,
            {k: round(v, 2) for k, v in val.items()},
        )
        if totals.out_of_time:
            logger.info("time budget of %.0f s reached: training ends", self.cfg.max_seconds)
            return True
        if self.state["epochs_without_improvement"] >= self.cfg.patience:
            logger.info("early stop: no validation improvement in %d epochs", self.cfg.patience)
            return True
        return False

    def fit(self, progress: bool = True) -> TrainResult:
        """Train until ``epochs``, early stop, ``max_steps`` or ``max_seconds``."""
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir / "tb")) if self.dist.is_main else None
        self.model.train()
        stopped_early = False
        try:
            while self.state["epoch"] < cfg.epochs:
                epoch = self.state["epoch"]
                totals = self._train_epoch(epoch, writer, progress)
                if stopped_mid_epoch(self.state, cfg.max_steps, len(self.train_stream)):
                    self._save_last()
                    break
                if self._end_epoch(epoch, totals, writer):
                    stopped_early = True
                    break
        finally:
            if writer is not None:
                writer.close()
        self.checkpoints.finish(
            self.model,
            self.optimizer,
            self.scheduler,
            self.state,
            cfg.epochs,
            cfg.max_steps,
            stopped_early,
        )
        self.dist.barrier()  # rank 0's files are complete when any rank returns
        return TrainResult(
            run_dir=self.run_dir,
            best_val_loss=self.state["best_val_loss"],
            epochs_done=self.state["epoch"],
            steps=self.state["step"],
            images_per_second=self.images / self.seconds if self.seconds > 0 else 0.0,
            stopped_early=stopped_early,
        )


def _recorded_spec(run_dir: Path) -> EnvSpec | None:
    """The env spec a run's checkpoints record (its best, else its last; None for neither)."""
    return read_env_spec(run_dir) or read_env_spec(run_dir / "checkpoints" / "last")


def train_autoencoder(
    data: str | Path | EpisodeDataset,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train an autoencoder on the dataset at ``data`` into ``run_dir``.

    ``dist`` (from :func:`worldvae.distributed.init_distributed`) makes this one rank of a
    ``torchrun`` job; every rank calls this function with the same arguments, and rank 0 alone
    holds the run directory's lock and writes into it.

    Raises:
        FileExistsError: ``run_dir`` exists and neither ``resume`` nor ``overwrite`` is set.
        RunDirBusyError: another process is writing ``run_dir``.
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        InsufficientMemoryError: the model would need more memory than the device has
            (nothing is written).
    """
    main = dist is None or dist.is_main
    config = config or TrainConfig()
    check_autoencoder_fits(data, config, dist)
    with RunDirLock(run_dir, "train-vae") if main else nullcontext():
        trainer = VAETrainer(data, run_dir, config, resume=resume, overwrite=overwrite, dist=dist)
        return trainer.fit(progress)


def check_autoencoder_fits(
    data: str | Path | EpisodeDataset, config: TrainConfig, dist: DistContext | None = None
) -> None:
    """Refuse to train when the model would need more memory than its device (this rank's)
    has; the frame shape is read from the dataset ``data``. A dataset or model the trainer
    would refuse is left to it (its messages, in its order).

    Raises:
        InsufficientMemoryError: naming what it would need and what is available.
    """
    try:
        source = data if isinstance(data, EpisodeDataset) else Manifest.load(data)
        frame_shape = source.frame_shape
        model = AutoencoderConfig.from_dict({**config.model, "frame_shape": frame_shape})
        need = autoencoder_bytes(model, config.batch_size)
        device = resolve_rank_device(dist or DistContext(), resolve_device(config.device))
    except (OSError, ValueError):
        return
    check_fits(
        need,
        device,
        f"the autoencoder with --channels {','.join(map(str, model.channels))}, --latent-dim "
        f"{model.latent_dim} on {frame_shape[0]}x{frame_shape[1]} frames (--batch-size "
        f"{config.batch_size})",
        "lower --channels (the weights grow with the product of neighbouring channels) or "
        "--batch-size",
    )
