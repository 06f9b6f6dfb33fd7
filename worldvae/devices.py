"""Device selection shared by the trainer, the encoder and the latent wrappers."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when present, else CPU; pass anything else through.

    Raises:
        ValueError: if CUDA is asked for explicitly and is not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA but torch sees no CUDA device; "
            "use device='auto' or device='cpu'"
        )
    return resolved
