"""Configuration of the memory model M: stored as ``config.json`` beside its weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from worldvae.config_fields import check_ranges, option, reject_unknown_keys


@dataclass(frozen=True)
class MemoryConfig:
    """An MDN-RNN as in World Models (Ha and Schmidhuber 2018, section 2.2).

    Attributes:
        latent_dim: ``D``, the VAE's latent size.
        action_dim: ``A``, the width of an encoded action (one-hot size or box dimension).
        hidden_size: LSTM units (256 in World Models).
        n_gaussians: mixture components per latent dimension (5 in World Models).
        temperature: default ``tau`` when sampling a dream (1.0; World Models' Doom used 1.15).
        predict_reward: add a reward head (squared error).
        predict_done: add a done head (logistic).
    """

    latent_dim: int = option(32, "latent size D (set from the latent dataset)", 1, 65_536)
    action_dim: int = option(3, "encoded action width A (set from the latent dataset)", 1, 65_536)
    hidden_size: int = option(256, "LSTM units", 1, 65_536)
    n_gaussians: int = option(5, "mixture components per latent dimension", 1, 1024)
    temperature: float = option(1.0, "default dream temperature tau", 0.0, 100.0, low_open=True)
    predict_reward: bool = option(True, "add a reward head")
    predict_done: bool = option(True, "add a done head")

    def __post_init__(self) -> None:
        check_ranges(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryConfig:
        """Build from a dict; unknown keys are an error."""
        reject_unknown_keys(cls, d, "memory model config")
        return cls(**d)
