"""The autoencoder family behind one interface."""

from worldvae.vae.autoencoder import Autoencoder
from worldvae.vae.config import KINDS, AutoencoderConfig
from worldvae.vae.io import CheckpointError, load_model, read_model_config, save_model

__all__ = [
    "KINDS",
    "Autoencoder",
    "AutoencoderConfig",
    "CheckpointError",
    "load_model",
    "read_model_config",
    "save_model",
]
