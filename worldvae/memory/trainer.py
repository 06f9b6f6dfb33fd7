"""Training M on a latent dataset, with the autoencoder trainer's guarantees.

A run directory holds::

    config.json                resolved training + model configuration, latent dataset, versions
    checkpoints/last/          config.json, model.safetensors, trainer_state.{pt,json}
    checkpoints/best/          config.json, model.safetensors (lowest validation NLL)
    metrics.csv                one row per epoch (train loss; val NLL, reward MSE, done accuracy)
    images/dream.png           real | one-step | dreamed frames decoded by V, each epoch
    tb/                        TensorBoard: rnn/loss, rnn/nll, rnn/reward_mse, rnn/done_bce, val/*

On the CPU the same seed gives the same weights whether or not the run was killed and resumed:
the chunk order is a function of (seed, epoch), the torch RNG state (which draws the latent
samples) is checkpointed, and a resume mid-epoch skips the batches already used.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from worldvae.atomic import write_json
from worldvae.checkpoints import (
    STATE_JSON,
    NonFiniteLossError,
    close_epoch,
    load_checkpoint,
    mark_finished,
    new_trainer_state,
    prepare_run_dir,
    save_checkpoint,
    stopped_mid_epoch,
    write_metrics_csv,
)
from worldvae.config_fields import check_ranges, option
from worldvae.data.latents import LatentDataset, SequenceStream
from worldvae.devices import resolve_device
from worldvae.images import save_png
from worldvae.memory.config import MemoryConfig
from worldvae.memory.diagnostics import dream_strip, evaluate_memory
from worldvae.memory.model import MDNRNN
from worldvae.rundir import RunDirLock
from worldvae.vae.io import CheckpointError, load_model, model_sha256, save_model
from worldvae.versions import library_versions

logger = logging.getLogger(__name__)

# What a train-rnn run directory holds; ``--overwrite`` removes these and nothing else.
RUN_ENTRIES = ("config.json", "checkpoints", "metrics.csv", "images", "tb")


@dataclass(frozen=True)
class MemoryTrainConfig:
    """How to train M. ``model`` holds everything but ``latent_dim``/``action_dim`` (the data
    decides those)."""

    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = option(20, "passes over the train split", 1, 100_000)
    batch_size: int = option(32, "sequence chunks per step", 1, 1_000_000)
    seq_len: int = option(32, "steps per training chunk", 1, 100_000)
    lr: float = option(1e-3, "learning rate (Adam)", 0.0, 10.0, low_open=True)
    grad_clip: float = option(1.0, "gradient norm clip (0: off)", 0.0, 1e9)
    val_fraction: float = option(0.1, "share of episodes held out for validation", 0.0, 0.9)
    seed: int = option(0, "seed of the weights, the chunk order and the samples", 0, 2**32 - 1)
    device: str = option("auto", "auto | cpu | cuda[:N]")
    sample_latents: bool = option(  # z ~ N(mu, sigma) per chunk, as World Models does
        True, "train on latents sampled from the posterior (else on its means)"
    )
    reward_weight: float = option(1.0, "weight of the reward loss", 0.0, 1e6)
    done_weight: float = option(1.0, "weight of the done loss", 0.0, 1e6)
    done_pos_weight: float = option(1.0, "weight of done=1 steps in the done loss", 0.0, 1e6)
    buffer_chunks: int = option(4096, "shuffle buffer, in chunks", 1, 10**9)
    patience: int = option(5, "early stopping, in epochs without improvement", 1, 100_000)
    checkpoint_every: int = option(  # 0: at the end of each epoch only
        0, "also checkpoint every N steps (0: each epoch only)", 0, 10**9
    )
    log_every: int = option(20, "TensorBoard scalars every N steps", 1, 10**9)
    max_steps: int | None = option(None, "stop after N steps (resumable)", 1, 10**12)
    skip_corrupt: bool = option(False, "skip unreadable latent episode files")

    def __post_init__(self) -> None:
        check_ranges(self)

    def resume_identity(self) -> dict[str, Any]:
        """Fields that must match to resume (epochs, patience, logging may change)."""
        d = dataclasses.asdict(self)
        for k in ("epochs", "patience", "log_every", "max_steps", "device"):
            d.pop(k)
        return d


@dataclass
class MemoryTrainResult:
    run_dir: Path
    best_val_nll: float
    epochs_done: int
    steps: int
    sequences_per_second: float
    stopped_early: bool


class MemoryTrainer:
    """Trains one M into one run directory. Use :func:`train_memory`."""

    def __init__(
        self,
        data: str | Path,
        run_dir: str | Path,
        config: MemoryTrainConfig,
        resume: bool = False,
        overwrite: bool = False,
    ):
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.last_dir = self.run_dir / "checkpoints" / "last"
        self.best_dir = self.run_dir / "checkpoints" / "best"
        self.dataset = LatentDataset(
            data, val_fraction=config.val_fraction, skip_corrupt=config.skip_corrupt
        )
        self.device = resolve_device(config.device)
        model_cfg = MemoryConfig.from_dict(
            {
                **config.model,
                "latent_dim": self.dataset.latent_dim,
                "action_dim": self.dataset.action_dim,
            }
        )
        m = self.dataset.manifest
        self.extra = {
            "vae_sha256": m.model_sha256,
            "vae_dir": m.model_dir,
            "env_id": m.env_id,
            "env_options": m.source_manifest.get("env_options", {}),
            "action": m.action,
            "latent_data": str(self.dataset.root),
        }
        run_cfg = {
            "train": dataclasses.asdict(config),
            "model": model_cfg.to_dict(),
            "data": {"root": str(self.dataset.root), **self.extra},
            "versions": library_versions(),
        }

        def same(old: dict[str, Any]) -> bool:
            old_train = MemoryTrainConfig(**old["train"]).resume_identity()
            return bool(
                old_train == config.resume_identity() and old["model"] == model_cfg.to_dict()
            )

        prepare_run_dir(self.run_dir, resume, overwrite, same, RUN_ENTRIES, "train-rnn run")
        torch.manual_seed(config.seed)
        self.model = MDNRNN(model_cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.state = new_trainer_state("best_val_nll")
        if resume and (self.last_dir / STATE_JSON).is_file():
            self.state = load_checkpoint(self.model, self.last_dir, self.optimizer, self.scheduler)
        self.stream = SequenceStream(
            self.dataset,
            self.dataset.split("train"),
            seq_len=config.seq_len,
            batch_size=config.batch_size,
            shuffle=True,
            seed=config.seed,
            buffer_chunks=config.buffer_chunks,
        )
        if not self.stream.episodes:
            raise ValueError(
                f"the train split of {self.dataset.root} is empty; encode more episodes or lower "
                "--val-fraction"
            )
        self.has_val = bool(self.dataset.split("val"))
        self.vae = self._load_vae()
        write_json(self.run_dir / "config.json", run_cfg)

    def _load_vae(self) -> Any:
        """V for the dream strips, if it is still where the latent dataset says and unchanged."""
        m = self.dataset.manifest
        try:
            if model_sha256(m.model_dir) != m.model_sha256:
                logger.warning("%s changed since encoding; no dream strips", m.model_dir)
                return None
            return load_model(m.model_dir, device=self.device)
        except (OSError, CheckpointError) as e:
            logger.warning("cannot load the VAE %s (%s); no dream strips", m.model_dir, e)
            return None

    def _batch(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        t = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        z = t["mu"]
        if self.cfg.sample_latents:
            z = z + torch.randn_like(z) * (0.5 * t["logvar"]).exp()
        t["z"] = z
        return t

    def _save_last(self) -> None:
        save_checkpoint(
            self.model, self.last_dir, self.optimizer, self.scheduler, self.state, self.extra
        )

    def _write_images(self, writer: Any, step: int) -> None:
        if self.vae is None:
            return
        episodes = self.dataset.split("val") or self.dataset.episodes
        strip = dream_strip(
            self.model,
            self.vae,
            self.dataset.load(episodes[0]),
            n_steps=12,
            temperature=self.model.config.temperature,
            seed=self.cfg.seed,
        )
        save_png(self.run_dir / "images" / "dream.png", strip)
        writer.add_image("rnn/dream", strip, step, dataformats="HWC")

    def fit(self, progress: bool = True) -> MemoryTrainResult:
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir / "tb"))
        self.model.train()
        sequences, seconds = 0, 0.0
        stopped_early = False
        try:
            while self.state["epoch"] < cfg.epochs:
                epoch = self.state["epoch"]
                self.stream.set_epoch(epoch)
                skip = self.state["batch_in_epoch"]
                bar = tqdm(
                    total=len(self.stream),
                    initial=skip,
                    desc=f"M epoch {epoch + 1}/{cfg.epochs}",
                    unit="batch",
                    disable=not progress,
                    dynamic_ncols=True,
                )
                sums, count = 0.0, 0
                t0 = time.perf_counter()
                for i, raw in enumerate(self.stream):
                    if i < skip:
                        continue
                    if cfg.max_steps is not None and self.state["step"] >= cfg.max_steps:
                        break
                    b = self._batch(raw)
                    loss, metrics = self.model.loss(
                        b["z"],
                        b["actions"],
                        b["rewards"],
                        b["dones"],
                        b["mask"],
                        cfg.reward_weight,
                        cfg.done_weight,
                        cfg.done_pos_weight,
                    )
                    if not torch.isfinite(loss):
                        raise NonFiniteLossError(
                            f"the loss became {loss.item()} at step {self.state['step']} (epoch "
                            f"{epoch + 1}); the last good checkpoint is kept in {self.last_dir}. "
                            "Lower --lr or --grad-clip, then resume with --resume"
                        )
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.state["step"] += 1
                    self.state["batch_in_epoch"] = i + 1
                    n = len(raw["mask"])
                    sequences += n
                    sums += float(metrics["loss"]) * n
                    count += n
                    bar.update(1)
                    if self.state["step"] % cfg.log_every == 0:
                        s = self.state["step"]
                        for k, v in metrics.items():
                            writer.add_scalar(f"rnn/{k}", float(v), s)
                        rate = sequences / max(seconds + time.perf_counter() - t0, 1e-9)
                        writer.add_scalar("charts/seq_per_sec", rate, s)
                        bar.set_postfix(nll=f"{float(metrics['nll']):.1f}", refresh=False)
                    if cfg.checkpoint_every and self.state["step"] % cfg.checkpoint_every == 0:
                        self._save_last()
                bar.close()
                seconds += time.perf_counter() - t0
                if stopped_mid_epoch(self.state, cfg.max_steps, len(self.stream)):
                    self._save_last()
                    break
                with torch.random.fork_rng(devices=[]):
                    val = evaluate_memory(
                        self.model, self.dataset, "val" if self.has_val else "all", cfg.seq_len
                    )
                self.model.train()
                improved = close_epoch(self.state, epoch, val["nll"], "best_val_nll")
                row = {
                    "epoch": epoch + 1,
                    "step": self.state["step"],
                    "train_loss": sums / max(count, 1),
                    **{f"val_{k}": v for k, v in val.items() if k != "steps"},
                    "seconds": round(seconds, 3),
                }
                self.state["history"].append(row)
                write_metrics_csv(self.run_dir / "metrics.csv", self.state["history"])
                for name, value in val.items():
                    writer.add_scalar(f"val/{name}", value, self.state["step"])
                with torch.random.fork_rng(devices=[]):
                    self._write_images(writer, self.state["step"])
                self.model.train()
                if improved:
                    finite = {k: (v if math.isfinite(v) else None) for k, v in val.items()}
                    save_model(
                        self.model,
                        self.best_dir,
                        extra={**self.extra, "epoch": epoch + 1, **finite},
                    )
                self._save_last()
                logger.info(
                    "M epoch %d: train %.3f, val %s",
                    epoch + 1,
                    row["train_loss"],
                    {k: round(v, 3) for k, v in val.items()},
                )
                if self.state["epochs_without_improvement"] >= cfg.patience:
                    logger.info("early stop: no validation improvement in %d epochs", cfg.patience)
                    stopped_early = True
                    break
        finally:
            writer.close()
        if not self.best_dir.exists():
            save_model(self.model, self.best_dir, extra={**self.extra, "step": self.state["step"]})
        if mark_finished(self.state, cfg.epochs, cfg.max_steps, stopped_early):
            self._save_last()
        return MemoryTrainResult(
            run_dir=self.run_dir,
            best_val_nll=self.state["best_val_nll"],
            epochs_done=self.state["epoch"],
            steps=self.state["step"],
            sequences_per_second=sequences / seconds if seconds > 0 else 0.0,
            stopped_early=stopped_early,
        )


def train_memory(
    data: str | Path,
    run_dir: str | Path,
    config: MemoryTrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> MemoryTrainResult:
    """Train M on the latent dataset at ``data`` into ``run_dir``.

    Raises:
        FileExistsError: ``run_dir`` exists and neither ``resume`` nor ``overwrite`` is set, or
            it holds files a train-rnn run does not write (``ForeignDirError``).
        RunDirBusyError: another process is writing ``run_dir``.
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
    """
    with RunDirLock(run_dir, "train-rnn"):
        return MemoryTrainer(
            data, run_dir, config or MemoryTrainConfig(), resume=resume, overwrite=overwrite
        ).fit(progress)
