"""Configuration of the memory model M: stored as ``config.json`` beside its weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from worldvae.configs import reject_unknown_keys


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

    latent_dim: int = 32
    action_dim: int = 3
    hidden_size: int = 256
    n_gaussians: int = 5
    temperature: float = 1.0
    predict_reward: bool = True
    predict_done: bool = True

    def __post_init__(self) -> None:
        for name in ("latent_dim", "action_dim", "hidden_size", "n_gaussians"):
            if getattr(self, name) < 1:
                raise ValueError(f"MemoryConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"MemoryConfig.temperature must be > 0, got {self.temperature}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryConfig:
        """Build from a dict; unknown keys are an error."""
        reject_unknown_keys(cls, d, "memory model config")
        return cls(**d)
