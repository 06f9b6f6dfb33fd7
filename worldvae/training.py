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
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from worldvae.atomic import atomic_open, recover_dir, torch_save, write_json
from worldvae.configs import check_ranges, option
from worldvae.data import EpisodeDataset
from worldvae.data.loader import make_frame_loader
from worldvae.devices import resolve_device
from worldvae.images import image_grid, save_png
from worldvae.models.autoencoder import Autoencoder
from worldvae.models.config import AutoencoderConfig
from worldvae.models.io import load_model, save_model
from worldvae.precision import autocast, resolve_precision
from worldvae.rundir import RunDirLock, check_ours, entries, remove_owned
from worldvae.runs import STATE_JSON, STATE_PT, NonFiniteLossError, is_finished
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


def _read_run_config(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
        TrainConfig(**d["train"])
        AutoencoderConfig.from_dict(d["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{path} is not a valid train-vae run config ({e}); restore it, or pass --overwrite "
            "to start the run afresh"
        ) from e
    return dict(d)


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


class VAETrainer:
    """Trains one autoencoder into one run directory. Use :func:`train_autoencoder`."""

    def __init__(
        self,
        data: str | Path,
        run_dir: str | Path,
        config: TrainConfig,
        resume: bool = False,
        overwrite: bool = False,
    ):
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.last_dir = self.run_dir / "checkpoints" / "last"
        self.best_dir = self.run_dir / "checkpoints" / "best"
        self.dataset = EpisodeDataset(
            data, val_fraction=config.val_fraction, skip_corrupt=config.skip_corrupt
        )
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        logger.info(
            "training on %s in %s (--precision %s)", self.device, self.precision, config.precision
        )
        manifest = self.dataset.manifest
        # Which backend made the frames travels with the model (see envs.backends).
        self.data_info = {  # the env spec travels with the model (worldvae.envspec)
            "env_id": manifest.env_id,
            "backend": manifest.env_options.get("backend", "gymnasium"),
            "env_options": dict(manifest.env_options),
        }
        model_cfg = AutoencoderConfig.from_dict(
            {**config.model, "frame_shape": self.dataset.frame_shape}
        )
        run_cfg = self._prepare_run_dir(model_cfg, resume, overwrite)
        torch.manual_seed(config.seed)
        self.model = Autoencoder(model_cfg).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        warmup = max(1, config.warmup_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min(1.0, (s + 1) / warmup)
        )
        self.state: dict[str, Any] = {
            "epoch": 0,
            "batch_in_epoch": 0,
            "step": 0,
            "best_val_loss": math.inf,
            "epochs_without_improvement": 0,
            "history": [],
        }
        if resume and (self.last_dir / STATE_JSON).is_file():
            self._load_last()
        self.loss_fn = (
            torch.compile(self.model.training_loss) if config.compile else self.model.training_loss
        )
        self.train_loader, self.train_stream = make_frame_loader(
            self.dataset,
            "train",
            batch_size=config.batch_size,
            shuffle=True,
            seed=config.seed,
            buffer_frames=config.buffer_frames,
            drop_last=True,
            num_workers=config.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        if len(self.train_stream) == 0:
            raise ValueError(
                f"--batch-size {config.batch_size} is larger than the train split of {data} "
                f"({self.dataset.n_frames('train')} frames); lower --batch-size or collect more"
            )
        self.has_val = bool(self.dataset.split("val"))
        self.fixed_frames = torch.from_numpy(
            self.dataset.sample_frames(8, seed=config.seed, which="val" if self.has_val else "all")
        )
        write_json(self.run_dir / "config.json", run_cfg)

    # ---- run directory ---------------------------------------------------------------------
    def _prepare_run_dir(
        self, model_cfg: AutoencoderConfig, resume: bool, overwrite: bool
    ) -> dict[str, Any]:
        """Check that ``run_dir`` may be written; return the config to write once all is built.

        Nothing is written here: a run refused later in ``__init__`` leaves no file behind.
        """
        run_cfg = {
            "train": dataclasses.asdict(self.cfg),
            "model": model_cfg.to_dict(),
            "data": {
                "root": str(self.dataset.root),
                "env_id": self.dataset.manifest.env_id,
                "backend": self.data_info["backend"],
                "frames": self.dataset.n_frames(),
            },
            "resolved": {"device": str(self.device), "precision": self.precision},
            "versions": library_versions(),
        }
        cfg_path = self.run_dir / "config.json"
        if entries(self.run_dir):
            if not cfg_path.is_file():
                check_ours(self.run_dir, RUN_ENTRIES, "train-vae run")
            if overwrite:
                remove_owned(self.run_dir, RUN_ENTRIES)
            elif not resume:
                raise FileExistsError(
                    f"run directory {self.run_dir} already exists; pass --resume to continue it, "
                    "--overwrite to replace it, or choose another --out"
                )
            elif cfg_path.is_file():
                old = _read_run_config(cfg_path)
                old_train = TrainConfig(**old["train"]).resume_identity()
                if old_train != self.cfg.resume_identity() or old["model"] != model_cfg.to_dict():
                    raise ValueError(
                        f"cannot resume {self.run_dir}: it was started with another configuration "
                        f"({cfg_path}); use the same options, or --overwrite to start afresh"
                    )
        recover_dir(self.best_dir)
        if recover_dir(self.last_dir):
            logger.warning(
                "%s: the last checkpoint write was interrupted; continuing from the one before it",
                self.run_dir,
            )
        if resume and not (self.last_dir / STATE_JSON).is_file() and cfg_path.is_file():
            logger.warning("%s holds no checkpoint yet; starting from step 0", self.run_dir)
        return run_cfg

    def _save_last(self) -> None:
        def write_state(d: Path) -> None:
            torch_save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                },
                d / STATE_PT,
            )
            write_json(d / STATE_JSON, self.state)

        save_model(
            self.model,
            self.last_dir,
            extra={"step": self.state["step"], "data": self.data_info},
            write_more=write_state,
        )

    def _load_last(self) -> None:
        saved = load_model(self.last_dir, device=self.device)
        self.model.load_state_dict(saved.state_dict())
        blob = torch.load(self.last_dir / STATE_PT, map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])
        torch.set_rng_state(blob["rng_cpu"])
        if blob["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["rng_cuda"])
        self.state = json.loads((self.last_dir / STATE_JSON).read_text())
        logger.info(
            "resuming %s at epoch %d, step %d",
            self.run_dir,
            self.state["epoch"],
            self.state["step"],
        )

    # ---- loops -------------------------------------------------------------------------------
    def _validate(self) -> dict[str, float]:
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
        self.model.eval()
        recon = self.model.reconstruct(self.fixed_frames.numpy())
        self.model.train()
        grid = image_grid(np.stack([self.fixed_frames.numpy(), recon], axis=1), pad=2, scale=2)
        save_png(self.run_dir / "images" / "reconstructions.png", grid)
        writer.add_image("vae/reconstructions", grid, step, dataformats="HWC")

    def _log_epoch(self, row: dict[str, Any]) -> None:
        self.state["history"].append(row)
        with atomic_open(self.run_dir / "metrics.csv") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(self.state["history"])

    def fit(self, progress: bool = True) -> TrainResult:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir / "tb"))
        self.model.train()
        images, seconds = 0, 0.0
        stopped_early = out_of_time = False
        try:
            while self.state["epoch"] < cfg.epochs:
                epoch = self.state["epoch"]
                self.train_stream.set_epoch(epoch)
                skip = self.state["batch_in_epoch"]
                bar = tqdm(
                    total=len(self.train_stream),
                    initial=skip,
                    desc=f"epoch {epoch + 1}/{cfg.epochs}",
                    unit="batch",
                    disable=not progress,
                    dynamic_ncols=True,
                )
                sums, count = 0.0, 0
                t0 = time.perf_counter()
                for i, batch in enumerate(self.train_loader):
                    if i < skip:
                        continue
                    if cfg.max_steps is not None and self.state["step"] >= cfg.max_steps:
                        break
                    if cfg.max_seconds and seconds + time.perf_counter() - t0 >= cfg.max_seconds:
                        out_of_time = True  # this epoch ends here: validated, checkpointed
                        break
                    with autocast(self.device, self.precision):
                        loss, metrics = self.loss_fn(batch, self.state["step"])
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(
                            f"the loss became {loss.item()} at step {self.state['step']} (epoch {epoch + 1}); "
                            f"the last good checkpoint is kept in {self.last_dir}. Lower --lr, lower beta, "
                            "or resume with --resume after changing nothing if the data has a bad batch"
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.state["step"] += 1
                    self.state["batch_in_epoch"] = i + 1
                    images += len(batch)
                    sums += float(metrics["loss"]) * len(batch)
                    count += len(batch)
                    bar.update(1)
                    if self.state["step"] % cfg.log_every == 0:
                        s = self.state["step"]
                        for k in ("loss", "recon", "kl", "reg"):
                            if k in metrics:
                                writer.add_scalar(f"vae/{k}", float(metrics[k]), s)
                        if "kl_per_dim" in metrics:
                            for d, v in enumerate(metrics["kl_per_dim"].tolist()):
                                writer.add_scalar(f"vae/kl_dim/{d:02d}", v, s)
                        rate = images / max(seconds + time.perf_counter() - t0, 1e-9)
                        writer.add_scalar("charts/img_per_sec", rate, s)
                        bar.set_postfix(
                            loss=f"{float(metrics['loss']):.1f}", img_s=f"{rate:.0f}", refresh=False
                        )
                    if cfg.checkpoint_every and self.state["step"] % cfg.checkpoint_every == 0:
                        self._save_last()
                bar.close()
                seconds += time.perf_counter() - t0
                if (
                    cfg.max_steps is not None
                    and self.state["step"] >= cfg.max_steps
                    and self.state["batch_in_epoch"] < len(self.train_stream)
                ):
                    self._save_last()
                    break
                val = self._validate()
                val_loss = val.get("loss", sums / max(count, 1))
                improved = val_loss < self.state["best_val_loss"]
                if improved:
                    self.state["best_val_loss"] = val_loss
                    self.state["epochs_without_improvement"] = 0
                else:
                    self.state["epochs_without_improvement"] += 1
                self.state["epoch"] = epoch + 1
                self.state["batch_in_epoch"] = 0
                row = {
                    "epoch": epoch + 1,
                    "step": self.state["step"],
                    "train_loss": sums / max(count, 1),
                    **{f"val_{k}": v for k, v in val.items()},
                    "seconds": round(seconds, 3),
                }
                self._log_epoch(row)
                for k, v in val.items():
                    writer.add_scalar(f"val/{k}", v, self.state["step"])
                self._write_images(writer, self.state["step"])
                if improved:
                    save_model(
                        self.model,
                        self.best_dir,
                        extra={
                            "epoch": epoch + 1,
                            "val_loss": val_loss,
                            "step": self.state["step"],
                            "data": self.data_info,
                        },
                    )
                self._save_last()
                logger.info(
                    "epoch %d: train %.2f, val %s",
                    epoch + 1,
                    row["train_loss"],
                    {k: round(v, 2) for k, v in val.items()},
                )
                if out_of_time:
                    logger.info("time budget of %.0f s reached: training ends", cfg.max_seconds)
                    stopped_early = True
                    break
                if self.state["epochs_without_improvement"] >= cfg.patience:
                    logger.info("early stop: no validation improvement in %d epochs", cfg.patience)
                    stopped_early = True
                    break
        finally:
            writer.close()
        if not self.best_dir.exists():  # e.g. max_steps hit before an epoch ended
            save_model(
                self.model,
                self.best_dir,
                extra={"step": self.state["step"], "data": self.data_info},
            )
        cut = cfg.max_steps is not None and self.state["epoch"] < cfg.epochs and not stopped_early
        if not cut:
            self.state["finished"] = True
            self._save_last()
        return TrainResult(
            run_dir=self.run_dir,
            best_val_loss=self.state["best_val_loss"],
            epochs_done=self.state["epoch"],
            steps=self.state["step"],
            images_per_second=images / seconds if seconds > 0 else 0.0,
            stopped_early=stopped_early,
        )


def train_autoencoder(
    data: str | Path,
    run_dir: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train an autoencoder on the dataset at ``data`` into ``run_dir``.

    Raises:
        FileExistsError: ``run_dir`` exists and neither ``resume`` nor ``overwrite`` is set.
        RunDirBusyError: another process is writing ``run_dir``.
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
    """
    with RunDirLock(run_dir, "train-vae"):
        trainer = VAETrainer(
            data, run_dir, config or TrainConfig(), resume=resume, overwrite=overwrite
        )
        return trainer.fit(progress)
