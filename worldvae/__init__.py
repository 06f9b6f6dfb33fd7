"""worldvae core: episode datasets, the autoencoder family, training and diagnostics.

``worldvae.load_model`` is imported lazily so that light users (collector workers) do not
pay for importing torch.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_model"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from worldvae.vae.io import load_model

        return load_model
    raise AttributeError(f"module 'worldvae' has no attribute {name!r}")
