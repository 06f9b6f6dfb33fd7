"""An SB3 features extractor initialised from a pretrained worldvae encoder."""

from __future__ import annotations

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from worldvae.vae import load_model


class PretrainedEncoderExtractor(BaseFeaturesExtractor):
    """Features = the autoencoder's code ``(B, D)`` of SB3's image observations.

    SB3 hands image observations over as float ``(B, C, H, W)`` in [0, 1] (transposed and
    normalised), which is what :meth:`Autoencoder.code` takes; calling the model's own code
    path gives the features :class:`~envs.latent.LatentObservation` gives (posterior mean,
    top-k sparsity and all). With ``freeze=True`` the encoder is fixed; otherwise it is
    fine-tuned with the policy. The decoder is dropped: features do not need it.

    Args:
        observation_space: ``(C, H, W)`` uint8 Box, channels first.
        model_dir: a worldvae model directory.
        freeze: keep the encoder's weights fixed.
    """

    def __init__(self, observation_space: gym.spaces.Box, model_dir: str, freeze: bool = True):
        model = load_model(model_dir, device="cpu")
        c, h, w = observation_space.shape
        if (h, w, c) != tuple(model.config.frame_shape):
            raise ValueError(
                f"PretrainedEncoderExtractor: the model expects frames {model.config.frame_shape}, "
                f"the policy sees {(h, w, c)}; use frame_stack 1 and the model's frame size"
            )
        super().__init__(observation_space, features_dim=model.latent_dim)
        model.decoder = None  # type: ignore[assignment]
        self.model = model
        self.freeze = freeze
        if freeze:
            self.model.requires_grad_(False)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(not self.freeze and torch.is_grad_enabled()):
            return self.model.code(observations)
