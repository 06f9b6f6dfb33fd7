"""One module for the whole autoencoder family, selected by ``AutoencoderConfig.kind``."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

import worldvae.vae.losses as losses
from worldvae.vae.config import AutoencoderConfig
from worldvae.vae.networks import ConvDecoder, ConvEncoder

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)


class Autoencoder(nn.Module):
    """Convolutional autoencoder over uint8 frames ``(B, H, W, C)``.

    ``encode`` and ``decode`` are the inference interface (no gradients, any device, NumPy
    in -> NumPy out, tensor in -> tensor out); ``training_loss`` is what the trainer optimises.

    Example:
        >>> model = Autoencoder(AutoencoderConfig(kind="vae", frame_shape=(64, 64, 3)))
        >>> z = model.encode(np.zeros((5, 64, 64, 3), np.uint8))
        >>> z.shape, z.dtype
        ((5, 32), dtype('float32'))
    """

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        h, w, c = config.frame_shape
        self.encoder = ConvEncoder(c, h, w, config.channels)
        out = 2 * config.latent_dim if config.variational else config.latent_dim
        self.head = nn.Linear(self.encoder.out_features, out)
        self.decoder = ConvDecoder(config.latent_dim, c, h, w, config.channels)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    # ---- input handling -------------------------------------------------------------------
    def check_frames(self, frames: np.ndarray | Tensor) -> None:
        """Raise a clear error unless ``frames`` are uint8 ``(B, H, W, C)`` of the model's shape."""
        shape = tuple(frames.shape)
        dtype_ok = frames.dtype in (np.uint8, torch.uint8)
        if shape[-3:] != tuple(self.config.frame_shape) or len(shape) not in (3, 4) or not dtype_ok:
            h, w, c = self.config.frame_shape
            raise ValueError(
                f"model expects uint8 frames (B, {h}, {w}, {c}) or ({h}, {w}, {c}), got "
                f"{frames.dtype} {shape}; make the env with make_env(..., frame_size=({h}, {w})"
                f"{', grayscale=True' if c == 1 else ''}) or train a model on frames of this shape"
            )

    def to_input(self, frames: Tensor) -> Tensor:
        """uint8 ``(B, H, W, C)`` -> float ``(B, C, H, W)`` in [0, 1] on the model's device.

        The uint8 tensor is moved first (4x fewer bytes than float32), then converted. The
        permuted view is already channels_last in memory, which convolutions prefer.
        """
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return x.float().div_(255.0)

    # ---- the networks ---------------------------------------------------------------------
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Frames ``(B, C, H, W)`` -> (mean or code ``(B, D)``, log-variance ``(B, D)`` or None)."""
        out = self.head(self.encoder(x))
        if self.config.variational:
            mu, logvar = out.chunk(2, dim=1)
            return mu, logvar
        if self.config.kind == "topk":
            out = losses.keep_topk(out, self.config.topk)
        return out, None

    def code(self, x: Tensor, sample: bool = False) -> Tensor:
        """Frames ``(B, C, H, W)`` -> latent ``(B, D)``: posterior mean, or a sample."""
        mu, logvar = self.posterior(x)
        if sample and logvar is not None:
            return mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return mu

    def decode_logits(self, z: Tensor) -> Tensor:
        """Latent ``(B, D)`` -> logits ``(B, C, H, W)``."""
        return self.decoder(z)

    # ---- training -------------------------------------------------------------------------
    def corrupt(self, x: Tensor) -> Tensor:
        """The input corruption of ``dae`` and ``inpaint`` (identity for other kinds)."""
        cfg = self.config
        if cfg.kind == "dae":
            if cfg.noise == "gaussian":
                return (x + cfg.noise_std * torch.randn_like(x)).clamp_(0.0, 1.0)
            keep = torch.rand(x.shape[0], 1, *x.shape[2:], device=x.device) >= cfg.mask_prob
            return x * keep
        if cfg.kind == "inpaint":
            b, _, h, w = x.shape
            sh, sw = max(1, int(h * cfg.inpaint_fraction)), max(1, int(w * cfg.inpaint_fraction))
            top = torch.randint(0, h - sh + 1, (b, 1, 1, 1), device=x.device)
            left = torch.randint(0, w - sw + 1, (b, 1, 1, 1), device=x.device)
            rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
            cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
            hole = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
            return x.masked_fill(hole, 0.0)
        return x

    def training_loss(self, frames: Tensor, step: int = 0) -> tuple[Tensor, dict[str, Tensor]]:
        """Loss on a uint8 batch ``(B, H, W, C)``: scalar loss and detached metrics.

        ``loss = reconstruction + regulariser``; metrics hold ``recon`` and ``loss`` (scalars),
        and for VAEs ``kl`` (scalar) and ``kl_per_dim`` ``(D,)``.
        """
        cfg = self.config
        target = self.to_input(frames)
        x = self.corrupt(target)
        if cfg.kind == "contractive":
            x = x.detach().requires_grad_(True)
        mu, logvar = self.posterior(x)
        z = mu
        if logvar is not None:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decode_logits(z)
        recon = losses.reconstruction_loss(logits.float(), target, cfg.likelihood).mean()
        metrics: dict[str, Tensor] = {"recon": recon.detach()}
        reg = torch.zeros((), device=recon.device)
        if logvar is not None:
            kl_dims = losses.gaussian_kl_per_dim(mu.float(), logvar.float())
            kl = kl_dims.sum(dim=1).mean()
            if cfg.kind == "vae":
                reg = kl
            elif cfg.capacity_max > 0:
                c = losses.capacity(step, cfg.capacity_max, cfg.capacity_steps)
                reg = cfg.capacity_gamma * (kl - c).abs()
            elif cfg.free_bits > 0:
                reg = cfg.beta * losses.free_bits_kl(kl_dims, cfg.free_bits)
            else:
                reg = cfg.beta * kl
            metrics["kl"] = kl.detach()
            metrics["kl_per_dim"] = kl_dims.mean(dim=0).detach()
        elif cfg.kind == "sparse":
            reg = cfg.l1_weight * losses.l1_sparsity(mu.float()).mean()
        elif cfg.kind == "contractive":
            reg = cfg.contractive_weight * losses.jacobian_frobenius_sq(mu, x).mean()
        loss = recon + reg
        metrics["reg"] = reg.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics

    # ---- inference ------------------------------------------------------------------------
    def _batch(self, frames: np.ndarray | Tensor) -> tuple[Tensor, bool, bool]:
        self.check_frames(frames)
        is_numpy = isinstance(frames, np.ndarray)
        t = (
            torch.from_numpy(np.ascontiguousarray(frames))
            if isinstance(frames, np.ndarray)
            else frames
        )
        single = t.ndim == 3
        return (t[None] if single else t), is_numpy, single

    @torch.inference_mode()
    def encode(self, frames: ArrayOrTensor, sample: bool = False) -> ArrayOrTensor:
        """uint8 frames ``(B, H, W, C)`` or ``(H, W, C)`` -> float32 latents ``(B, D)`` or ``(D,)``.

        Posterior mean by default; ``sample=True`` draws from the posterior (VAEs only).
        NumPy in gives NumPy out; a tensor in gives a tensor on the model's device.
        """
        t, is_numpy, single = self._batch(frames)
        z = self.code(self.to_input(t), sample=sample).float()
        z = z[0] if single else z
        return z.cpu().numpy() if is_numpy else z  # type: ignore[return-value]

    @torch.inference_mode()
    def decode(self, z: ArrayOrTensor) -> ArrayOrTensor:
        """Latents ``(B, D)`` or ``(D,)`` -> uint8 frames ``(B, H, W, C)`` or ``(H, W, C)``."""
        is_numpy = isinstance(z, np.ndarray)
        t = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        single = t.ndim == 1
        if t.shape[-1] != self.latent_dim:
            raise ValueError(f"decode expects latents (B, {self.latent_dim}), got {tuple(t.shape)}")
        x = torch.sigmoid(self.decode_logits(t[None] if single else t).float())
        frames = x.mul_(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        frames = frames[0] if single else frames
        return frames.cpu().numpy() if is_numpy else frames  # type: ignore[return-value]

    @torch.inference_mode()
    def reconstruct(self, frames: ArrayOrTensor) -> ArrayOrTensor:
        """Frames through the posterior mean and back: same shape and type as ``frames``."""
        return self.decode(self.encode(frames))

    @torch.inference_mode()
    def anomaly_score(self, frames: ArrayOrTensor) -> ArrayOrTensor:
        """Per-frame anomaly score ``(B,)``, higher is more unusual.

        VAEs: negative ELBO (reconstruction of the posterior mean plus KL); other kinds:
        reconstruction error, both in nats (summed over pixels) under the model's likelihood.
        """
        t, is_numpy, _ = self._batch(frames)
        x = self.to_input(t)
        mu, logvar = self.posterior(x)
        score = losses.reconstruction_loss(
            self.decode_logits(mu).float(), x, self.config.likelihood
        )
        if logvar is not None:
            score = score + losses.gaussian_kl(mu.float(), logvar.float())
        return score.cpu().numpy() if is_numpy else score  # type: ignore[return-value]
