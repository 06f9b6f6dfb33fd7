"""Library versions recorded in manifests and run configurations."""

from __future__ import annotations

import platform
from importlib import metadata

TRACKED_DISTRIBUTIONS = (
    "worldvae",
    "numpy",
    "torch",
    "gymnasium",
    "ale-py",
    "box2d",
    "minigrid",
    "envpool",
    "stable-baselines3",
    "opencv-python",
)


def library_versions() -> dict[str, str]:
    """Versions of the installed libraries that shape data and results (absent ones omitted)."""
    out = {"python": platform.python_version()}
    for name in TRACKED_DISTRIBUTIONS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine_description() -> str:
    """CPU model, core count and GPU (if torch sees one), for reports: one line."""
    import os

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    parts = [f"{model}, {os.cpu_count()} CPU cores"]
    try:
        import torch

        parts.append(
            f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
        )
    except ImportError:
        pass
    return ", ".join(parts)
