"""Finding an environment id across the supported families, with suggestions on a typo."""

from __future__ import annotations

import difflib
import importlib
from typing import Literal

import gymnasium as gym

Family = Literal["atari", "minigrid", "box2d", "classic"]

ENV_ID_HELP = "gymnasium id, e.g. CarRacing-v3, ALE/Pong-v5"  # what --env takes

# Optional families: (module to import, how it registers, install hint).
_OPTIONAL_FAMILIES: dict[str, tuple[str, str]] = {
    "ale_py": ("ALE/", "pip install 'worldvae[atari]'"),
    "minigrid": ("MiniGrid-", "pip install 'worldvae[minigrid]'"),
}


def register_optional_families() -> list[str]:
    """Import the optional env packages that are installed so their ids are registered.

    Returns the names of the packages that were available.
    """
    found = []
    for module in _OPTIONAL_FAMILIES:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if module == "ale_py":
            gym.register_envs(mod)
        found.append(module)
    return found


def family_of(env_id: str) -> Family:
    """Which preprocessing family an id belongs to."""
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
        return "atari"
    if env_id.startswith("MiniGrid-") or env_id.startswith("BabyAI-"):
        return "minigrid"
    if env_id.startswith(("CarRacing", "LunarLander", "BipedalWalker")):
        return "box2d"
    return "classic"


def check_env_id(env_id: str) -> None:
    """Raise a clear error for an id that is not registered, naming the closest ones.

    Raises:
        ValueError: unknown id (with suggestions, and an install hint for an optional family).
    """
    register_optional_families()
    if env_id in gym.registry:
        return
    for module, (prefix, hint) in _OPTIONAL_FAMILIES.items():
        if env_id.startswith(prefix) and importlib.util.find_spec(module) is None:
            raise ValueError(f"environment {env_id!r} needs the {module} package: {hint}")
    close = difflib.get_close_matches(env_id, list(gym.registry), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown environment id {env_id!r}{hint}")
