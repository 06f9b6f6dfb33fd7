"""Training M on a latent dataset, with the autoencoder trainer's guarantees.

A run directory holds::

    config.json                resolved training + model configuration, latent dataset, versions
    checkpoints/last/          config.json, model.safetensors, trainer_state.{pt,json}
    checkpoints/best/          config.json, model.safetensors (lowest validation NLL)
    metrics.csv                one row per epoch (train loss; val NLL, reward MSE, done accuracy)
    images/dream.png           real | one-step | dreamed frames decoded by V, each epoch
    images/dream.gif           the real episode beside M's open-loop dream, each epoch
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

from worldvae.checkpoints import (
    NonFiniteLossError,
    RunCheckpoints,
    close_epoch,
    new_trainer_state,
    stopped_mid_epoch,
    write_metrics_csv,
)
from worldvae.config_fields import check_ranges, option
from worldvae.data.latents import LatentDataset, LatentManifest, SequenceStream
from worldvae.devices import resolve_device
from worldvae.footprint import check_fits, memory_model_bytes
from worldvae.images import save_png
from worldvae.memory.config import MemoryConfig
from worldvae.memory.diagnostics import dream_strip, dream_video, evaluate_memory
from worldvae.memory.model import MDNRNN
from worldvae.records import record_path
from worldvae.rundir import RunDirLock
from worldvae.vae.io import CheckpointError, load_model, model_sha256
from worldvae.versions import library_versions
from worldvae.video import write_video

logger = logging.getLogger(__name__)

# What a train-rnn run directory holds; ``--overwrite`` removes these and nothing else.
RUN_ENTRIES = ("config.json", "checkpoints", "metrics.csv", "images", "tb")
DREAM_GIF_STEPS = 64  # steps of images/dream.gif: 6.4 s at 10 frames a second


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
    max_seconds: float | None = option(  # the epoch it runs out in is validated and kept
        None, "training time budget of one invocation, in seconds; ends the run", 0.0, 1e9
    )
    skip_corrupt: bool = option(False, "skip unreadable latent episode files")

    def __post_init__(self) -> None:
        check_ranges(self)

    def resume_identity(self) -> dict[str, Any]:
        """Fields that must match to resume (epochs, patience, logging may change)."""
        d = dataclasses.asdict(self)
        for k in ("epochs", "patience", "log_every", "max_steps", "max_seconds", "device"):
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


@dataclass
class _EpochTotals:
    """What one pass over the training chunks did."""

    loss_sum: float = 0.0
    sequences: int = 0
    out_of_time: bool = False  # the time budget ended this epoch early


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
        self.dataset = LatentDataset(
            data, val_fraction=config.val_fraction, skip_corrupt=config.skip_corrupt
        )
        self.device = resolve_device(config.device)
        model_cfg = self._model_config()
        m = self.dataset.manifest
        self.vae_dir = m.model_path(self.dataset.root)  # V, where the latent dataset says
        self.extra = {  # paths absolute: read from any folder (worldvae.records)
            "vae_sha256": m.model_sha256,
            "vae_dir": record_path(self.vae_dir),
            **m.env_spec.to_dict(),
            "action": m.action,
            "latent_data": record_path(self.dataset.root),
        }
        self.checkpoints = RunCheckpoints(self.run_dir, self.extra)
        run_cfg = self._prepare_run_dir(model_cfg, resume, overwrite)
        torch.manual_seed(config.seed)
        self.model = MDNRNN(model_cfg).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 1.0)
        self.stream = self._train_stream()
        self.has_val = bool(self.dataset.split("val"))
        self.vae = self._load_vae()  # building V draws from the torch RNG: before the restore
        self.sequences = 0  # chunks trained on in this invocation
        self.seconds = 0.0  # training time of this invocation
        self.state = self.checkpoints.restore(
            self.model, self.optimizer, self.scheduler, new_trainer_state("best_val_nll"), resume
        )
        self.checkpoints.write_run_config(run_cfg)

    @property
    def last_dir(self) -> Path:
        """``checkpoints/last``: what a resume continues from."""
        return self.checkpoints.last_dir

    @property
    def best_dir(self) -> Path:
        """``checkpoints/best``: the model with the lowest validation NLL."""
        return self.checkpoints.best_dir

    def _model_config(self) -> MemoryConfig:
        """M as configured, its input sizes (``latent_dim``, ``action_dim``) from the data."""
        return MemoryConfig.from_dict(
            {
                **self.cfg.model,
                "latent_dim": self.dataset.latent_dim,
                "action_dim": self.dataset.action_dim,
            }
        )

    def _prepare_run_dir(
        self, model_cfg: MemoryConfig, resume: bool, overwrite: bool
    ) -> dict[str, Any]:
        """Check that ``run_dir`` may be written; return the config to write once all is built.

        Nothing is written here: a run refused later in ``__init__`` leaves no file behind.
        """
        run_cfg = {
            "train": dataclasses.asdict(self.cfg),
            "model": model_cfg.to_dict(),
            "data": {"root": record_path(self.dataset.root), **self.extra},
            "versions": library_versions(),
        }

        def same(old: dict[str, Any]) -> bool:
            old_train = MemoryTrainConfig(**old["train"]).resume_identity()
            return bool(
                old_train == self.cfg.resume_identity() and old["model"] == model_cfg.to_dict()
            )

        self.checkpoints.prepare(resume, overwrite, same, RUN_ENTRIES, "train-rnn run")
        return run_cfg

    def _train_stream(self) -> SequenceStream:
        """The train split's chunks, shuffled in an order set by (seed, epoch).

        Raises:
            ValueError: the train split is empty.
        """
        cfg = self.cfg
        stream = SequenceStream(
            self.dataset,
            self.dataset.split("train"),
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            buffer_chunks=cfg.buffer_chunks,
        )
        if not stream.episodes:
            raise ValueError(
                f"the train split of {self.dataset.root} is empty; encode more episodes or lower "
                "--val-fraction"
            )
        return stream

    def _load_vae(self) -> Any:
        """V for the dream strips, if it is still where the latent dataset says and unchanged."""
        try:
            if model_sha256(self.vae_dir) != self.dataset.manifest.model_sha256:
                logger.warning("%s changed since encoding; no dream strips", self.vae_dir)
                return None
            return load_model(self.vae_dir, device=self.device)
        except (OSError, CheckpointError) as e:
            logger.warning("cannot load the VAE %s (%s); no dream strips", self.vae_dir, e)
            return None

    def _batch(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Tensors on the device, with ``z`` ``(B, L+1, D)``: a sample of ``N(mu, sigma)`` when
        ``sample_latents`` (drawn from the torch RNG), else ``mu``."""
        t = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        z = t["mu"]
        if self.cfg.sample_latents:
            z = z + torch.randn_like(z) * (0.5 * t["logvar"]).exp()
        t["z"] = z
        return t

    def _save_last(self) -> None:
        self.checkpoints.save_last(self.model, self.optimizer, self.scheduler, self.state)

    def _save_best(self, **info: Any) -> None:
        self.checkpoints.save_best(self.model, info)

    # ---- steps -------------------------------------------------------------------------------
    def _train_step(self, raw: dict[str, np.ndarray], epoch: int) -> dict[str, torch.Tensor]:
        """One optimiser step on a batch of chunks: ``mu``, ``logvar`` ``(B, L+1, D)``,
        ``actions`` ``(B, L, A)``, ``rewards``, ``dones``, ``mask`` ``(B, L)``.

        Returns the loss terms (scalar tensors: ``loss``, ``nll``, ...).

        Raises:
            NonFiniteLossError: the loss was NaN/inf (no update is made).
        """
        cfg = self.cfg
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
        return dict(metrics)

    def _log_step(self, writer: Any, metrics: dict[str, torch.Tensor], rate: float) -> None:
        s = self.state["step"]
        for k, v in metrics.items():
            writer.add_scalar(f"rnn/{k}", float(v), s)
        writer.add_scalar("charts/seq_per_sec", rate, s)

    def _train_epoch(self, epoch: int, writer: Any, progress: bool) -> _EpochTotals:
        """Train on the rest of epoch ``epoch`` (a resume skips the batches already used);
        stops early at ``max_steps``."""
        cfg = self.cfg
        self.stream.set_epoch(epoch)
        skip = self.state["batch_in_epoch"]
        totals = _EpochTotals()
        bar = tqdm(
            total=len(self.stream),
            initial=skip,
            desc=f"M epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            disable=not progress,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        try:
            for i, raw in enumerate(self.stream):
                if i < skip:
                    continue
                if cfg.max_steps is not None and self.state["step"] >= cfg.max_steps:
                    break
                if cfg.max_seconds and self.seconds + time.perf_counter() - t0 >= cfg.max_seconds:
                    totals.out_of_time = True  # this epoch ends here: validated, checkpointed
                    break
                metrics = self._train_step(raw, epoch)
                self.state["batch_in_epoch"] = i + 1
                n = len(raw["mask"])
                self.sequences += n
                totals.loss_sum += float(metrics["loss"]) * n
                totals.sequences += n
                bar.update(1)
                if self.state["step"] % cfg.log_every == 0:
                    rate = self.sequences / max(self.seconds + time.perf_counter() - t0, 1e-9)
                    self._log_step(writer, metrics, rate)
                    bar.set_postfix(nll=f"{float(metrics['nll']):.1f}", refresh=False)
                if cfg.checkpoint_every and self.state["step"] % cfg.checkpoint_every == 0:
                    self._save_last()
        finally:
            bar.close()
            self.seconds += time.perf_counter() - t0
        return totals

    def _validate(self) -> dict[str, float]:
        """Validation means (NLL, reward and done errors) on the val split, or on every episode
        when there is none; the torch RNG is left as it was."""
        with torch.random.fork_rng(devices=[]):
            val = evaluate_memory(
                self.model, self.dataset, "val" if self.has_val else "all", self.cfg.seq_len
            )
        self.model.train()
        return dict(val)

    def _write_images(self, writer: Any, step: int) -> None:
        """``images/dream.png``: real | one-step | dreamed frames decoded by V, and
        ``images/dream.gif``: the real episode beside M's open-loop dream (when V is here, the
        GIF when Pillow or imageio is); the torch RNG is left as it was."""
        if self.vae is None:
            return
        episodes = self.dataset.split("val") or self.dataset.episodes
        episode = self.dataset.load(episodes[0])
        temperature, seed = self.model.config.temperature, self.cfg.seed
        with torch.random.fork_rng(devices=[]):
            strip = dream_strip(self.model, self.vae, episode, 12, temperature, seed)
            frames = dream_video(self.model, self.vae, episode, DREAM_GIF_STEPS, temperature, seed)
        self.model.train()
        save_png(self.run_dir / "images" / "dream.png", strip)
        writer.add_image("rnn/dream", strip, step, dataformats="HWC")
        try:
            write_video(self.run_dir / "images" / "dream.gif", list(frames), fps=10)
        except ImportError as e:  # the PNG above stands
            logger.warning("no images/dream.gif: %s", e)

    def _log_epoch(self, row: dict[str, Any]) -> None:
        self.state["history"].append(row)
        write_metrics_csv(self.run_dir / "metrics.csv", self.state["history"])

    def _end_epoch(self, epoch: int, totals: _EpochTotals, writer: Any) -> bool:
        """Validate, log, draw, checkpoint; True when training should stop (early stop)."""
        val = self._validate()
        improved = close_epoch(self.state, epoch, val["nll"], "best_val_nll")
        row = {
            "epoch": epoch + 1,
            "step": self.state["step"],
            "train_loss": totals.loss_sum / max(totals.sequences, 1),
            **{f"val_{k}": v for k, v in val.items() if k != "steps"},
            "seconds": round(self.seconds, 3),
        }
        self._log_epoch(row)
        for name, value in val.items():
            writer.add_scalar(f"val/{name}", value, self.state["step"])
        self._write_images(writer, self.state["step"])
        if improved:
            finite = {k: (v if math.isfinite(v) else None) for k, v in val.items()}
            self._save_best(epoch=epoch + 1, **finite)
        self._save_last()
        logger.info(
            "M epoch %d: train %.3f, val %s",
            epoch + 1,
            row["train_loss"],
            {k: round(v, 3) for k, v in val.items()},
        )
        if totals.out_of_time:
            logger.info("time budget of %.0f s reached: M's training ends", self.cfg.max_seconds)
            return True
        if self.state["epochs_without_improvement"] >= self.cfg.patience:
            logger.info("early stop: no validation improvement in %d epochs", self.cfg.patience)
            return True
        return False

    def fit(self, progress: bool = True) -> MemoryTrainResult:
        """Train until ``epochs``, early stop, ``max_steps`` or ``max_seconds``."""
        from torch.utils.tensorboard import SummaryWriter

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir / "tb"))
        self.model.train()
        stopped_early = False
        try:
            while self.state["epoch"] < cfg.epochs:
                epoch = self.state["epoch"]
                totals = self._train_epoch(epoch, writer, progress)
                if stopped_mid_epoch(self.state, cfg.max_steps, len(self.stream)):
                    self._save_last()
                    break
                if self._end_epoch(epoch, totals, writer):
                    stopped_early = True
                    break
        finally:
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
        return MemoryTrainResult(
            run_dir=self.run_dir,
            best_val_nll=self.state["best_val_nll"],
            epochs_done=self.state["epoch"],
            steps=self.state["step"],
            sequences_per_second=self.sequences / self.seconds if self.seconds > 0 else 0.0,
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
        InsufficientMemoryError: M would need more memory than the device has (nothing is
            written).
    """
    config = config or MemoryTrainConfig()
    check_memory_model_fits(data, config)
    with RunDirLock(run_dir, "train-rnn"):
        return MemoryTrainer(data, run_dir, config, resume=resume, overwrite=overwrite).fit(
            progress
        )


def check_memory_model_fits(data: str | Path, config: MemoryTrainConfig) -> None:
    """Refuse to train M when it would need more memory than its device has (its input sizes
    read from the latent dataset ``data``). A dataset or model the trainer would refuse is left
    to it (its messages, in its order).

    Raises:
        InsufficientMemoryError: naming what it would need and what is available.
    """
    try:
        m = LatentManifest.load(data)
        model = MemoryConfig.from_dict(
            {**config.model, "latent_dim": m.latent_dim, "action_dim": m.action_spec.dim}
        )
        need = memory_model_bytes(model, config.batch_size, config.seq_len)
        device = resolve_device(config.device)
    except (OSError, ValueError):
        return
    check_fits(
        need,
        device,
        f"M with --hidden-size {model.hidden_size} (--batch-size {config.batch_size}, "
        f"--seq-len {config.seq_len})",
        "lower --hidden-size (the weights grow with its square), --batch-size or --seq-len",
    )
