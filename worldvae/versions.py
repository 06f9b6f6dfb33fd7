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
