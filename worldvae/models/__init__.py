"""The autoencoder family behind one interface."""

from worldvae.models.autoencoder import Autoencoder
from worldvae.models.config import KINDS, AutoencoderConfig
from worldvae.models.io import CheckpointError, load_model, read_model_config, save_model

__all__ = [
    "KINDS",
    "Autoencoder",
    "AutoencoderConfig",
    "CheckpointError",
    "load_model",
    "read_model_config",
    "save_model",
]
