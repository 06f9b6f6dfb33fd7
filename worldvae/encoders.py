"""Anything that turns frames into codes for an agent: a trained autoencoder or a PCA.

Both have ``encode(frames, sample=False)``, ``decode``, ``reconstruct``, ``latent_dim`` and
``config.frame_shape``; :func:`load_encoder` reads either kind of directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from worldvae.pca import PCAEncoder, is_pca_dir
from worldvae.vae import Autoencoder, load_model

Encoder = Autoencoder | PCAEncoder


def load_encoder(path: str | os.PathLike[str], device: str | torch.device = "auto") -> Encoder:
    """Load a model directory (or VAE run directory) or a PCA encoder directory."""
    if is_pca_dir(Path(path)):
        return PCAEncoder.load(Path(path))
    return load_model(path, device=device)
