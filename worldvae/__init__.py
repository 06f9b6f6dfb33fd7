"""worldvae core: episode datasets, the autoencoder family, training and diagnostics."""

__version__ = "0.1.0"
