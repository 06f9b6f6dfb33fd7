"""Configuration of an autoencoder: stored as ``config.json`` beside its weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from worldvae.config_fields import check_ranges, option, reject_unknown_keys

KINDS = ("ae", "dae", "inpaint", "sparse", "topk", "contractive", "vae", "beta-vae")
VARIATIONAL_KINDS = ("vae", "beta-vae")


@dataclass(frozen=True)
class AutoencoderConfig:
    """Architecture and objective of one member of the autoencoder family.

    Attributes:
        kind: ``ae`` plain; ``dae`` denoising (``noise``: ``gaussian`` or ``masking``);
            ``inpaint`` (random rectangles blanked, loss on the full frame); ``sparse`` (L1 on
            the code); ``topk`` (k-sparse code); ``contractive`` (encoder Jacobian penalty);
            ``vae``; ``beta-vae`` (``beta``, ``free_bits``, controlled capacity).
        frame_shape: ``(H, W, C)`` of the uint8 frames it encodes; layer shapes derive from it.
        latent_dim: size ``D`` of the code.
        channels: conv channels of the encoder (the decoder mirrors them).
        likelihood: ``mse`` (Gaussian, summed squared error) or ``bernoulli`` (summed BCE).
        beta: weight of the KL term (``vae`` forces 1).
        free_bits: KL floor per latent dimension in nats (batch-averaged), 0 disables.
        capacity_max, capacity_steps, capacity_gamma: controlled capacity (Burgess et al.
            2018): loss = recon + gamma * |KL - C|, C rising linearly to ``capacity_max`` nats
            over ``capacity_steps`` steps. ``capacity_max = 0`` disables.
        noise, noise_std, mask_prob: the ``dae`` corruption.
        inpaint_fraction: side of each blanked square relative to the frame side.
        l1_weight: ``sparse`` penalty weight on ``|z|``.
        topk: number of code units kept by ``topk``.
        contractive_weight: weight of ``||J||_F^2`` for ``contractive``.
    """

    kind: str = option("beta-vae", "family member", choices=KINDS)
    frame_shape: tuple[int, int, int] = (64, 64, 3)  # decided by the data, not an option
    latent_dim: int = option(32, "size D of the code", 1, 4096)
    channels: tuple[int, ...] = option((32, 64, 128, 256), "encoder conv channels", 1, 4096)
    likelihood: str = option("mse", "reconstruction likelihood", choices=("mse", "bernoulli"))
    beta: float = option(1.0, "weight of the KL term (beta-vae)", 0.0, 1e6)
    free_bits: float = option(0.0, "KL floor per latent dimension (nats)", 0.0, 1e3)
    capacity_max: float = option(0.0, "controlled capacity C in nats (0: off)", 0.0, 1e6)
    capacity_steps: int = option(100_000, "steps over which C rises to its max", 1, 10**9)
    capacity_gamma: float = option(100.0, "weight of |KL - C|", 0.0, 1e6)
    noise: str = option("gaussian", "dae corruption", choices=("gaussian", "masking"))
    noise_std: float = option(0.1, "dae gaussian noise std (frames in [0, 1])", 0.0, 10.0)
    mask_prob: float = option(0.25, "dae masking: probability a pixel is dropped", 0.0, 1.0)
    inpaint_fraction: float = option(
        0.3, "inpaint: side of the blanked square / frame side", 0.0, 1.0, low_open=True
    )
    l1_weight: float = option(1e-2, "sparse: L1 weight on the code", 0.0, 1e6)
    topk: int = option(8, "topk: code units kept", 1, 4096)
    contractive_weight: float = option(1e-2, "contractive: weight of ||J||_F^2", 0.0, 1e6)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.kind not in KINDS:
            raise ValueError(f"unknown autoencoder kind {self.kind!r}; choose one of {KINDS}")
        if self.likelihood not in ("mse", "bernoulli"):
            raise ValueError(f"likelihood must be 'mse' or 'bernoulli', got {self.likelihood!r}")
        if self.noise not in ("gaussian", "masking"):
            raise ValueError(f"noise must be 'gaussian' or 'masking', got {self.noise!r}")
        if len(self.frame_shape) != 3 or self.frame_shape[2] not in (1, 3):
            raise ValueError(f"frame_shape must be (H, W, C) with C 1 or 3, got {self.frame_shape}")
        if self.kind == "topk" and not 0 < self.topk <= self.latent_dim:
            raise ValueError(f"topk must be in 1..latent_dim={self.latent_dim}, got {self.topk}")
        if self.latent_dim < 1 or not self.channels:
            raise ValueError("latent_dim and channels must be positive")

    @property
    def variational(self) -> bool:
        return self.kind in VARIATIONAL_KINDS

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["frame_shape"] = list(self.frame_shape)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AutoencoderConfig:
        """Build from a dict; unknown keys are an error (a typo must not pass silently)."""
        d = dict(d)
        if d.get("extra") == {}:  # an empty field that earlier configs carried
            del d["extra"]
        reject_unknown_keys(cls, d, "autoencoder config")
        if "frame_shape" in d:
            d["frame_shape"] = tuple(d["frame_shape"])
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        return cls(**d)
